"""Ground completion: the ground is a height field under everything, so holes in its LiDAR coverage are filled.

LiDAR rings thin out with range (at 40 m two rings lie ~20 m apart on a flat road) and every
car and pole shadows the road behind it, while the cameras, mounted elsewhere, still see that
ground. The labelled static surface gives the ground's height and class where it was hit; each
bird's-eye cell (edge `cell_m`, scene frame) without ground, within `fill_m` of a ground cell
and with no other static surface over it (a wall, a building: the ground there is hidden and
belongs to the building's voxels), takes the height and class of the nearest ground cell; with
map areas (map_areas.py), the nearest ground cell in the same areas, where one is within `fill_m`.

Letters: N points, K filled cells.
"""

from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage

from uniscene.classes import GROUND_CLASSES


def fill_ground(points: torch.Tensor, classes: torch.Tensor, cell_m: float, fill_m: float,
                area_of: Callable[[torch.Tensor], torch.Tensor | None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """New ground points [K, 3] (one per filled cell, at its centre) and their classes [K], from a static surface.

    points: [N, 3] scene frame, classes: [N] int64; area_of: scene-frame points [M, 3] -> map area
    codes [M] (or None: no map). Nothing is filled when fill_m <= 0 or no point is ground.
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
    # per cell: the lowest ground point's height (what stands on the ground is above it), majority ground class,
    # and whether other static surface covers it
    count = np.bincount(flat[ground], minlength=int(np.prod(shape)))
    height = np.full(count.size, np.inf)
    np.minimum.at(height, flat[ground], xyz[ground, 2])
    ground_index = np.searchsorted(GROUND_CLASSES, classes.cpu().numpy()[ground])
    votes = np.bincount(flat[ground] * len(GROUND_CLASSES) + ground_index, minlength=count.size * len(GROUND_CLASSES))
    votes = votes.reshape(count.size, len(GROUND_CLASSES))
    covered = np.bincount(flat[~ground], minlength=count.size) > 0
    has_ground = (count > 0).reshape(shape)
    distance, source = _nearest_cell(has_ground)
    area = None
    if area_of is not None:
        centres = torch.as_tensor((np.stack(np.unravel_index(np.arange(count.size), shape), 1) + lower + 0.5) * cell_m, device=device)
        area = area_of(torch.cat([centres, torch.zeros_like(centres[:, :1])], 1))
    if area is not None:
        area = area.cpu().numpy()
        for code in np.unique(area):
            in_area = (area == code).reshape(shape)
            rows, columns = np.nonzero(in_area)
            window = (slice(rows.min(), rows.max() + 1), slice(columns.min(), columns.max() + 1))  # sources and targets lie inside
            cells = np.ravel_multi_index(np.nonzero(in_area[window]), in_area[window].shape)
            area_distance, area_source = _nearest_cell(has_ground[window] & in_area[window])
            near = area_distance[cells] * cell_m <= fill_m
            target = np.ravel_multi_index((rows, columns), shape)[near]  # the same order as `cells`
            source_rows, source_columns = np.unravel_index(area_source[cells[near]], in_area[window].shape)
            distance[target] = area_distance[cells[near]]
            source[target] = np.ravel_multi_index((source_rows + window[0].start, source_columns + window[1].start), shape)
    fill = ~has_ground.reshape(-1) & ~covered & (distance * cell_m <= fill_m)
    cells = np.flatnonzero(fill)
    centre = (np.stack(np.unravel_index(cells, shape), 1) + lower + 0.5) * cell_m
    new_points = np.concatenate([centre, height[source[cells], None]], 1)
    new_classes = np.asarray(GROUND_CLASSES)[votes[source[cells]].argmax(1)]
    return torch.as_tensor(new_points, dtype=points.dtype, device=device), torch.as_tensor(new_classes, dtype=classes.dtype, device=device)


def _nearest_cell(has: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance (cells) [H*W] from every cell of a 2D grid to the nearest set cell of `has` [H, W], and that cell's flat index [H*W]."""
    if not has.any():
        return np.full(has.size, np.inf), np.zeros(has.size, np.int64)
    distance, nearest = ndimage.distance_transform_edt(~has, return_indices=True)
    return distance.reshape(-1), np.ravel_multi_index(nearest.reshape(2, -1), has.shape)
