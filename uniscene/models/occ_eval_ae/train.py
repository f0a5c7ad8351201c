"""Training OccEvalAE on the training scenes' label occupancy, with the shared trainer (uniscene.training).

`FrameDataset` lists every `frame_stride`-th frame of each occupancy store (occ_label.zarr of the
training scenes; never a held-out scene's: the rule names only TRAIN_SCENES) and reads a frame
only when it is drawn. The loss is the per-voxel cross-entropy, weighted per label by
1 / sqrt(its share of the training voxels) (clipped at 10x the smallest weight, mean 1 over the
voxels), so that cars and pedestrians count beside free space and the ground; since the decoder
gives one score vector per patch, it is taken through each patch's label counts:

    loss = sum_p sum_l w_l n_pl (-log softmax(s_p)_l) / sum_p sum_l w_l n_pl

(p patches, l labels, n_pl voxels of label l in patch p, s_p the patch's scores), which equals
the weighted mean over voxels of -log p(voxel's label). `reconstruction_scores` measures how
well the trained network reconstructs frames, beside the best constant prediction and the
ceiling of any per-patch prediction.

Letters: N frames, B batch, X Y Z grid, x y z patches, L labels.
"""

import numpy as np
import torch
from torch.utils.data import Dataset

from uniscene.errors import UserError
from uniscene.grid import OccGrid
from uniscene.models.occ_eval_ae.network import NUM_LABELS, OccEvalAE
from uniscene.store import fingerprint, open_store
from uniscene.training import Trainer, TrainingConfig

COUNT_FRAMES = 128  # frames (evenly spread over the set) that the label shares are counted on
MAX_WEIGHT_RATIO = 10.0  # the largest class weight is at most this many times the smallest


class FrameDataset(Dataset):
    """Every `frame_stride`-th frame of occupancy stores [X, Y, Z]; item: {"semantics": [X, Y, Z] uint8 (0..17)}."""

    def __init__(self, paths, grid: OccGrid, frame_stride: int = 1):
        if frame_stride < 1:
            raise ValueError(f"frame_stride must be >= 1, got {frame_stride}")
        self.paths, self.scenes, self.frames = [], [], []
        for path in paths:
            dataset = open_store(path)
            if "semantics" not in dataset or dataset["semantics"].dims != ("frame", "x", "y", "z"):
                raise UserError(f"store {path} holds no occupancy (no semantics (frame, x, y, z)): pass the training scenes' "
                                f"occ_label.zarr")
            grid.check_store(dataset, path)
            self.frames += [(len(self.paths), t) for t in range(0, dataset.sizes["frame"], frame_stride)]
            self.paths.append(str(path))
            self.scenes.append(str(dataset.attrs.get("scene", path)))
        self._stores = {}

    def __getstate__(self):  # DataLoader workers open their own
        return {**self.__dict__, "_stores": {}}

    def __len__(self) -> int:
        return len(self.frames)

    def read(self, index: int) -> np.ndarray:
        """Frame `index`'s labels [X, Y, Z] uint8."""
        store, t = self.frames[index]
        if store not in self._stores:
            self._stores[store] = open_store(self.paths[store])["semantics"]
        return np.asarray(self._stores[store][t].values, np.uint8)

    def __getitem__(self, index: int) -> dict:
        return {"semantics": torch.from_numpy(self.read(index))}

    def fingerprints(self) -> dict:
        return {path: fingerprint(path) for path in self.paths}


def label_counts(data: FrameDataset, max_frames: int = COUNT_FRAMES) -> np.ndarray:
    """Voxels per label [L] int64 over at most `max_frames` frames spread evenly over the set."""
    picks = np.unique(np.linspace(0, len(data) - 1, min(max_frames, len(data))).round().astype(int))
    counts = np.zeros(NUM_LABELS, np.int64)
    for i in picks:
        counts += np.bincount(data.read(int(i)).reshape(-1), minlength=NUM_LABELS)[:NUM_LABELS]
    return counts


def class_weights(counts: np.ndarray) -> torch.Tensor:
    """Cross-entropy weight per label [L]: 1 / sqrt(share), clipped at MAX_WEIGHT_RATIO x the smallest, mean 1 over the
    voxels; 0 for labels absent from the counts."""
    share = np.asarray(counts, np.float64) / max(float(np.sum(counts)), 1.0)
    present = share > 0
    weights = np.zeros_like(share)
    weights[present] = 1.0 / np.sqrt(share[present])
    weights[present] = np.minimum(weights[present], MAX_WEIGHT_RATIO * weights[present].min())
    weights /= max(float((weights * share).sum()), 1e-12)
    return torch.tensor(weights, dtype=torch.float32)


def patch_cross_entropy(logits: torch.Tensor, shares: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted per-voxel cross-entropy through patch label shares: logits, shares [B, L, x, y, z], weights [L]."""
    weighted = shares * weights.to(shares.device).view(1, -1, 1, 1, 1)  # [B, L, x, y, z]
    return -(weighted * torch.log_softmax(logits.float(), 1)).sum() / weighted.sum().clamp_min(1e-12)


def make_loss_fn(weights: torch.Tensor):
    def loss_fn(model, batch):
        out = model(batch["semantics"])
        loss = patch_cross_entropy(out.logits, out.label_shares, weights)
        agree = (out.logits.argmax(1) == out.label_shares.argmax(1)).float().mean().item()
        return loss, {"patch_accuracy": agree}

    return loss_fn


def eval_ae_trainer(model: OccEvalAE, data: FrameDataset, *, steps: int, batch_size: int, learning_rate: float, seed: int,
                    device: str, work_dir, run_hash: str) -> tuple:
    """(the shared Trainer set up for the autoencoder, the class weights [L]): AdamW (weight decay 1e-4), OneCycleLR
    (10 % warm-up), gradient norm clipped at 1, float32, no EMA; about 20 history lines; a checkpoint every quarter."""
    weights = class_weights(label_counts(data))
    config = TrainingConfig(batch_size=batch_size, learning_rate=learning_rate, steps=steps, weight_decay=1e-4, warmup=0.1,
                            grad_clip=1.0, ema_decay=0.0, mixed_precision="no", log_every=max(1, steps // 20),
                            checkpoint_every=max(1, steps // 4), seed=seed)
    trainer = Trainer(model, data, make_loss_fn(weights), config, work_dir, run_hash, device=device, description="train-occ-eval-ae")
    return trainer, weights


def _miou(confusion: np.ndarray) -> float:
    """Mean IoU over the labels present in the target or the prediction (free included)."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    return float((tp[union > 0] / union[union > 0]).mean())


@torch.no_grad()
def reconstruction_scores(model: OccEvalAE, frames: np.ndarray, batch: int = 8) -> dict:
    """How well `model` reconstructs labels frames [N, X, Y, Z] uint8: voxel accuracy and mean IoU over the 18 labels
    (free included) present in either; beside them the best constant prediction (the most common label everywhere) and
    the ceiling of a per-patch prediction (every voxel its patch's most common label)."""
    model.eval()
    device = next(model.parameters()).device
    gx, gy, gz = model.config.grid_shape
    confusion = np.zeros((2, NUM_LABELS, NUM_LABELS), np.int64)  # [reconstruction | ceiling, target, prediction]
    for start in range(0, len(frames), batch):
        target = torch.from_numpy(np.ascontiguousarray(frames[start:start + batch])).to(device)
        majority = model.label_shares(target).argmax(1)  # [B, x, y, z]
        for axis, p in enumerate(model.config.patch_size):
            majority = majority.repeat_interleave(p, dim=axis + 1)
        for i, predicted in enumerate((model.reconstruct(target), majority[:, :gx, :gy, :gz])):
            index = target.long().reshape(-1) * NUM_LABELS + predicted.long().reshape(-1)
            confusion[i] += torch.bincount(index, minlength=NUM_LABELS ** 2).cpu().numpy().reshape(NUM_LABELS, NUM_LABELS)
    counts = confusion[0].sum(1)
    constant = np.zeros_like(confusion[0])
    constant[:, int(counts.argmax())] = counts

    def scores(matrix):
        return round(float(np.trace(matrix) / matrix.sum()), 4), round(_miou(matrix), 4)

    (accuracy, miou), (constant_accuracy, constant_miou), (ceiling_accuracy, ceiling_miou) = (
        scores(confusion[0]), scores(constant), scores(confusion[1]))
    return {"frames": int(len(frames)), "accuracy": accuracy, "miou": miou, "constant_label": int(counts.argmax()),
            "constant_accuracy": constant_accuracy, "constant_miou": constant_miou, "patch_ceiling_accuracy": ceiling_accuracy,
            "patch_ceiling_miou": ceiling_miou}
