"""Transient static cells on hand-built geometry: a car that drives through the first sweeps and no
box holds, beside the L-shaped solid, the road and the wall of test_occ_carve, which stay."""

import numpy as np
import torch

from test_occ_carve import SENSOR_HEIGHT_M, SOLIDS, _cast
from uniscene.geometry import make_transform
from uniscene.occ_label import sparse
from uniscene.occ_label.aggregate import STATIC
from uniscene.occ_label.carve import range_images
from uniscene.occ_label.transients import seen_through

PASSING_CAR = ((6.0, -4.0, 0.0), (10.0, -2.0, 1.5))  # world-axis (lower, upper), there in the first sweeps only
PRESENT_SWEEPS = 3


def _sweeps():
    elevation = np.deg2rad(np.linspace(-30.67, 10.67, 32))
    azimuth = 2 * np.pi * np.arange(720) / 720
    az, el = np.meshgrid(azimuth, elevation, indexing="ij")
    directions = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1).reshape(-1, 3)
    rings = np.tile(np.arange(32), len(azimuth))
    points, ring, sweep, poses = [], [], [], []
    for s, x in enumerate(np.linspace(-14.0, 14.0, 15)):
        origin = np.array([x, -8.0, SENSOR_HEIGHT_M])
        solids = SOLIDS + [PASSING_CAR] if s < PRESENT_SWEEPS else SOLIDS
        distance, _ = _cast(origin, directions, solids)
        keep = np.isfinite(distance) & (distance < 60)
        points.append(directions[keep] * distance[keep, None])
        ring.append(rings[keep])
        sweep.append(np.full(keep.sum(), s))
        poses.append(make_transform(np.eye(3), origin))
    return [torch.as_tensor(np.concatenate(a)) for a in (points, ring, sweep)] + [np.stack(poses)]


def test_the_passing_cars_cells_are_seen_through_and_nothing_else_is():
    points, ring, sweep, poses = _sweeps()
    points = points.float()
    images = range_images(points, ring.long(), sweep.long(), torch.full_like(sweep, STATIC).long(), len(poses))
    scene = points + torch.as_tensor(poses[:, :3, 3], dtype=torch.float32)[sweep]
    _, cells, _ = sparse.mean_by_key(sparse.pack(sparse.cells_of(scene, 0.2)), scene)  # the static cells, as occ_label bins them
    count = seen_through(cells, images, poses, margin_m=0.5, reach_m=60.0)
    lower, upper = torch.tensor(PASSING_CAR[0]), torch.tensor(PASSING_CAR[1])
    on_car = ((cells >= lower - 0.01) & (cells <= upper + 0.01)).all(1)
    standing = on_car & (cells[:, 2] > 0.3)  # its cells at the road's height are road cells too
    assert standing.sum() > 100
    assert (count[standing] >= 2).float().mean() > 0.98  # 101 of 102: a cell on its top edge, which later rays pass just over
    assert (count[~on_car] < 2).all()  # the road between rings, the wall, the L-shaped solid and all their edges
