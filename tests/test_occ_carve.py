"""Object carving and ground completion, on hand-built geometry whose answer is known.

The object: a 4 x 2 x 2 m annotation box holding an L-shaped solid (a full-length lower block
and a rear upper block); the front-top quarter of the box is empty, like the space over a
car's bonnet. A 32-beam LiDAR drives past it on a road 8 m to the side, with a wall behind it.
"""

import numpy as np
import torch

from uniscene.occ_label import carve

from uniscene.boxes import Boxes
from uniscene.classes import GROUND_CLASSES, OCC_CLASS_ID
from uniscene.geometry import make_transform
from uniscene.occ_label.aggregate import STATIC
from uniscene.occ_label.carve import carve_objects, range_images
from uniscene.occ_label.ground import fill_ground

BOX_CENTER = np.array([0.0, 0.0, 1.0])
SOLIDS = [((-2.0, -1.0, 0.0), (2.0, 1.0, 1.0)), ((-2.0, -1.0, 1.0), (0.0, 1.0, 2.0))]  # world-axis (lower, upper)
WALL_Y_M = 12.0
SENSOR_HEIGHT_M = 1.84
CAR, BARRIER = OCC_CLASS_ID["car"], OCC_CLASS_ID["barrier"]
TWIN_CENTER = np.array([0.0, WALL_Y_M + 5.0, 1.0])


def _cast(origin: np.ndarray, directions: np.ndarray, solids) -> tuple[np.ndarray, np.ndarray]:
    """Range [N] (inf: no hit) and whether the hit is on the object [N], from one origin."""
    best = np.full(len(directions), np.inf)
    on_object = np.zeros(len(directions), bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        ground = np.where(directions[:, 2] < 0, -origin[2] / directions[:, 2], np.inf)
        wall = np.where(directions[:, 1] > 0, (WALL_Y_M - origin[1]) / directions[:, 1], np.inf)
        best = np.minimum(ground, wall)
        for lower, upper in solids:
            t0, t1 = (np.array(lower) - origin) / directions, (np.array(upper) - origin) / directions
            t_in, t_out = np.nanmax(np.minimum(t0, t1), 1), np.nanmin(np.maximum(t0, t1), 1)
            hit = (t_in <= t_out) & (t_in > 0) & (t_in < best)
            best[hit], on_object[hit] = t_in[hit], True
    return best, on_object


def _carve(interior_step_m=0.1, solids=SOLIDS, box_class=CAR, mirror=True, prior_free=0.3, prior_hit=0.1, hidden_twin=False, floor_m=0.0,
           road_y=-8.0, box_center=BOX_CENTER, box_size=(2.0, 4.0, 2.0), cell_m=0.1, wide=True):
    """Carve the box from 15 sweeps along the road (at y = road_y). hidden_twin: a second box of the
    same class behind the wall, which no ray reaches. cell_m, wide: the carving cell and column rule."""
    elevation = np.deg2rad(np.linspace(-30.67, 10.67, 32))
    azimuth = 2 * np.pi * np.arange(720) / 720
    az, el = np.meshgrid(azimuth, elevation, indexing="ij")
    directions = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1).reshape(-1, 3)
    rings = np.tile(np.arange(32), len(azimuth))
    points, ring, sweep, slot, box_points, poses = [], [], [], [], [], []
    for s, x in enumerate(np.linspace(-14.0, 14.0, 15)):
        origin = np.array([x, road_y, SENSOR_HEIGHT_M])
        rng, on_object = _cast(origin, directions, solids)
        keep = np.isfinite(rng) & (rng < 60)
        hits = directions[keep] * rng[keep, None]
        points.append(hits)
        ring.append(rings[keep])
        sweep.append(np.full(keep.sum(), s))
        slot.append(np.where(on_object[keep], 0, STATIC))
        box_points.append(hits + origin - box_center)
        poses.append(make_transform(np.eye(3), origin))
    as_tensor = lambda parts, dtype: torch.as_tensor(np.concatenate(parts), dtype=dtype)  # noqa: E731
    centers = [box_center, TWIN_CENTER] if hidden_twin else [box_center]
    slots = len(centers)
    boxes = Boxes(np.broadcast_to(np.stack(centers), (15, slots, 3)).copy(), np.broadcast_to(box_size, (15, slots, 3)).astype(np.float32),
                  np.broadcast_to([1.0, 0, 0, 0], (15, slots, 4)).copy(), np.ones((15, slots), bool))
    images = range_images(as_tensor(points, torch.float32), as_tensor(ring, torch.long), as_tensor(sweep, torch.long),
                          as_tensor(slot, torch.long), len(poses))
    return carve_objects(images, as_tensor(slot, torch.long), as_tensor(box_points, torch.float32), np.stack(poses), boxes,
                         torch.full((slots,), box_class), torch.full((slots,), cell_m), torch.full((slots,), wide), interior_step_m, floor_m,
                         mirror, prior_free, prior_hit)


def test_carving_empties_the_space_over_the_bonnet_and_keeps_the_solid():
    shapes = _carve()
    points = shapes.points.numpy() + BOX_CENTER  # world frame
    assert (shapes.slot == 0).all()
    # nothing deeper than two cells inside the empty front-top quarter (its far floor corner is
    # shadowed by the lower block's top edge for rays from the road side)
    assert not _in_notch(points).any()
    assert _farthest_solid_sample(points) <= 0.1 + 1e-5  # every part of the true solid keeps a point within a cell


def _in_notch(points):
    """Points (world frame of the first box) deep inside the empty front-top quarter of the L."""
    return (points[:, 0] > 0.25) & (points[:, 0] < 1.75) & (np.abs(points[:, 1]) < 0.75) & (points[:, 2] > 1.25) & (points[:, 2] < 1.75)


def _farthest_solid_sample(points, solids=SOLIDS):
    """How far (max-norm, metres) the sample of the true solid farthest from any carved point is."""
    farthest = 0.0
    for lower, upper in solids:
        axes = [np.arange(lo + 0.1, hi - 0.1 + 1e-6, 0.1) for lo, hi in zip(lower, upper)]
        samples = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        gap = torch.cdist(torch.as_tensor(samples, dtype=torch.float32), torch.as_tensor(points, dtype=torch.float32), p=float("inf"))
        farthest = max(farthest, float(gap.min(1).values.max()))
    return farthest


def test_a_bonnet_ends_at_its_returns_not_at_its_cells_edge():
    """A 2 m box of 0.1 m cells, solid up to the cell holding a bonnet whose top lies 3 cm into it
    (box frame z = 0.03; the cell spans 0 to 0.1), returns on that top over the half x < 0. A 0.6
    cube would reach z = 0.08, and a voxel layer starting between the two would count it: the
    cells that hold returns end at them, the others keep the cube."""
    grids = carve._BoxGrids(torch.ones(1, 3), torch.full((1, 3), 20), torch.full((1, 3), 0.1))
    cell = torch.stack(torch.meshgrid(torch.arange(20), torch.arange(20), torch.arange(11), indexing="ij"), -1).reshape(-1, 3)
    slot = torch.zeros(len(cell), dtype=torch.long)
    xy = (torch.stack(torch.meshgrid(torch.arange(10), torch.arange(20), indexing="ij"), -1).reshape(-1, 2) + 0.5) * 0.1 - 1
    returns = torch.cat([xy, torch.full((len(xy), 1), 0.03)], 1)
    points, _ = carve._solid_points(grids, slot, cell, grids.key(cell, slot), 0.2,
                                    carve._return_extent(grids, returns, torch.zeros(len(returns), dtype=torch.long)))
    top_with_returns = points[points[:, 0] < 0, 2].max()
    top_without = points[points[:, 0] > 0, 2].max()
    assert abs(float(top_with_returns) - 0.03) < 1e-6 and abs(float(top_without) - 0.08) < 1e-6


def test_carving_does_not_depend_on_how_the_pairs_are_batched(monkeypatch):
    """(sweep, cell) pairs carved a few thousand at a time give the same solids as all at once: a cell is
    carved when any sweep saw through it, whichever batch that sweep fell in."""
    whole = _carve(hidden_twin=True)
    monkeypatch.setattr(carve, "PAIRS_PER_BATCH", 5000)
    batched = _carve(hidden_twin=True)
    assert whole.points.shape[0] > 1000
    torch.testing.assert_close(batched.points, whole.points, rtol=0, atol=0)
    torch.testing.assert_close(batched.slot, whole.slot, rtol=0, atol=0)


def test_rings_are_not_interpolated_under_an_overhang(monkeypatch):
    """A body from 1 m to 2 m over a narrow axle block, like a trailer's, seen from the side 40 m
    away, where the rings lie 0.9 m apart: a lower ring passes under the body and returns from the
    axle, 0.7 m farther than the upper ring's return from the body's side. Interpolating between the
    two carves the body's lower edge (measured: a true sample 0.22 m from the solid); the overhang
    rule keeps it (the nearer return counts; measured 0.05 m)."""
    solids = [((-2.0, -1.0, 1.0), (2.0, 1.0, 2.0)), ((-1.0, -0.3, 0.0), (1.0, 0.3, 1.0))]
    kept = _carve(solids=solids, prior_free=0, road_y=-40.0).points.numpy() + BOX_CENTER
    assert _farthest_solid_sample(kept, solids[:1]) <= 0.1 + 1e-5
    monkeypatch.setattr(carve, "OVERHANG_M", float("inf"))
    interpolated = _carve(solids=solids, prior_free=0, road_y=-40.0).points.numpy() + BOX_CENTER
    assert _farthest_solid_sample(interpolated, solids[:1]) > 0.2


def test_a_ring_through_a_cell_carves_it_whatever_the_ring_below_hit(monkeypatch):
    """A motorcycle 33 m from the road: a frame up to 1 m and, in the middle, a rider from 1 m to
    1.3 m. The rings lie 0.77 m apart there; one passes just over the frame, through the layer of
    cells from 1 m to 1.05 m ahead of and behind the rider, while the ring below it hits the frame's
    side. Between the two rings the nearer return, the frame's, keeps that layer; along the ring that
    passed through it, it is free (measured: 96 of its points left, against 1,648 without the ray
    test). The true solid keeps a point within 0.085 m either way."""
    solids = [((-1.0, -0.175, 0.0), (1.0, 0.175, 1.0)), ((-0.4, -0.4, 1.0), (0.1, 0.4, 1.3))]
    center = np.array([0.0, 0.0, 0.75])

    def layer_over_the_frame():
        shapes = _carve(solids=solids, box_class=OCC_CLASS_ID["motorcycle"], mirror=False, prior_free=0, road_y=-33.0,
                        box_center=center, box_size=(0.8, 2.0, 1.5), cell_m=0.05, wide=False)
        points = shapes.points.numpy() + center
        beside_rider = (points[:, 0] > 0.15) | (points[:, 0] < -0.45)
        assert _farthest_solid_sample(points, solids) <= 0.085 + 1e-5
        return int((beside_rider & (points[:, 2] > 1.01)).sum())

    with_ray = layer_over_the_frame()
    monkeypatch.setattr(carve, "RAY_THROUGH_CELL", 0.0)
    assert with_ray < 0.1 * layer_over_the_frame()


def test_range_image_columns_are_centred_on_the_firings():
    """Two sweeps of 720 firings a turn, from azimuth -90 deg as the demo's LiDAR (its firings fall on
    the edges of columns binned from azimuth zero, each either side by rounding) and from a third of a
    column past it: each firing gets a column of its own, at its centre."""
    firings = 720
    points, sweep = [], []
    for s, offset in enumerate((0.0, 1 / 3)):
        azimuth = -np.pi / 2 - 2 * np.pi * (np.arange(firings) + offset) / firings
        distance = 10.0 + 0.01 * np.arange(firings)  # firing k returns from 10 + k/100 m
        points.append(np.stack([np.cos(azimuth), np.sin(azimuth), np.zeros(firings)], 1) * distance[:, None])
        sweep.append(np.full(firings, s))
    points, sweep = torch.as_tensor(np.concatenate(points), dtype=torch.float32), torch.as_tensor(np.concatenate(sweep))
    images = range_images(points, torch.zeros(len(points), dtype=torch.long), sweep, torch.full_like(sweep, STATIC), 2)
    assert images.ranges.shape == (2, 1, firings)
    assert (images.ranges > 0).all()  # one firing per column: none shares one, none is empty
    np.testing.assert_allclose(np.sort(images.ranges.numpy(), axis=2), np.broadcast_to(10.0 + 0.01 * np.arange(firings), (2, 1, firings)), atol=1e-4)
    # the firings lie at the columns' centres
    centre = (torch.atan2(points[:, 1], points[:, 0]) + np.pi) / (2 * np.pi) * firings - images.phase[sweep]
    np.testing.assert_allclose(np.abs(centre.numpy() - np.round(centre.numpy())), 0.0, atol=1e-3)


def test_objects_are_carved_symmetrically_where_the_lidar_could_not_see():
    """A thin, full-length slab down the middle of the box, like a bicycle: the rays from the road
    carve the near half; the far half, behind the slab, only its mirror image says is empty.
    The cells on the ground are the floor slice's (a cell whose corners touch the ground is never
    seen wholly in front of it), as in the pipeline."""
    slab = [((-2.0, -0.1, 0.0), (2.0, 0.1, 2.0))]

    def halves(shapes):
        y = shapes.points.numpy()[:, 1]
        return int((y < -0.3).sum()), int((y > 0.3).sum())  # (near, far) of the slab

    near, far = halves(_carve(solids=slab, mirror=False, prior_free=0, floor_m=0.1))
    assert far > 10 * near  # the far side, occluded by the slab, stays whole
    near, far = halves(_carve(solids=slab, mirror=True, prior_free=0, floor_m=0.1))
    assert far == near  # carved as its mirror image
    near, far = halves(_carve(solids=slab, box_class=BARRIER, mirror=True, prior_free=0, floor_m=0.1))
    assert far == near  # every class is mirrored, barriers too


def test_the_floor_slice_is_solid_where_its_mirror_image_was_hit():
    """The whole slab as the floor slice (solid only where hit): the rays hit its near face only;
    its far face, like a car's far wheels under the body, is there through its mirror image."""
    slab = [((-2.0, -0.1, 0.0), (2.0, 0.1, 2.0))]

    def far_face(shapes):
        y = shapes.points.numpy()[:, 1]
        return int(((y > 0) & (y < 0.1)).sum())

    alone = far_face(_carve(solids=slab, mirror=False, prior_free=0, floor_m=2.0))  # only the end faces' hits (measured: 288)
    assert far_face(_carve(solids=slab, mirror=True, prior_free=0, floor_m=2.0)) > 5 * alone  # (measured: 4760)


def test_the_class_prior_carves_what_no_ray_saw_as_the_seen_instances_of_the_class_were():
    """A twin of the L-shaped car behind the wall: no ray reaches it, so carving alone keeps its box
    whole; the class prior empties its bonnet notch, as the seen car's was, and keeps its solid."""
    def twin(shapes):
        return shapes.points.numpy()[shapes.slot.numpy() == 1] + BOX_CENTER  # as if it stood where the first one does

    assert _in_notch(twin(_carve(hidden_twin=True, prior_free=0))).sum() > 100
    with_prior = twin(_carve(hidden_twin=True))
    assert not _in_notch(with_prior).any()
    assert _farthest_solid_sample(with_prior) <= 0.1 + 1e-5


def test_ground_fill_closes_holes_at_the_ground_height_but_not_under_buildings():
    road = OCC_CLASS_ID["driveable_surface"]
    xy = np.stack(np.meshgrid(np.arange(0, 40, 0.2), np.arange(0, 20, 0.2), indexing="ij"), -1).reshape(-1, 2) + 0.1
    hole = np.hypot(xy[:, 0] - 10, xy[:, 1] - 10) < 3  # a shadow behind a car
    building = (xy[:, 0] > 30) & (xy[:, 0] < 35) & (xy[:, 1] > 5) & (xy[:, 1] < 15)  # its footprint holds no ground
    ground = xy[~hole & ~building]
    points = np.concatenate([np.c_[ground, np.full(len(ground), 0.3)],
                             np.c_[xy[building], np.full(building.sum(), 4.0)]])  # its roof
    classes = np.r_[np.full(len(ground), road), np.full(building.sum(), OCC_CLASS_ID["manmade"])]
    new_points, new_classes = fill_ground(torch.as_tensor(points, dtype=torch.float32), torch.as_tensor(classes), 0.2, 5.0)
    filled = new_points.numpy()
    assert len(filled) == hole.sum()  # exactly the hole's cells
    assert np.all(np.hypot(filled[:, 0] - 10, filled[:, 1] - 10) < 3)
    np.testing.assert_allclose(filled[:, 2], 0.3, atol=1e-5)
    assert set(new_classes.tolist()) == {road} and road in GROUND_CLASSES
    # a hole wider than fill_m stays open in its middle
    far = fill_ground(torch.as_tensor(points, dtype=torch.float32), torch.as_tensor(classes), 0.2, 1.0)[0].numpy()
    assert 0 < len(far) < hole.sum() and np.all(np.hypot(far[:, 0] - 10, far[:, 1] - 10) > 1.9)


def test_ground_fill_takes_the_class_of_the_nearest_ground_in_the_same_map_area():
    """A road (y < 10) and a sidewalk (y >= 10) with an unseen band across their kerb, 3 m deep on the road and 6 m on the sidewalk."""
    road, sidewalk = OCC_CLASS_ID["driveable_surface"], OCC_CLASS_ID["sidewalk"]
    xy = np.stack(np.meshgrid(np.arange(0, 20, 0.2), np.arange(0, 20, 0.2), indexing="ij"), -1).reshape(-1, 2) + 0.1
    hole = (xy[:, 1] > 7) & (xy[:, 1] < 16)
    points = torch.as_tensor(np.c_[xy[~hole], np.zeros((~hole).sum())], dtype=torch.float32)
    classes = torch.as_tensor(np.where(xy[~hole, 1] < 10, road, sidewalk))

    def area_of(p):  # the map: the walkway starts at the kerb
        return (p[:, 1] >= 10).long() + 1

    plain_points, plain_classes = fill_ground(points, classes, 0.2, 8.0)
    map_points, map_classes = fill_ground(points, classes, 0.2, 8.0, area_of)
    torch.testing.assert_close(plain_points, map_points)  # the same cells, at the same height
    truth = np.where(map_points[:, 1].numpy() < 10, road, sidewalk)
    wrong = plain_classes.numpy() != truth
    assert wrong.sum() == 8 * 100  # without the map the road reaches onto the sidewalk up to the band's middle: 8 rows of 100 cells
    np.testing.assert_array_equal(map_classes.numpy(), truth)


def test_the_floor_slice_of_an_unseen_instance_is_solid_where_its_class_was_hit():
    """The lower block of the L as the floor slice (solid only where hit): the hidden twin has no hits, so without the
    class prior its floor is empty; with it, the twin's floor is where the seen car's floor was hit (the mirror fills
    the seen car's far side), as a far car's wheels are where the near cars' were."""
    def floor(shapes, slot):  # the 0.1 m cells that hold the floor's points (the seen car's cubes reach to its returns)
        points = shapes.points.numpy()[shapes.slot.numpy() == slot]
        cells = np.clip(np.floor((points[points[:, 2] < 0.0] + [2.0, 1.0, 1.0]) / 0.1), 0, [39, 19, 19])  # box frame: z < 0
        return {tuple(c) for c in cells.astype(int)}

    assert not floor(_carve(hidden_twin=True, floor_m=1.0, prior_hit=0), 1)
    shapes = _carve(hidden_twin=True, floor_m=1.0)
    seen, unseen = floor(shapes, 0), floor(shapes, 1)
    assert len(seen) > 500
    assert len(seen & unseen) > 0.95 * len(seen) and len(unseen - seen) < 0.01 * len(unseen)
