"""LidarPipeline: occupancy + sensor poses -> LiDAR sweeps (x, y, z, intensity, ring per point).

Per batch of frames: cast the beam pattern through the occupancy (`prior.cast_beams`), then
either run the network (`learned`: range = prior range + predicted correction, predicted
intensity, rays dropped with the predicted probability) or keep the bare ray-cast
(`raycast`, the baseline). The network never sees this loop; the pipeline owns it.

Letters: T frames, B frames of a batch, X Y Z grid, H beams, W azimuths, N points.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers.utils import BaseOutput
from tqdm import tqdm

from uniscene.errors import UserError
from uniscene.grid import OccGrid
from uniscene.models.lidar.baseline import raycast_range_image
from uniscene.models.lidar.beams import BeamPattern, RangeImage, range_image_to_sweep
from uniscene.models.lidar.network import LidarRangeNet
from uniscene.models.lidar.prior import RayPrior, cast_beams, prior_features

METHODS = ("learned", "raycast")
RAY_DROP_MODES = ("sample", "threshold")
CLASS_INTENSITY_FILE = "class_intensity.json"  # the baseline's table, written by training beside the network


@dataclass
class LidarPipelineOutput(BaseOutput):
    """
    range_m: (num_frames, height, width) float32 metres, 0 where the ray returns nothing.
    intensity: (num_frames, height, width) float32, 0 where the ray returns nothing.
    """

    range_m: np.ndarray
    intensity: np.ndarray

    def range_images(self) -> RangeImage:
        return RangeImage(self.range_m, self.intensity)


def cast_frames(
    grid: OccGrid,
    semantics,  # [T, X, Y, Z] uint8, array-like (an xarray DataArray is read batch by batch)
    ego_from_sensor: np.ndarray,  # [T, 4, 4]
    pattern: BeamPattern,
    batch_frames: int,
    device: str,
    progress: str | None = None,
):
    """Yield (frame slice, RayPrior on `device`) for consecutive batches of frames."""
    total = len(ego_from_sensor)
    if len(semantics) != total:
        raise ValueError(f"semantics has {len(semantics)} frames, ego_from_sensor {total}")
    for start in tqdm(range(0, total, batch_frames), desc=progress, unit="batch", disable=progress is None):
        frames = slice(start, min(start + batch_frames, total))
        occupancy = torch.from_numpy(np.ascontiguousarray(np.asarray(semantics[frames]), dtype=np.uint8)).to(device)
        poses = torch.from_numpy(np.asarray(ego_from_sensor[frames], dtype=np.float64)).to(device)
        yield frames, cast_beams(grid, occupancy, poses, pattern)


class LidarPipeline:
    """The trained network (None for the ray-cast alone), the baseline's class intensities, the grid and beams."""

    def __init__(self, network: LidarRangeNet | None, class_intensity: torch.Tensor, grid: OccGrid, pattern: BeamPattern):
        self.network = network.eval() if network is not None else None
        self.class_intensity = class_intensity.float()  # [18]
        self.grid = grid
        self.pattern = pattern

    @classmethod
    def from_pretrained(cls, model_dir, grid: OccGrid, pattern: BeamPattern, device: str = "cpu") -> "LidarPipeline":
        model_dir = Path(model_dir)
        table = model_dir / CLASS_INTENSITY_FILE
        if not (model_dir / "config.json").is_file() or not table.is_file():
            raise UserError(f"{model_dir} is not a trained LiDAR model (no config.json / {CLASS_INTENSITY_FILE}): run `uniscene train-lidar`")
        network = LidarRangeNet.from_pretrained(model_dir, low_cpu_mem_usage=False).to(device)
        class_intensity = torch.tensor(json.loads(table.read_text())["class_intensity"], dtype=torch.float32)
        return cls(network, class_intensity, grid, pattern)

    @torch.inference_mode()
    def predict(self, prior: RayPrior, method: str = "learned", ray_drop: str = "threshold", generator=None) -> tuple:
        """(range_m, intensity) of a cast batch, each [B, H, W] float32 on the prior's device, 0 = no return."""
        if method == "raycast":
            return raycast_range_image(prior, self.pattern, self.class_intensity)
        if method != "learned" or self.network is None:
            raise ValueError(f"method must be one of {METHODS} (learned needs a network), got {method!r}")
        if ray_drop not in RAY_DROP_MODES:
            raise ValueError(f"ray_drop must be one of {RAY_DROP_MODES}, got {ray_drop!r}")
        out = self.network(prior_features(prior, self.pattern))
        range_m = prior.range_m + out.range_correction_m
        p_drop = torch.sigmoid(out.drop_logit)
        if ray_drop == "sample":
            draw = torch.rand(p_drop.shape, generator=generator, device=p_drop.device)
        else:
            draw = torch.full_like(p_drop, 0.5)
        returned = (draw >= p_drop) & (range_m >= self.pattern.min_range_m) & (range_m <= self.pattern.max_range_m)
        return torch.where(returned, range_m, 0.0), torch.where(returned, out.intensity.clamp(min=0), 0.0)

    def __call__(
        self,
        semantics,  # [T, X, Y, Z] uint8
        ego_from_sensor: np.ndarray,  # [T, 4, 4] sensor pose in each frame's ego frame
        method: str = "learned",
        ray_drop: str = "threshold",
        batch_frames: int = 8,
        seed: int = 0,
        device: str = "cpu",
        progress: str | None = None,
    ) -> LidarPipelineOutput:
        generator = torch.Generator(device=device).manual_seed(seed)
        height, width = self.pattern.shape
        range_m = np.zeros((len(ego_from_sensor), height, width), np.float32)
        intensity = np.zeros_like(range_m)
        for frames, prior in cast_frames(self.grid, semantics, ego_from_sensor, self.pattern, batch_frames, device, progress):
            batch_range, batch_intensity = self.predict(prior, method, ray_drop, generator)
            range_m[frames], intensity[frames] = batch_range.cpu().numpy(), batch_intensity.cpu().numpy()
        return LidarPipelineOutput(range_m, intensity)


def sweeps_from_range_images(images: RangeImage, pattern: BeamPattern) -> tuple:
    """Ragged sweeps of [T, H, W] range images: (points [N, 5] float32, frame_offsets [T + 1] int64)."""
    sweeps = [range_image_to_sweep(RangeImage(r, i), pattern) for r, i in zip(images.range_m, images.intensity)]
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sweeps])]).astype(np.int64)
    points = np.concatenate(sweeps) if sweeps else np.zeros((0, 5), np.float32)
    return points, offsets
