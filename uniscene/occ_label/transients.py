"""Transients: static cells that other sweeps saw through, such as the trail of a car that no box held.

nuScenes annotates an object only while it is near and has LiDAR points, so a car driving 55 m
away leaves its returns among the static points. Its cells take the class of the nearest
labelled point, usually the road under it, and would stand as road 0.3 - 1.5 m above the road
in every frame. Sweeps taken before the car came or after it left see through those cells to the
ground behind them: a cell is a transient when at least `occ_label.transient_sweeps` sweeps
returned more than `transient_margin_m` beyond it from all six rays around its direction (the two
rings around it, in its azimuth column and the two beside it), so that neither the ground
between two rings nor the edge of a wall or a tree, which a ray beside it passes, is seen through.

Measured on every second demo frame (3 scenes, 110 frames): IoU 92.6 -> 93.3, mIoU 85.1 -> 85.2
(driveable_surface 94.6 -> 96.4); with one sweep enough, 85.23 / 93.37 (kept at two for real
sweeps' noise).

Letters: S sweeps, C cells.
"""

import numpy as np
import torch

from uniscene.geometry import invert_transform
from uniscene.occ_label.carve import RangeImages


def seen_through(cells: torch.Tensor, images: RangeImages, scene_from_sensor: np.ndarray, margin_m: float, reach_m: float,
                 pairs_per_batch: int = 16_000_000) -> torch.Tensor:
    """How many sweeps saw through each cell: cells [C, 3] scene frame -> [C] int64.

    Each sweep looks at the cells within `reach_m` of its sensor; sweeps go in batches of about
    `pairs_per_batch` (sweep, cell) pairs.
    """
    count = torch.zeros(cells.shape[0], dtype=torch.long, device=cells.device)
    sensor_from_scene = torch.as_tensor(invert_transform(scene_from_sensor), dtype=torch.float32, device=cells.device)
    per_batch = max(1, pairs_per_batch // max(1, cells.shape[0]))
    for start in range(0, len(scene_from_sensor), per_batch):
        matrix = sensor_from_scene[start:start + per_batch]  # [b, 4, 4]
        position = torch.einsum("bij,cj->bci", matrix[:, :3, :3], cells) + matrix[:, None, :3, 3]  # [b, C, 3]
        distance = position.norm(dim=2)
        sweep, cell = torch.nonzero(distance <= reach_m, as_tuple=True)
        seen = distance[sweep, cell] + margin_m < images.nearest_around(start + sweep, position[sweep, cell])
        count += torch.bincount(cell[seen], minlength=cells.shape[0])
    return count
