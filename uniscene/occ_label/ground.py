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

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from scipy import ndimage

from uniscene.classes import GROUND_CLASSES


def fill_ground(points: torch.Tensor, classes: torch.Tensor, cell_m: float, fill_m: float,
                area_of: Callable[[torch.Tensor], torch.Tensor | None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """New ground points [K, 3] (one per filled cell, at its centre) and their classes [K], from a static surface.

    points: [N, 3] scene frame, classes: [N] int64; area_of: scene-frame points [M, 3] -> map area
    codes [M] (or None: no map). Nothing is filled when fill_m <= 0 or no point is ground.
    The points are binned on their device; only the bird's-eye rasters (H x W cells) come to the host,
    where SciPy's distance transforms run, one thread per map area.
    """
    device = points.device
    is_ground = torch.isin(classes, torch.tensor(GROUND_CLASSES, device=device))
    if fill_m <= 0 or not bool(is_ground.any()):
        return points.new_zeros((0, 3)), classes.new_zeros(0)
    xyz = points.double()
    lower = torch.floor(xyz[:, :2].min(0).values / cell_m).long()
    ij = torch.floor(xyz[:, :2] / cell_m).long() - lower
    shape = tuple(int(v) + 1 for v in ij.max(0).values.tolist())
    flat = ij[:, 0] * shape[1] + ij[:, 1]
    cells = shape[0] * shape[1]
    # per cell: the lowest ground point's height (what stands on the ground is above it), majority ground class,
    # and whether other static surface covers it
    ground_flat = flat[is_ground]
    height = torch.full((cells,), torch.inf, dtype=torch.float64, device=device).scatter_reduce_(0, ground_flat, xyz[is_ground, 2], "amin")
    ground_index = torch.searchsorted(torch.tensor(GROUND_CLASSES, device=device), classes[is_ground])
    votes = torch.bincount(ground_flat * len(GROUND_CLASSES) + ground_index, minlength=cells * len(GROUND_CLASSES)).view(cells, len(GROUND_CLASSES))
    has_ground = (torch.bincount(ground_flat, minlength=cells) > 0).view(shape).cpu().numpy()
    covered = (torch.bincount(flat[~is_ground], minlength=cells) > 0).cpu().numpy()
    del xyz, ij, flat, ground_flat
    lower = lower.cpu().numpy()
    area = None
    if area_of is not None:
        rows, columns = torch.meshgrid(torch.arange(shape[0], device=device), torch.arange(shape[1], device=device), indexing="ij")
        centres = (torch.stack([rows.reshape(-1), columns.reshape(-1)], 1).double() + torch.as_tensor(lower, device=device) + 0.5) * cell_m
        area = area_of(torch.cat([centres, torch.zeros_like(centres[:, :1])], 1))
        del rows, columns, centres
    # the nearest ground cell of every cell, and with map areas the nearest in the same areas where one lies within fill_m
    jobs = [((has_ground,), None)]
    if area is not None:
        area = area.to(torch.uint8).view(shape).cpu().numpy() if int(area.max()) < 256 else area.view(shape).cpu().numpy()
        for code in np.unique(area):
            in_area = area == code
            rows, columns = np.nonzero(in_area)
            window = (slice(rows.min(), rows.max() + 1), slice(columns.min(), columns.max() + 1))  # sources and targets lie inside
            jobs.append(((has_ground[window] & in_area[window],), (in_area, rows, columns, window)))
    with ThreadPoolExecutor(min(len(jobs), os.cpu_count() or 1)) as pool:  # SciPy releases the GIL
        results = list(pool.map(lambda job: _nearest_cell(*job[0]), jobs))
    distance, source = results[0]
    for (_, part), (area_distance, area_source) in zip(jobs[1:], results[1:]):
        in_area, rows, columns, window = part
        cells_in = np.ravel_multi_index((rows - window[0].start, columns - window[1].start), in_area[window].shape)
        near = area_distance[cells_in] * cell_m <= fill_m
        target = np.ravel_multi_index((rows, columns), shape)[near]  # the same order as `cells_in`
        source_rows, source_columns = np.unravel_index(area_source[cells_in[near]], in_area[window].shape)
        distance[target] = area_distance[cells_in[near]]
        source[target] = np.ravel_multi_index((source_rows + window[0].start, source_columns + window[1].start), shape)
    fill = ~has_ground.reshape(-1) & ~covered & (distance * cell_m <= fill_m)
    filled = np.flatnonzero(fill)
    centre = (np.stack(np.unravel_index(filled, shape), 1) + lower + 0.5) * cell_m
    from_cell = torch.as_tensor(source[filled], device=device)
    new_points = np.concatenate([centre, height[from_cell].cpu().numpy()[:, None]], 1)
    new_classes = np.asarray(GROUND_CLASSES)[votes[from_cell].cpu().numpy().argmax(1)]
    return torch.as_tensor(new_points, dtype=points.dtype, device=device), torch.as_tensor(new_classes, dtype=classes.dtype, device=device)


def _nearest_cell(has: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance (cells) [H*W] from every cell of a 2D grid to the nearest set cell of `has` [H, W], and that cell's flat index [H*W]."""
    if not has.any():
        return np.full(has.size, np.inf), np.zeros(has.size, np.int64)
    distance, nearest = ndimage.distance_transform_edt(~has, return_indices=True)
    return distance.reshape(-1), np.ravel_multi_index(nearest.reshape(2, -1), has.shape)
