"""The occupancy prior: cast the beam pattern through semantic occupancy from the sensor's pose.

Per ray it gives the first occupied voxel (range to where the ray enters it, its class, which
face it enters through and at what incidence), and the occupancy sampled along the ray behind
that entry point (how thick the surface is). Rays that hit nothing get the range at which they
leave the grid (or the beam's max range). `prior_features` turns this into the network's input.

A batch of B sweeps is cast in one `traverse_grid` call (each ray walks its own frame's grid,
`grid_index`), so the DDA loop runs as many iterations for B sweeps as for one.

Letters: B sweeps, H beams, W azimuths, K samples behind the hit, X Y Z grid, C channels.
"""

from dataclasses import dataclass

import numpy as np
import torch

from uniscene.classes import FREE
from uniscene.grid import OccGrid
from uniscene.models.lidar.beams import BeamPattern
from uniscene.ops.raycast import END_OCCUPIED, traverse_grid

BEHIND_OFFSETS_M = (0.2, 0.6, 1.0, 1.4)  # K: where occupancy is sampled past the hit, along the ray
NUM_CLASSES_WITH_FREE = FREE + 1  # 18
NUM_PRIOR_FEATURES = 3 + NUM_CLASSES_WITH_FREE + 3 + 2 + len(BEHIND_OFFSETS_M) + 3  # C = 33


@dataclass
class RayPrior:
    """Per-ray result of `cast_beams`.

    range_m: [B, H, W] float32, distance to the hit voxel's entry; where nothing is hit, to where
        the ray leaves the grid or reaches the max range.
    hit: [B, H, W] bool, an occupied voxel is met within the max range.
    hit_class: [B, H, W] uint8, class of the hit voxel (FREE where no hit).
    face_axis: [B, H, W] uint8, axis (0 x, 1 y, 2 z) of the voxel face the ray enters through.
    cos_incidence: [B, H, W] float32, |cos| of the angle between the ray and that face's normal.
    hit_z_m: [B, H, W] float32, ego-frame height of the entry point.
    behind_occupied: [B, K, H, W] bool, occupancy at BEHIND_OFFSETS_M past the entry point.
    """

    range_m: torch.Tensor
    hit: torch.Tensor
    hit_class: torch.Tensor
    face_axis: torch.Tensor
    cos_incidence: torch.Tensor
    hit_z_m: torch.Tensor
    behind_occupied: torch.Tensor

    def to(self, device) -> "RayPrior":
        return RayPrior(*(getattr(self, name).to(device) for name in self.__dataclass_fields__))

    def __getitem__(self, index) -> "RayPrior":
        return RayPrior(*(getattr(self, name)[index] for name in self.__dataclass_fields__))

    @staticmethod
    def cat(priors: list) -> "RayPrior":
        return RayPrior(*(torch.cat([getattr(p, name) for p in priors]) for name in RayPrior.__dataclass_fields__))


def cast_beams(
    grid: OccGrid,
    semantics: torch.Tensor,  # [B, X, Y, Z] uint8, classes 0..16, FREE
    ego_from_sensor: torch.Tensor,  # [B, 4, 4] sensor pose in the grid's ego frame
    pattern: BeamPattern,
) -> RayPrior:
    """Cast every beam of `pattern` through each sweep's occupancy (one vectorised DDA for the batch)."""
    if semantics.ndim != 4 or tuple(semantics.shape[1:]) != grid.shape:
        raise ValueError(f"semantics must be [B, *grid.shape] = [B, {grid.shape}], got {tuple(semantics.shape)}")
    if tuple(ego_from_sensor.shape) != (semantics.shape[0], 4, 4):
        raise ValueError(f"ego_from_sensor must be [B, 4, 4] with B = {semantics.shape[0]}, got {tuple(ego_from_sensor.shape)}")
    device = semantics.device
    batch, (height, width) = semantics.shape[0], pattern.shape
    lower = torch.tensor(grid.lower_m, device=device, dtype=torch.float64)
    upper = torch.tensor(grid.upper_m, device=device, dtype=torch.float64)
    ego_from_sensor = ego_from_sensor.to(device, torch.float64)
    origins = ego_from_sensor[:, None, :3, 3].expand(batch, height * width, 3)  # [B, HW, 3]
    if ((origins[:, 0] < lower) | (origins[:, 0] >= upper)).any():
        raise ValueError("every sensor origin must lie inside the occupancy grid")
    directions_sensor = torch.from_numpy(pattern.directions().reshape(-1, 3)).to(device)  # [HW, 3]
    directions = torch.einsum("bij,nj->bni", ego_from_sensor[:, :3, :3], directions_sensor)  # [B, HW, 3]

    # 1. Where each ray leaves the grid (slab test), capped at the beam's max range.
    safe = torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12), directions)
    t_exit = torch.maximum((lower - origins) / safe, (upper - origins) / safe).amin(-1)  # [B, HW]
    t_stop = torch.clamp(t_exit, max=pattern.max_range_m).reshape(-1)

    # 2. One DDA for the whole batch, each ray in its own frame's grid.
    frame = torch.arange(batch, device=device).repeat_interleave(height * width)  # [B HW]
    traversal = traverse_grid(
        grid, origins.reshape(-1, 3), directions.reshape(-1, 3), pattern.max_range_m, semantics != FREE, grid_index=frame
    )

    # 3. The hit: range, class, entry face and incidence, height.
    hit = traversal.end_reason == END_OCCUPIED  # [B HW]
    t_hit = traversal.end_range_m.double()
    range_m = torch.where(hit, t_hit, t_stop)
    voxel = traversal.end_voxel.clamp(min=0)
    hit_class = torch.where(hit, semantics[frame, voxel[:, 0], voxel[:, 1], voxel[:, 2]], torch.full_like(hit, FREE, dtype=torch.uint8))
    flat_origins, flat_directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
    entry = flat_origins + flat_directions * torch.where(hit, t_hit, 0.0)[:, None]  # [B HW, 3] ego frame
    to_boundary = (entry - lower) / grid.voxel_size_m
    face_axis = (to_boundary - to_boundary.round()).abs().argmin(1)
    cos_incidence = flat_directions.gather(1, face_axis[:, None])[:, 0].abs()

    # 4. Occupancy sampled along the ray past the entry point.
    offsets = torch.tensor(BEHIND_OFFSETS_M, device=device, dtype=torch.float64)
    samples = entry[:, None, :] + flat_directions[:, None, :] * offsets[None, :, None]  # [B HW, K, 3]
    index = torch.floor((samples - lower) / grid.voxel_size_m).long()
    inside = ((index >= 0) & (index < torch.tensor(grid.shape, device=device))).all(-1)
    index = torch.minimum(index.clamp(min=0), torch.tensor(grid.shape, device=device) - 1)
    behind = (semantics[frame[:, None], index[..., 0], index[..., 1], index[..., 2]] != FREE) & inside & hit[:, None]

    def image(values):  # [B HW, ...] -> [B, H, W, ...]
        return values.reshape(batch, height, width, *values.shape[1:])

    return RayPrior(
        range_m=image(range_m).float(),
        hit=image(hit),
        hit_class=image(hit_class),
        face_axis=image(face_axis).to(torch.uint8),
        cos_incidence=image(torch.where(hit, cos_incidence, 0.0)).float(),
        hit_z_m=image(torch.where(hit, entry[:, 2], 0.0)).float(),
        behind_occupied=image(behind).permute(0, 3, 1, 2),
    )


def prior_features(prior: RayPrior, pattern: BeamPattern) -> torch.Tensor:
    """The network's input per ray, [B, C, H, W] float32 with C = NUM_PRIOR_FEATURES.

    Channels: hit; range / max range; log range / log max range; class one-hot (18, FREE
    last); entry-face axis one-hot (3); cos incidence; height / 5 m; occupancy behind the hit
    (K); sin elevation, cos and sin azimuth.
    """
    batch, height, width = prior.range_m.shape
    device = prior.range_m.device
    hit = prior.hit.float()
    max_range = pattern.max_range_m
    onehot_class = torch.nn.functional.one_hot(prior.hit_class.long(), NUM_CLASSES_WITH_FREE).permute(0, 3, 1, 2).float()
    onehot_face = torch.nn.functional.one_hot(prior.face_axis.long(), 3).permute(0, 3, 1, 2).float() * hit[:, None]
    elevation = torch.deg2rad(torch.tensor(pattern.elevation_deg, device=device, dtype=torch.float32))
    azimuth = torch.from_numpy(pattern.azimuth_rad()).to(device, torch.float32)
    rays = torch.stack(
        [torch.sin(elevation)[:, None].expand(height, width), *(f(azimuth)[None, :].expand(height, width) for f in (torch.cos, torch.sin))]
    )
    features = torch.cat(
        [
            hit[:, None],
            (prior.range_m / max_range)[:, None],
            (torch.log1p(prior.range_m) / np.log1p(max_range))[:, None],
            onehot_class,
            onehot_face,
            prior.cos_incidence[:, None],
            (prior.hit_z_m / 5.0)[:, None],
            prior.behind_occupied.float(),
            rays[None].expand(batch, -1, -1, -1),
        ],
        1,
    )
    return features
