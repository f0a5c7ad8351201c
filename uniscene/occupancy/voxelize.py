"""Labelled points -> semantic occupancy on the canonical grid, for a batch of frames at once.

Each voxel that holds points takes their most frequent class, except that a voxel holding any
point of a thing (classes 1-10, objects with boxes) takes the most frequent thing class: a voxel
that an object reaches into is the object's, as the truth's paint order has it (a car's wheels
share the ground layer's voxels with the road). Every other voxel is FREE.
Sparse (sorted keys over occupied voxels only), so a 0.1 m 800 x 800 x 64 grid costs memory
for its output and its points, never for a [X, Y, Z, classes] histogram.

Letters: F frames of a batch, N points, X Y Z grid.
"""

import torch

from uniscene.classes import FREE, NUM_OCC_CLASSES, THING_CLASSES
from uniscene.grid import OccGrid
from uniscene.occupancy import sparse

THINGS = torch.zeros(NUM_OCC_CLASSES, dtype=torch.bool)
THINGS[list(THING_CLASSES)] = True


def voxelize(
    grid: OccGrid,
    points_ego: torch.Tensor,  # [N, 3] metres, each in the ego frame of its own frame
    classes: torch.Tensor,  # [N] int64 in 0..16
    frame: torch.Tensor,  # [N] int64 in 0..F-1
    num_frames: int,
) -> torch.Tensor:
    """Semantic occupancy [F, X, Y, Z] uint8 (0..16, FREE where no point falls)."""
    device = points_ego.device
    lower = torch.as_tensor(grid.lower_m, dtype=points_ego.dtype, device=device)
    shape = torch.tensor(grid.shape, device=device)
    ijk = torch.floor((points_ego - lower) / grid.voxel_size_m).long()
    inside = ((ijk >= 0) & (ijk < shape)).all(1)
    ijk, classes, frame = ijk[inside], classes[inside], frame[inside]
    volume = int(shape.prod())
    flat = frame * volume + ijk[:, 0] * (grid.shape[1] * grid.shape[2]) + ijk[:, 1] * grid.shape[2] + ijk[:, 2]
    keys, label = sparse.majority(flat, classes, NUM_OCC_CLASSES, THINGS.to(device))
    semantics = torch.full((num_frames * volume,), FREE, dtype=torch.uint8, device=device)
    semantics[keys] = label.to(torch.uint8)
    return semantics.view(num_frames, *grid.shape)
