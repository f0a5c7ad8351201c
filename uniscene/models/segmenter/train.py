"""Training SegmenterNet on the synthetic dataset's true camera images and true per-pixel classes.

`load_labelled_images` reads, for each scene given, every `frame_stride`-th 12 Hz frame's six
camera images (frames.zarr `cam_image_path`) and the truth store's `cam_semantics` at the same
frames (matched by timestamp; 255 sky becomes SKY_INDEX), both resized to the network's size
(uniscene.data.images: images bilinear, classes nearest). `segmenter_trainer` runs the shared
loop (uniscene.training) on them: pixel-wise cross-entropy weighted by inverse square-root class
frequency (rare classes such as pedestrians count), with augmentations drawn from the trainer's
generator so that a resumed run draws the same: a random crop window per batch
(segmenter.crop_size: full-resolution detail at a fraction of the cost), horizontal flip,
brightness and contrast jitter, and a 3 x 3 blur on half the images (generated frames are
softer than true ones).
`segment` reads the classes of a stack of images.

Letters: N images, B batch, K classes, H W pixels.
"""

import functools

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from uniscene.data.images import read_images, resize_nearest
from uniscene.errors import UserError
from uniscene.models.segmenter.network import NUM_SEGMENTER_CLASSES, SKY_INDEX, SegmenterNet
from uniscene.paths import truth_store
from uniscene.store import config_hash, open_store
from uniscene.training import Trainer, TrainingConfig

TRUE_SKY = 255  # the truth store's sky class


class LabelledImages(Dataset):
    """N images [N, H, W, 3] uint8 and their classes [N, H, W] uint8 (0..17, SKY_INDEX sky).

    An item is {"image": [3, H, W] float32 in [0, 1], "label": [H, W] int64}.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3 or labels.shape != images.shape[:3]:
            raise ValueError(f"LabelledImages takes images [N, H, W, 3] and labels [N, H, W], got {images.shape} and {labels.shape}")
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        image = torch.from_numpy(self.images[index]).permute(2, 0, 1).float() / 255.0
        return {"image": image, "label": torch.from_numpy(self.labels[index].astype(np.int64))}

    def class_frequency(self) -> np.ndarray:
        """Share of the pixels of each class, [K] float64."""
        counts = np.bincount(self.labels.reshape(-1), minlength=NUM_SEGMENTER_CLASSES).astype(np.float64)
        return counts / max(counts.sum(), 1.0)


def true_classes(cam_semantics: np.ndarray) -> np.ndarray:
    """Truth store classes (0..16, 255 sky) [...] -> segmenter classes (0..16, SKY_INDEX sky) uint8."""
    out = np.asarray(cam_semantics).astype(np.uint8, copy=True)
    out[out == TRUE_SKY] = SKY_INDEX
    return out


def load_labelled_images(frames_paths, dataroot, *, frame_stride: int = 1, size_hw=None) -> LabelledImages:
    """The true images and classes of every `frame_stride`-th frame of the scenes of `frames_paths` (all cameras)."""
    images, labels = [], []
    for path in frames_paths:
        frames = open_store(path, stage="frames")
        scene = str(frames.attrs["scene"])
        truth = open_store(truth_store(dataroot, scene))
        if "cam_semantics" not in truth:
            raise UserError(f"truth store {truth_store(dataroot, scene)} has no cam_semantics (a dataset written without camera "
                            f"truth): rerun `uniscene synth`")
        truth_index = {int(ts): i for i, ts in enumerate(truth["timestamp_us"].values)}
        chosen = np.arange(0, frames.sizes["frame"], frame_stride)
        timestamps = frames["timestamp_us"].values[chosen]
        missing = [int(ts) for ts in timestamps if int(ts) not in truth_index]
        if missing:
            raise UserError(f"truth store {truth_store(dataroot, scene)} lacks frames of {path} at {missing[:3]} us: rerun `uniscene synth`")
        paths = frames["cam_image_path"].values[chosen].reshape(-1)  # [T * V]
        scene_images = read_images(dataroot, paths, size_hw)
        classes = truth["cam_semantics"].values[[truth_index[int(ts)] for ts in timestamps]]  # [T, V, Ht, Wt]
        classes = true_classes(classes.reshape(-1, *classes.shape[-2:]))
        if classes.shape[-2:] != scene_images.shape[1:3]:
            classes = resize_nearest(classes, scene_images.shape[1:3])
        images.append(scene_images)
        labels.append(classes)
    if len({i.shape[1:] for i in images}) > 1:
        raise UserError(f"the scenes' camera images differ in size ({sorted({i.shape[1:3] for i in images})}): set segmenter.image_size")
    return LabelledImages(np.concatenate(images), np.concatenate(labels))


def class_weights(frequency: np.ndarray) -> torch.Tensor:
    """Cross-entropy weight per class, [K]: 1 / sqrt(share), clipped to 30x the smallest, mean 1 over the pixels."""
    frequency = np.asarray(frequency, np.float64)
    weights = np.where(frequency > 0, 1.0 / np.sqrt(np.maximum(frequency, 1e-12)), 0.0)
    present = frequency > 0
    weights[present] = np.minimum(weights[present], 30 * weights[present].min())
    weights /= max((weights * frequency).sum(), 1e-12)
    return torch.tensor(weights, dtype=torch.float32)


def augment(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, crop_hw=None) -> tuple:
    """images [B, 3, H, W] in [0, 1], labels [B, H, W] -> augmented copies, cropped to `crop_hw` (one window per batch)
    where given (draws from `generator`, on the CPU)."""
    if crop_hw is not None:
        h, w = images.shape[-2:]
        ch, cw = min(int(crop_hw[0]), h), min(int(crop_hw[1]), w)
        top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
        images, labels = images[..., top:top + ch, left:left + cw], labels[..., top:top + ch, left:left + cw]
    b = images.shape[0]
    draws = torch.rand(b, 4, generator=generator).to(images.device)
    flip = draws[:, 0] < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    labels = torch.where(flip[:, None, None], labels.flip(-1), labels)
    contrast = 0.8 + 0.4 * draws[:, 1, None, None, None]
    brightness = 0.1 * (draws[:, 2, None, None, None] - 0.5)
    mean = images.mean((1, 2, 3), keepdim=True)
    images = ((images - mean) * contrast + mean + brightness).clamp(0, 1)
    blurred = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    images = torch.where((draws[:, 3] < 0.5)[:, None, None, None], blurred, images)
    return images, labels


def segmentation_loss(model, batch: dict, *, weights: torch.Tensor, generator: torch.Generator, crop_hw=None) -> tuple:
    """(weighted cross-entropy, {"pixel_accuracy": ...}) of one augmented batch."""
    images, labels = augment(batch["image"], batch["label"], generator, crop_hw)
    logits = model(images).logits  # [B, K, H, W]
    loss = F.cross_entropy(logits, labels, weight=weights.to(logits.device))
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return loss, {"pixel_accuracy": accuracy}


def segmenter_trainer(model: SegmenterNet, data: LabelledImages, *, steps: int, batch_size: int, learning_rate: float, seed: int,
                      device: str, work_dir, run_config: dict, crop_hw=None) -> Trainer:
    """The shared Trainer set up for the segmenter: AdamW (weight decay 1e-4), OneCycleLR (10 % warm-up), gradient norm
    clipped at 1, float32, no EMA; a history line every 25 steps; a checkpoint at the end only (a minute's work)."""
    config = TrainingConfig(
        batch_size=batch_size, learning_rate=learning_rate, steps=steps, weight_decay=1e-4, lr_schedule="one_cycle", warmup=0.1,
        grad_clip=1.0, ema_decay=0.0, mixed_precision="no", log_every=25, checkpoint_every=steps, seed=seed,
    )
    generator = torch.Generator().manual_seed(seed)  # data order and augmentations, one stream
    loss = functools.partial(segmentation_loss, weights=class_weights(data.class_frequency()), generator=generator, crop_hw=crop_hw)
    return Trainer(model, data, loss, config, work_dir, config_hash(run_config), device=device, generator=generator,
                   description="train-segmenter")


@torch.no_grad()
def segment(model: SegmenterNet, images: np.ndarray, *, size_hw=None, batch: int = 32) -> np.ndarray:
    """Classes of RGB images [N, h, w, 3] uint8 -> [N, h, w] uint8 (0..16, SKY_INDEX sky).

    Each image is resized (bilinear) to `size_hw` (the size the network was trained at; None: as
    given), read by the network, and its logits resized (bilinear) back to h x w before the argmax.
    """
    model.eval()
    device = next(model.parameters()).device
    out = np.zeros(images.shape[:3], np.uint8)
    for start in range(0, len(images), batch):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch])).to(device).permute(0, 3, 1, 2).float() / 255.0
        h, w = x.shape[-2:]
        if size_hw is not None and tuple(size_hw) != (h, w):
            x = F.interpolate(x, size=tuple(size_hw), mode="bilinear", align_corners=False, antialias=True)
        logits = model(x).logits
        if logits.shape[-2:] != (h, w):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        out[start:start + batch] = logits.argmax(1).to(torch.uint8).cpu().numpy()
    return out
