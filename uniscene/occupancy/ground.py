"""Ground completion: the ground is a height field under everything, so holes in its LiDAR coverage are filled.

LiDAR rings thin out with range (at 40 m two rings lie ~20 m apart on a flat road) and every
car and pole shadows the road behind it, while the cameras, mounted elsewhere, still see that
ground. The labelled static surface gives the ground's height and class where it was hit; each
bird's-eye cell (edge `cell_m`, scene frame) without ground, within `fill_m` of a ground cell
and with no other static surface over it (a wall, a building: the ground there is hidden and
belongs to the building's voxels), takes the height and class of the nearest ground cell.

Letters: N points, K filled cells.
"""

import numpy as np
import torch
from scipy import ndimage

from uniscene.classes import GROUND_CLASSES


def fill_ground(points: torch.Tensor, classes: torch.Tensor, cell_m: float, fill_m: float) -> tuple[torch.Tensor, torch.Tensor]:
    """New ground points [K, 3] (one per filled cell, at its centre) and their classes [K], from a static surface.

    points: [N, 3] scene frame, classes: [N] int64. Nothing is filled when fill_m <= 0 or no point is ground.
    """
    device = points.device
    is_ground = torch.isin(classes, torch.tensor(GROUND_CLASSES, device=device))
    if fill_m <= 0 or not bool(is_ground.any()):
        return points.new_zeros((0, 3)), classes.new_zeros(0)
    xyz = points.double().cpu().numpy()
    lower = np.floor(xyz[:, :2].min(0) / cell_m).astype(np.int64)
    ij = np.floor(xyz[:, :2] / cell_m).astype(np.int64) - lower
    shape = tuple(ij.max(0) + 1)
    flat = np.ravel_multi_index(ij.T, shape)
    ground = is_ground.cpu().numpy()
    # per cell: mean ground height, majority ground class, and whether other static surface covers it
    count = np.bincount(flat[ground], minlength=int(np.prod(shape)))
    height = np.bincount(flat[ground], weights=xyz[ground, 2], minlength=count.size) / np.maximum(count, 1)
    ground_index = np.searchsorted(GROUND_CLASSES, classes.cpu().numpy()[ground])
    votes = np.bincount(flat[ground] * len(GROUND_CLASSES) + ground_index, minlength=count.size * len(GROUND_CLASSES))
    votes = votes.reshape(count.size, len(GROUND_CLASSES))
    covered = np.bincount(flat[~ground], minlength=count.size) > 0
    has_ground = (count > 0).reshape(shape)
    distance, nearest = ndimage.distance_transform_edt(~has_ground, return_indices=True)
    source = np.ravel_multi_index(nearest.reshape(2, -1), shape)
    fill = ~has_ground.reshape(-1) & ~covered & (distance.reshape(-1) * cell_m <= fill_m)
    cells = np.flatnonzero(fill)
    centre = (np.stack(np.unravel_index(cells, shape), 1) + lower + 0.5) * cell_m
    new_points = np.concatenate([centre, height[source[cells], None]], 1)
    new_classes = np.asarray(GROUND_CLASSES)[votes[source[cells]].argmax(1)]
    return torch.as_tensor(new_points, dtype=points.dtype, device=device), torch.as_tensor(new_classes, dtype=classes.dtype, device=device)
