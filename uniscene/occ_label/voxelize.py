"""Labelled points -> semantic occupancy on the canonical grid, for one frame or a batch of frames.

Each voxel that holds points takes their most frequent class, except that a voxel holding any
point of a thing (classes 1-10, objects with boxes) takes the most frequent thing class: a voxel
that an object reaches into is the object's, as the truth's paint order has it (a car's wheels
share the ground layer's voxels with the road). Every other voxel is FREE.
Sparse (sorted keys over occupied voxels only), so a 0.1 m 800 x 800 x 64 grid costs memory
for its output and its points, never for a [X, Y, Z, classes] histogram.

Letters: N points, F frames, X Y Z grid.
"""

import functools

import numpy as np
import torch

from uniscene.classes import FREE, NUM_OCC_CLASSES, THING_CLASSES
from uniscene.grid import OccGrid
from uniscene.occ_label import sparse

THINGS = torch.zeros(NUM_OCC_CLASSES, dtype=torch.bool)
THINGS[list(THING_CLASSES)] = True


def voxel_index(grid: OccGrid, points_ego: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat voxel index [n] int64 (x, y, z row-major) of the points [N, 3] (metres, ego frame) that fall
    inside the grid, and which those are: [N] bool."""
    lower, shape = _bounds(tuple(grid.lower_m), tuple(grid.shape), points_ego.dtype, points_ego.device)
    ijk = torch.floor((points_ego - lower) / grid.voxel_size_m).long()
    inside = ((ijk >= 0) & (ijk < shape)).all(1)
    ijk = ijk[inside]
    return ijk[:, 0] * (grid.shape[1] * grid.shape[2]) + ijk[:, 1] * grid.shape[2] + ijk[:, 2], inside


@functools.lru_cache(maxsize=16)
def _bounds(lower_m: tuple, shape: tuple, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The grid's lower corner [3] and shape [3] as tensors on the points' device, made once (not a copy a frame)."""
    return torch.as_tensor(lower_m, dtype=dtype, device=device), torch.tensor(shape, device=device)


def voxelize_frames(
    grid: OccGrid,
    keys: torch.Tensor,  # [N] int64 frame * X * Y * Z + voxel_index
    classes: torch.Tensor,  # [N] int64 in 0..16
    num_frames: int,
) -> torch.Tensor:
    """Semantic occupancy of F frames at once [F, X, Y, Z] uint8 (0..16, FREE where no point falls): one
    sort for all of them."""
    volume = int(np.prod(grid.shape))
    keys, label = sparse.majority(keys, classes, NUM_OCC_CLASSES, THINGS.to(keys.device), num_keys=num_frames * volume)
    semantics = torch.full((num_frames * volume,), FREE, dtype=torch.uint8, device=keys.device)
    semantics[keys] = label.to(torch.uint8)
    return semantics.view(num_frames, *grid.shape)


def voxelize(
    grid: OccGrid,
    points_ego: torch.Tensor,  # [N, 3] metres, ego frame
    classes: torch.Tensor,  # [N] int64 in 0..16
) -> torch.Tensor:
    """Semantic occupancy [X, Y, Z] uint8 (0..16, FREE where no point falls)."""
    keys, inside = voxel_index(grid, points_ego)
    return voxelize_frames(grid, keys, classes[inside], 1)[0]
