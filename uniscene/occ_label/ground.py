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
    where SciPy's distance transforms run, one thread per map area, a few at a time (`_budgeted_map`).
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
    # the nearest ground cell of every cell
    distance, source = _nearest_cell(has_ground)
    if area is not None:  # in the same areas, where one lies within fill_m: one transform per area code, a few at a time
        area = (area.to(torch.uint8) if 0 <= int(area.min()) and int(area.max()) < 256 else area).view(shape).cpu().numpy()  # a byte a cell

        def nearest_in(code):
            in_area = area == code
            found = _nearest_cell(has_ground, in_area)
            near = found[0] * cell_m <= fill_m
            return [part[near] for part in found] + [np.flatnonzero(in_area)[near]]

        codes = np.unique(area)
        for area_distance, area_source, target in _budgeted_map(nearest_in, codes, [_window_cells(area == code) for code in codes]):
            distance[target] = area_distance
            source[target] = area_source
    fill = ~has_ground.reshape(-1) & ~covered & (distance * cell_m <= fill_m)
    filled = np.flatnonzero(fill)
    centre = (np.stack(np.unravel_index(filled, shape), 1) + lower + 0.5) * cell_m
    from_cell = torch.as_tensor(source[filled], device=device)
    new_points = np.concatenate([centre, height[from_cell].cpu().numpy()[:, None]], 1)
    new_classes = np.asarray(GROUND_CLASSES)[votes[from_cell].cpu().numpy().argmax(1)]
    return torch.as_tensor(new_points, dtype=points.dtype, device=device), torch.as_tensor(new_classes, dtype=classes.dtype, device=device)


WINDOW_CELLS_AT_ONCE = 6_000_000  # bird's-eye cells whose distance transforms run at once (in threads): ~0.1-0.2 GB of rasters


def _budgeted_map(function, items, cells):
    """function(item) of every item, in threads (SciPy's transforms release the GIL), as many at once as hold at most
    WINDOW_CELLS_AT_ONCE `cells` together (at least one): the host holds a few rasters whatever the scene's extent.
    Yields the results wave by wave, in no particular order."""
    waves, wave, total = [], [], 0
    for index in np.argsort(cells)[::-1]:
        if wave and total + cells[index] > WINDOW_CELLS_AT_ONCE:
            waves.append(wave)
            wave, total = [], 0
        wave.append(index)
        total += cells[index]
    waves.append(wave)
    with ThreadPoolExecutor(max(1, min(max(len(w) for w in waves), os.cpu_count() or 1))) as pool:
        for wave in waves:
            yield from pool.map(lambda i: function(items[i]), wave)


def _window_cells(mask: np.ndarray) -> int:
    """Cells of the bounding box of a 2D mask's set cells."""
    rows, columns = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return int((rows[-1] - rows[0] + 1) * (columns[-1] - columns[0] + 1)) if rows.size else 0


def _nearest_cell(has: np.ndarray, within: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For every cell of `within` [H, W] (default all; in flat order): the distance (cells, float64) to the nearest
    cell of `has & within` [H, W] and that cell's flat index (int64); inf and 0 where there is none.

    SciPy's feature transform over the bounding box of `within` (sources and targets lie inside); the distances
    from its indices, as SciPy computes them (the root of a sum of squared integer offsets): the same numbers.
    """
    if within is None:
        rows = columns = None
        window, features = (slice(0, has.shape[0]), slice(0, has.shape[1])), has
        count = has.size
    else:
        rows, columns = np.nonzero(within)
        if rows.size == 0:
            return np.zeros(0), np.zeros(0, np.int64)
        window = (slice(rows.min(), rows.max() + 1), slice(columns.min(), columns.max() + 1))
        features = has[window] & within[window]
        rows, columns, count = rows - window[0].start, columns - window[1].start, rows.size
    if not features.any():
        return np.full(count, np.inf), np.zeros(count, np.int64)
    nearest = ndimage.distance_transform_edt(~features, return_distances=False, return_indices=True)  # [2, h, w] int32
    if rows is None:  # every cell, a block of rows at a time (the host holds the outputs and a block of temporaries)
        distance, source = np.empty(has.size), np.empty(has.size, np.int64)
        height, width = has.shape
        block = max(1, 2**20 // width)
        for first in range(0, height, block):
            last = min(first + block, height)
            rows, columns = np.repeat(np.arange(first, last), width), np.tile(np.arange(width), last - first)
            cells = slice(first * width, last * width)
            distance[cells], source[cells] = _distance_and_index(nearest[0, first:last].reshape(-1), nearest[1, first:last].reshape(-1),
                                                                 rows, columns, width)
        return distance, source
    source_rows, source_columns = nearest[0][rows, columns], nearest[1][rows, columns]
    del nearest
    distance, source = _distance_and_index(source_rows, source_columns, rows, columns, has.shape[1])
    return distance, source + window[0].start * has.shape[1] + window[1].start


def _distance_and_index(source_rows, source_columns, rows, columns, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The distance [n] float64 from cells (rows, columns) [n] to their sources [n], as SciPy's distance transform
    computes it (the root of the sum of the squared offsets, each exact in float64), and the sources' flat indices."""
    offset = (source_rows.astype(np.int64) - rows).astype(np.float64)
    distance = offset * offset
    offset = (source_columns.astype(np.int64) - columns).astype(np.float64)
    distance += offset * offset
    return np.sqrt(distance, out=distance), source_rows.astype(np.int64) * width + source_columns
