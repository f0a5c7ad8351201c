"""Training LidarRangeNet on recorded sweeps against the occupancy prior of the same frames.

`cache_training_set` casts every training frame once, batch by batch, and writes its prior and
its recorded range image to memory-mapped .npy files in a scratch folder beside the checkpoint;
`TrainingSet` reads them one sweep at a time. `lidar_trainer` runs the shared loop
(uniscene.training) over random azimuth crops, with a checkpoint and a history line per epoch;
a rerun with the same settings and data resumes from the last checkpoint. Loss per ray:
smooth-L1 on the range and L1 on the intensity where the sweep returned, binary cross-entropy
on ray drop everywhere.

Letters: N training sweeps, B batch, C channels, H beams, W azimuths, w crop width, K samples behind the hit.
"""

import functools
import json
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from uniscene.grid import OccGrid
from uniscene.models.lidar.beams import BeamPattern, RangeImage
from uniscene.models.lidar.inputs import load_scene_inputs, true_range_images
from uniscene.models.lidar.network import LidarRangeNet
from uniscene.models.lidar.pipeline import cast_frames
from uniscene.models.lidar.prior import NUM_CLASSES_WITH_FREE, RayPrior, prior_features
from uniscene.store import atomic_directory, config_hash
from uniscene.training import Trainer, TrainingConfig, unwrap_model

PRIOR_FIELDS = tuple(RayPrior.__dataclass_fields__)
TARGET_FIELDS = ("target_range_m", "target_intensity")
CACHE_DIR = "cast_priors"  # inside the trainer's work folder
CACHE_META = "cache.json"


class TrainingSet(Dataset):
    """N training sweeps, read one at a time.

    arrays: {field: [N, ...] numpy array or memory map}: the RayPrior fields ([N, H, W] each,
    behind_occupied [N, K, H, W]) and target_range_m, target_intensity ([N, H, W] float32, the
    recorded sweep; range 0 where the ray returned nothing). An item is {field: tensor [...]}.
    """

    def __init__(self, arrays: dict):
        missing = sorted(set(PRIOR_FIELDS + TARGET_FIELDS) - set(arrays))
        if missing:
            raise ValueError(f"TrainingSet needs the arrays {missing}")
        lengths = {name: len(array) for name, array in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"TrainingSet arrays differ in length: {lengths}")
        self.arrays = arrays

    @staticmethod
    def from_parts(priors: list, targets: list) -> "TrainingSet":
        """In memory, from RayPriors ([B, ...] each) and RangeImages ([T, H, W] each) of the same sweeps in order."""
        prior = RayPrior.cat([p.to("cpu") for p in priors])
        arrays = {name: getattr(prior, name).numpy() for name in PRIOR_FIELDS}
        arrays["target_range_m"] = np.concatenate([t.range_m for t in targets])
        arrays["target_intensity"] = np.concatenate([t.intensity for t in targets])
        return TrainingSet(arrays)

    @staticmethod
    def open(folder) -> "TrainingSet":
        """Memory-mapped, from the .npy files `cache_training_set` wrote in `folder` (copy-on-write: writable
        for torch.from_numpy without a copy, and the files never change)."""
        return TrainingSet({name: np.load(Path(folder) / f"{name}.npy", mmap_mode="c") for name in PRIOR_FIELDS + TARGET_FIELDS})

    def __len__(self) -> int:
        return len(self.arrays["target_range_m"])

    def __getitem__(self, index: int) -> dict:
        """{field: tensor}, views of sweep `index` (the DataLoader's collate copies them into the batch)."""
        return {name: torch.from_numpy(array[index]) for name, array in self.arrays.items()}

    def class_intensity(self, chunk: int = 64) -> torch.Tensor:
        """The baseline's table: mean recorded intensity per prior hit class, [18] float32 (the overall
        mean for classes never hit). Summed in float64, `chunk` sweeps at a time."""
        total = torch.zeros(NUM_CLASSES_WITH_FREE, dtype=torch.float64)
        count = torch.zeros(NUM_CLASSES_WITH_FREE, dtype=torch.float64)
        for start in range(0, len(self), chunk):
            rows = slice(start, start + chunk)
            returned = torch.from_numpy(np.array(self.arrays["target_range_m"][rows]) > 0)
            index = torch.from_numpy(np.array(self.arrays["hit_class"][rows]))[returned].long()
            intensity = torch.from_numpy(np.array(self.arrays["target_intensity"][rows]))[returned].double()
            total.index_add_(0, index, intensity)
            count.index_add_(0, index, torch.ones_like(intensity))
        overall = total.sum() / count.sum().clamp(min=1)
        return torch.where(count > 0, total / count.clamp(min=1), overall).float()


def cache_training_set(
    frames_paths, occupancy_paths, grid: OccGrid, pattern: BeamPattern, *, frame_stride: int, cast_batch: int, device: str,
    folder, key: dict,
) -> TrainingSet:
    """Cast every `frame_stride`-th frame of each scene through its occupancy (`cast_batch` at a time, on
    `device`) and bin its recorded sweep; write both to memory-mapped .npy files in `folder` (atomically)
    and open them. A folder written for the same `key` (settings, input fingerprints) is reused."""
    folder = Path(folder)
    meta = folder / CACHE_META
    if meta.is_file() and json.loads(meta.read_text()).get("key") == config_hash(key):
        return TrainingSet.open(folder)
    scenes = [load_scene_inputs(f, o, grid) for f, o in zip(frames_paths, occupancy_paths)]
    chosen = slice(None, None, frame_stride)
    total = sum(len(scene.ego_from_sensor[chosen]) for scene in scenes)
    with atomic_directory(folder) as tmp:
        arrays, first = {}, 0
        for frames_path, scene in zip(frames_paths, scenes):
            semantics, poses, paths = scene.semantics[chosen], scene.ego_from_sensor[chosen], scene.sweep_paths[chosen]
            desc = f"cast {Path(frames_path).parent.name}"
            for frames, prior in cast_frames(grid, semantics, poses, pattern, cast_batch, device, desc):
                target = true_range_images(paths[frames], pattern)
                parts = {name: getattr(prior, name).cpu().numpy() for name in PRIOR_FIELDS}
                parts.update(target_range_m=target.range_m, target_intensity=target.intensity)
                for name, values in parts.items():
                    if name not in arrays:  # [N, ...] with the dtype and shape the cast gives
                        arrays[name] = np.lib.format.open_memmap(tmp / f"{name}.npy", "w+", values.dtype, (total, *values.shape[1:]))
                    arrays[name][first + frames.start:first + frames.stop] = values
            first += len(poses)
        for array in arrays.values():
            array.flush()
        del arrays
        (tmp / CACHE_META).write_text(json.dumps({"key": config_hash(key), "num_sweeps": total}))
    return TrainingSet.open(folder)


def _crop(tensor: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """tensor [B, ..., W], columns [B, w] -> [B, ..., w] (azimuth wraps round)."""
    index = columns.view(columns.shape[0], *([1] * (tensor.ndim - 2)), columns.shape[1]).expand(*tensor.shape[:-1], -1)
    return tensor.gather(-1, index)


def training_loss(
    network,  # LidarRangeNet, or its DDP wrapper
    features: torch.Tensor,  # [B, C, H, w] prior features
    prior_range_m: torch.Tensor,  # [B, H, w]
    target: RangeImage,  # [B, H, w] each
) -> tuple:
    """(total loss, {name: value}) of a batch, all on the network's device."""
    out = network(features)
    returned = target.range_m > 0
    drop = F.binary_cross_entropy_with_logits(out.drop_logit, (~returned).float())
    if returned.any():
        range_m = prior_range_m + out.range_correction_m
        range_loss = F.smooth_l1_loss(range_m[returned], target.range_m[returned], beta=0.2)
        intensity = F.l1_loss(out.intensity[returned], target.intensity[returned]) / unwrap_model(network).config.intensity_scale
    else:
        range_loss = intensity = out.range_correction_m.sum() * 0
    parts = {"range": range_loss.item(), "intensity": intensity.item(), "drop": drop.item()}
    return range_loss + intensity + drop, parts


def crop_loss(network, batch: dict, *, pattern: BeamPattern, crop: int, generator: torch.Generator) -> tuple:
    """`training_loss` on one random azimuth crop of each sweep of a batch ({field: [B, ...]}, as TrainingSet
    items); the crop starts are drawn from `generator` (the trainer's, so that they resume with it)."""
    width = pattern.shape[1]
    start = torch.randint(0, width, (len(batch["range_m"]), 1), generator=generator)
    columns = ((start + torch.arange(crop)) % width).to(batch["range_m"].device)  # [B, w]
    prior = RayPrior(*(batch[name] for name in PRIOR_FIELDS))
    features = _crop(prior_features(prior, pattern), columns)
    target = RangeImage(_crop(batch["target_range_m"], columns), _crop(batch["target_intensity"], columns))
    return training_loss(network, features, _crop(prior.range_m, columns), target)


def lidar_trainer(
    network: LidarRangeNet,
    data: TrainingSet,
    pattern: BeamPattern,
    *,
    epochs: int,
    batch_size: int,
    crop_width: int,
    learning_rate: float,
    seed: int,
    device: str,
    checkpoint_dir: Path,
    run_config: dict,
) -> Trainer:
    """The shared Trainer set up for the LiDAR model: AdamW (weight decay 1e-4), OneCycleLR (10 % warm-up),
    gradient norm clipped at 1, float32, no EMA; one history line and one checkpoint per epoch in
    `checkpoint_dir`, resumed when it holds a checkpoint of the same `run_config` (settings, data)."""
    width = pattern.shape[1]
    crop = width if crop_width <= 0 else min(crop_width, width)
    config = TrainingConfig(
        batch_size=batch_size, learning_rate=learning_rate, epochs=epochs, weight_decay=1e-4, lr_schedule="one_cycle",
        warmup=0.1, grad_clip=1.0, ema_decay=0.0, mixed_precision="no", log_every=0, checkpoint_every=0, seed=seed,
    )
    generator = torch.Generator().manual_seed(seed)  # data order and crops, one stream
    loss = functools.partial(crop_loss, pattern=pattern, crop=crop, generator=generator)
    return Trainer(network, data, loss, config, checkpoint_dir, config_hash(run_config), device=device, generator=generator,
                   description="train-lidar")


def train_network(network: LidarRangeNet, data: TrainingSet, pattern: BeamPattern, **kwargs) -> list:
    """Train in place (`lidar_trainer`'s keywords); returns the loss history, one record per epoch."""
    return lidar_trainer(network, data, pattern, **kwargs).fit()
