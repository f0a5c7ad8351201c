"""Training LidarRangeNet on recorded sweeps against the occupancy prior of the same frames.

`build_training_set` casts every training frame once and bins its recorded sweep into a range
image; `train_network` is a plain PyTorch loop over random azimuth crops of those images that
checkpoints after each epoch and resumes from the last checkpoint when it is rerun with the
same settings. Loss per ray: smooth-L1 on the range and L1 on the intensity where the sweep
returned, binary cross-entropy on ray drop everywhere.

Letters: N training sweeps, B batch, C channels, H beams, W azimuths, w crop width.
"""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from uniscene.models.lidar.baseline import fit_class_intensity
from uniscene.models.lidar.beams import BeamPattern, RangeImage
from uniscene.models.lidar.network import LidarRangeNet
from uniscene.models.lidar.prior import RayPrior, prior_features
from uniscene.store import config_hash

CHECKPOINT_STATE = "state.pt"


@dataclass
class TrainingSet:
    """prior: RayPrior of N sweeps ([N, H, W] each, on the CPU); target_range_m, target_intensity:
    [N, H, W] float32 tensors of the recorded sweeps (range 0 where the ray returned nothing)."""

    prior: RayPrior
    target_range_m: torch.Tensor
    target_intensity: torch.Tensor

    @staticmethod
    def from_parts(priors: list, targets: list) -> "TrainingSet":
        return TrainingSet(
            RayPrior.cat([p.to("cpu") for p in priors]),
            torch.from_numpy(np.concatenate([t.range_m for t in targets])),
            torch.from_numpy(np.concatenate([t.intensity for t in targets])),
        )

    def __len__(self) -> int:
        return self.target_range_m.shape[0]

    def class_intensity(self) -> torch.Tensor:
        """The baseline's table: mean recorded intensity per prior hit class, [18]."""
        returned = self.target_range_m > 0
        return fit_class_intensity(self.prior.hit_class[returned], self.target_intensity[returned])


def _crop(tensor: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """tensor [B, ..., W], columns [B, w] -> [B, ..., w] (azimuth wraps round)."""
    index = columns.view(columns.shape[0], *([1] * (tensor.ndim - 2)), columns.shape[1]).expand(*tensor.shape[:-1], -1)
    return tensor.gather(-1, index)


def training_loss(
    network: LidarRangeNet,
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
        intensity = F.l1_loss(out.intensity[returned], target.intensity[returned]) / network.config.intensity_scale
    else:
        range_loss = intensity = out.range_correction_m.sum() * 0
    parts = {"range": range_loss.item(), "intensity": intensity.item(), "drop": drop.item()}
    return range_loss + intensity + drop, parts


def train_network(
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
) -> list:
    """Train in place; returns the loss history (one dict per epoch). Resumes from `checkpoint_dir`
    when it holds a checkpoint of the same `run_config` (settings, data), else starts afresh."""
    width = pattern.shape[1]
    crop = width if crop_width <= 0 else min(crop_width, width)
    steps_per_epoch = max(1, -(-len(data) // batch_size))
    network.to(device).train()
    optimizer = torch.optim.AdamW(network.parameters(), lr=learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, learning_rate, total_steps=epochs * steps_per_epoch, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    history, first_epoch = [], 0

    # 1. resume
    state_path = checkpoint_dir / CHECKPOINT_STATE
    run_hash = config_hash(run_config)
    if state_path.is_file():
        state = torch.load(state_path, weights_only=False)
        if state["run_hash"] == run_hash:
            network.load_state_dict(LidarRangeNet.from_pretrained(checkpoint_dir, low_cpu_mem_usage=False).state_dict())
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            generator.set_state(state["generator"])
            history, first_epoch = state["history"], state["epoch"] + 1
            print(f"resuming LiDAR training from {checkpoint_dir} after epoch {first_epoch}")
        else:
            print(f"ignoring checkpoint {checkpoint_dir}: it was written for other settings or data")

    # 2. epochs of random crops
    for epoch in range(first_epoch, epochs):
        order = torch.randperm(len(data), generator=generator)
        sums, bar = {}, tqdm(range(steps_per_epoch), desc=f"train-lidar epoch {epoch + 1}/{epochs}", unit="step")
        for step in bar:
            index = order[step * batch_size:(step + 1) * batch_size]
            start = torch.randint(0, width, (index.numel(), 1), generator=generator)
            columns = ((start + torch.arange(crop)) % width).to(device)  # [B, w]
            prior = data.prior[index].to(device)
            features = _crop(prior_features(prior, pattern), columns)
            target = RangeImage(
                _crop(data.target_range_m[index].to(device), columns), _crop(data.target_intensity[index].to(device), columns)
            )
            loss, parts = training_loss(network, features, _crop(prior.range_m, columns), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + value
            bar.set_postfix(loss=f"{loss.item():.3f}")
        history.append({"epoch": epoch + 1, **{name: round(value / steps_per_epoch, 5) for name, value in sums.items()}})
        print(json.dumps(history[-1]))

        # 3. checkpoint (written aside, then moved into place)
        tmp = checkpoint_dir.parent / f".{checkpoint_dir.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        network.save_pretrained(tmp)
        torch.save(
            {"run_hash": run_hash, "epoch": epoch, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "generator": generator.get_state(), "history": history},
            tmp / CHECKPOINT_STATE,
        )
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        tmp.rename(checkpoint_dir)
    network.eval()
    return history
