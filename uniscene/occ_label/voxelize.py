"""Labelled points -> semantic occupancy on the canonical grid, one frame at a time.

Each voxel that holds points takes their most frequent class, except that a voxel holding any
point of a thing (classes 1-10, objects with boxes) takes the most frequent thing class: a voxel
that an object reaches into is the object's, as the truth's paint order has it (a car's wheels
share the ground layer's voxels with the road). Every other voxel is FREE.
Sparse (sorted keys over occupied voxels only), so a 0.1 m 800 x 800 x 64 grid costs memory
for its output and its points, never for a [X, Y, Z, classes] histogram.

Letters: N points, X Y Z grid.
"""

import torch

from uniscene.classes import FREE, NUM_OCC_CLASSES, THING_CLASSES
from uniscene.grid import OccGrid
from uniscene.occ_label import sparse

THINGS = torch.zeros(NUM_OCC_CLASSES, dtype=torch.bool)
THINGS[list(THING_CLASSES)] = True


def voxelize(
    grid: OccGrid,
    points_ego: torch.Tensor,  # [N, 3] metres, ego frame
    classes: torch.Tensor,  # [N] int64 in 0..16
) -> torch.Tensor:
    """Semantic occupancy [X, Y, Z] uint8 (0..16, FREE where no point falls)."""
    device = points_ego.device
    lower = torch.as_tensor(grid.lower_m, dtype=points_ego.dtype, device=device)
    shape = torch.tensor(grid.shape, device=device)
    ijk = torch.floor((points_ego - lower) / grid.voxel_size_m).long()
    inside = ((ijk >= 0) & (ijk < shape)).all(1)
    ijk, classes = ijk[inside], classes[inside]
    flat = ijk[:, 0] * (grid.shape[1] * grid.shape[2]) + ijk[:, 1] * grid.shape[2] + ijk[:, 2]
    keys, label = sparse.majority(flat, classes, NUM_OCC_CLASSES, THINGS.to(device))
    semantics = torch.full((int(shape.prod()),), FREE, dtype=torch.uint8, device=device)
    semantics[keys] = label.to(torch.uint8)
    return semantics.view(*grid.shape)
