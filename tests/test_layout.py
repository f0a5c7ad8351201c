"""BEV layout core on a hand-written map expansion and hand-made boxes (no dataset needed)."""

import numpy as np
import pytest
from scipy.ndimage import binary_dilation, binary_erosion

from uniscene.classes import LAYOUT_CHANNEL_NAMES, MAP_LAYER_NAMES
from uniscene.data.handmade import write_map_expansion
from uniscene.errors import UserError
from uniscene.geometry import make_transform, yaw_to_quaternion
from uniscene.grid import OccGrid
from uniscene.data.maps import LINE_LAYERS, load_map, rasterise_map, scene_region_m
from uniscene.layout.raster import LayoutSettings, box_footprints, layout_dataset, rasterise_layout, warp_map
from uniscene.layout.edit import LayoutBoxes, add, describe, drop, frame_range, move, reclass, redraw_objects
from uniscene.settings import default_settings
from uniscene.store import open_store, write_store

GRID = OccGrid((-40.0, -40.0, -1.0, 40.0, 40.0, 5.4), 0.4)
MAP_NAME = "boston-seaport"


def _square(cx, cy, half, yaw=0.0):
    corners = np.array([(-half, -half), (half, -half), (half, half), (-half, half)])
    rotation = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
    return (corners @ rotation.T + (cx, cy)).tolist()


@pytest.fixture(scope="module")
def town(tmp_path_factory):
    """A crossing of two roads with walkways, a car park, a crossing, dividers; and a drive through it."""
    root = tmp_path_factory.mktemp("layout_map")
    polygons = {
        "drivable_area": [[(500, 495), (800, 495), (800, 505), (500, 505)], [(645, 300), (655, 300), (655, 700), (645, 700)]],
        "walkway": [[(500, 506), (640, 506), (640, 510), (500, 510)], _square(600, 470, 12, 0.4)],
        "carpark_area": [_square(700, 530, 15, 0.9)],
        "ped_crossing": [[(630, 495), (634, 495), (634, 505), (630, 505)]],
        "stop_line": [[(627, 495), (628, 495), (628, 500), (627, 500)]],
        "road_block": [[(500, 495), (640, 495), (640, 505), (500, 505)]],
    }
    # The lane divider leaves the scene's region and comes back: the region cuts it into pieces.
    lines = {"lane_divider": [[(510, 500), (900, 500), (900, 502), (520, 502)]], "road_divider": [[(650, 320), (650, 680)]]}
    write_map_expansion(root, MAP_NAME, polygons, lines)
    num_frames = 6
    yaw = np.linspace(0.1, 1.3, num_frames)
    position = np.stack([np.linspace(600, 650, num_frames), np.linspace(500, 520, num_frames), np.zeros(num_frames)], 1)
    world_from_ego = make_transform(yaw_to_quaternion(yaw), position)  # [T, 4, 4]
    nusc_map = load_map(root, MAP_NAME)
    raster = rasterise_map(nusc_map, scene_region_m(world_from_ego, GRID, 10.0), 0.1)
    return root, nusc_map, raster, world_from_ego


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_map_warp_matches_devkit_at_each_pose(town):
    """The resampled scene raster against nuscenes-devkit's own mask at each frame's pose (the slow reference)."""
    _, nusc_map, raster, world_from_ego = town
    layout = warp_map(raster, world_from_ego, GRID)  # [T, L, X, Y]
    half_cell = np.array([GRID.voxel_size_m / 2, GRID.voxel_size_m / 2, 0, 1])
    polygon_layers = [name for name in MAP_LAYER_NAMES if name not in LINE_LAYERS]  # the devkit cannot draw split lines
    for t, pose in enumerate(world_from_ego):
        # The devkit fills a pixel whose corner-based coordinate is in the polygon: shift by half a cell.
        centre = pose @ half_cell
        yaw_deg = np.rad2deg(np.arctan2(pose[1, 0], pose[0, 0]))
        reference = nusc_map.get_map_mask((centre[0], centre[1], 80.0, 80.0), yaw_deg, polygon_layers, (200, 200))
        reference = reference.transpose(0, 2, 1).astype(bool)  # [L, H=y, W=x] -> [L, X, Y]
        for name, expected in zip(polygon_layers, reference):
            ours = layout[t, MAP_LAYER_NAMES.index(name)]
            square = np.ones((3, 3), bool)  # the devkit rounds vertices to whole cells: the edges may differ
            edge = binary_dilation(expected, square) & ~binary_erosion(expected, square)
            assert not np.any((ours != expected) & ~edge), (t, name)
            if expected.sum() > 400:
                assert _iou(ours, expected) > 0.85, (t, name)
        # Lines: every divider cell lies on its line in the world.
        cells_world = GRID.voxel_centers()[:, :, 0, :2] @ pose[:2, :2].T + pose[:2, 3]  # [X, Y, 2]
        road_divider = cells_world[layout[t, MAP_LAYER_NAMES.index("road_divider")]]
        lane_divider = cells_world[layout[t, MAP_LAYER_NAMES.index("lane_divider")]]
        assert np.all(np.abs(road_divider[:, 0] - 650) < 0.5)  # half a cell diagonal + half the line
        assert np.all(np.minimum(np.abs(lane_divider[:, 1] - 500), np.abs(lane_divider[:, 1] - 502)) < 0.5)
    assert layout[:, MAP_LAYER_NAMES.index("road_divider")].sum() > 100 and layout[:, MAP_LAYER_NAMES.index("lane_divider")].sum() > 100
    # Orientation: the first ego stands at (600, 500) facing yaw 0.1; the walkway strip north of the road
    # (y 506..510) is 8 m to its left (+y), the square walkway south of it (y < 486) is further right.
    walkway = layout[0, MAP_LAYER_NAMES.index("walkway")]
    left, right = GRID.index_of(np.array([[0.0, 8.0, 0.0], [0.0, -8.0, 0.0]]))[0]
    assert walkway[left[0], left[1]] and not walkway[right[0], right[1]]


def test_split_lines_are_drawn(town):
    _, _, raster, world_from_ego = town
    lane_divider = raster.masks[MAP_LAYER_NAMES.index("lane_divider")]
    assert lane_divider.sum() > 2 * (lane_divider.shape[1] - 200)  # both pieces inside the region


def _reference_footprints(world_from_ego, center, size, rotation, valid, klass, rule):
    """Slow, obvious: each box's corners in the ego frame as a polygon, then shapely per cell."""
    import shapely

    from uniscene.geometry import invert_transform, quaternion_to_matrix

    centres = GRID.voxel_centers()[:, :, 0, :2].reshape(-1, 2).astype(np.float64)
    half = GRID.voxel_size_m / 2
    cells = shapely.box(centres[:, 0] - half, centres[:, 1] - half, centres[:, 0] + half, centres[:, 1] + half)
    points = shapely.points(centres)
    out = np.zeros((len(world_from_ego), 10) + GRID.shape[:2], dtype=bool)
    for t, pose in enumerate(world_from_ego):
        ego_from_world = invert_transform(pose)
        for b in range(center.shape[1]):
            if not valid[t, b] or klass[b] < 0:
                continue
            w, l = size[t, b, :2]
            local = np.array([(l / 2, w / 2, 0), (-l / 2, w / 2, 0), (-l / 2, -w / 2, 0), (l / 2, -w / 2, 0)])
            world = local @ quaternion_to_matrix(rotation[t, b]).T + center[t, b]
            corners = (world @ ego_from_world[:3, :3].T + ego_from_world[:3, 3])[:, :2]
            footprint = shapely.Polygon(corners)
            near = np.flatnonzero(np.linalg.norm(centres - corners.mean(0), axis=1) < np.hypot(w, l) / 2 + half * 1.5)
            inside = np.zeros(len(centres), dtype=bool)
            if rule == "overlap":
                inside[near] = shapely.area(shapely.intersection(cells[near], footprint)) > 1e-9
            else:
                inside[near] = shapely.covers(footprint, points[near])
            out[t, klass[b]] |= inside.reshape(GRID.shape[:2])
    return out


def _random_boxes(rng, num_frames, num_boxes, world_from_ego):
    center = np.concatenate([world_from_ego[:, None, :2, 3] + rng.uniform(-45, 45, (num_frames, num_boxes, 2)),
                             rng.uniform(0, 2, (num_frames, num_boxes, 1))], -1)
    size = rng.uniform(0.4, 8.0, (num_frames, num_boxes, 3)).astype(np.float32)
    rotation = yaw_to_quaternion(rng.uniform(-np.pi, np.pi, (num_frames, num_boxes)))
    valid = rng.random((num_frames, num_boxes)) < 0.8
    klass = rng.integers(-1, 10, num_boxes)
    return center, size, rotation, valid, klass


@pytest.mark.parametrize("rule", ["overlap", "center"])
def test_box_footprints_match_shapely(town, rule):
    _, _, _, world_from_ego = town
    world_from_ego = world_from_ego[:3]
    rng = np.random.default_rng(0)
    boxes = _random_boxes(rng, len(world_from_ego), 30, world_from_ego)
    fast = box_footprints(world_from_ego, *boxes, GRID, rule=rule, frame_batch=2)
    slow = _reference_footprints(world_from_ego, *boxes, rule)
    assert slow.sum() > 1000
    assert (fast != slow).sum() <= 1e-3 * slow.sum()  # only cells touching an edge within float32 rounding may differ


def test_layout_store_round_trip(town, tmp_path):
    _, _, raster, world_from_ego = town
    rng = np.random.default_rng(1)
    center, size, rotation, valid, klass = _random_boxes(rng, len(world_from_ego), 5, world_from_ego)
    layout = rasterise_layout(raster, world_from_ego, center, size, rotation, valid, klass, GRID, default_settings(LayoutSettings))
    assert layout.shape == (len(world_from_ego), 18) + GRID.shape[:2] and layout.dtype == bool
    timestamp_us = np.arange(len(world_from_ego)) * 83_333
    dataset = layout_dataset(layout, timestamp_us, world_from_ego, center, size, rotation, valid, klass,
                             [f"token-{i}" for i in range(5)], GRID, {"scene": "hand-made"})
    path = write_store(tmp_path / "layout.zarr", dataset, stage="layout", config_subset={"grid": {}}, frame_chunk=8)
    read = open_store(path, stage="layout")
    assert read["layout"].dims == ("frame", "channel", "x", "y") and read["layout"].dtype == bool
    np.testing.assert_array_equal(read["layout"].values, layout)
    assert tuple(read.attrs["channel_names"]) == LAYOUT_CHANNEL_NAMES
    assert read["box_class"].dims == ("frame", "box") and read["box_class"].dtype == np.int8
    assert read.attrs["uniscene"]["stage"] == "layout"


def test_missing_map_expansion_names_the_download(tmp_path):
    with pytest.raises(UserError) as error:
        load_map(tmp_path, "singapore-onenorth")
    message = str(error.value)
    assert "nuScenes-map-expansion-v1.3" in message
    assert str(tmp_path / "maps" / "expansion" / "singapore-onenorth.json") in message


def _one_car(world_from_ego):
    """A parked car 10 m ahead of the first frame's ego, facing the same way (off the cell edges)."""
    num_frames = len(world_from_ego)
    center = (world_from_ego[0] @ np.array([10.1, 0.1, 0.8, 1.0]))[:3]
    yaw = np.arctan2(world_from_ego[0, 1, 0], world_from_ego[0, 0, 0])
    return LayoutBoxes(
        center=np.broadcast_to(center, (num_frames, 1, 3)).copy(),
        size=np.broadcast_to(np.float32([2.0, 4.0, 1.6]), (num_frames, 1, 3)).copy(),
        rotation=np.broadcast_to(yaw_to_quaternion(yaw), (num_frames, 1, 4)).copy(),
        valid=np.ones((num_frames, 1), bool), klass=np.zeros((num_frames, 1), np.int8),
        instance_token=np.array(["car-token"], dtype=object), world_from_ego=world_from_ego,
        timestamp_us=np.arange(num_frames) * 83_333,
    )


def _footprint_centre_m(channel: np.ndarray) -> np.ndarray:
    cells = GRID.voxel_centers()[:, :, 0, :2]
    return cells[channel].mean(0)


def test_layout_edits(town):
    _, _, _, world_from_ego = town
    boxes = _one_car(world_from_ego)
    layout = np.zeros((len(world_from_ego), 18) + GRID.shape[:2], dtype=bool)
    car, truck = LAYOUT_CHANNEL_NAMES.index("car"), LAYOUT_CHANNEL_NAMES.index("truck")
    base = redraw_objects(layout, boxes, GRID, rule="center")
    assert base[0, car].sum() == 10 * 5  # 4 m x 2 m at 0.4 m: 10 x 5 cell centres
    assert redraw_objects(layout, boxes, GRID, rule="overlap")[0, car].sum() == 11 * 6  # 11 x 6 cells touched
    np.testing.assert_allclose(_footprint_centre_m(base[0, car]), [10.1, 0.1], atol=0.25)

    frames = frame_range("2:4", len(world_from_ego))
    dropped = redraw_objects(layout, drop(boxes, "car", frames), GRID, rule="center")
    assert not dropped[2:4, car].any()
    np.testing.assert_array_equal(dropped[[0, 1, 4, 5]], base[[0, 1, 4, 5]])

    moved = redraw_objects(layout, move(boxes, "0", frame_range("0:1", len(world_from_ego)), (0.0, 3.0), 90.0), GRID, rule="center")
    np.testing.assert_allclose(_footprint_centre_m(moved[0, car]), [10.1, 3.1], atol=0.25)
    extent = np.ptp(GRID.voxel_centers()[:, :, 0, :2][moved[0, car]], axis=0)
    assert extent[1] > extent[0]  # turned by 90 degrees: now longer across than along

    reclassed = redraw_objects(layout, reclass(boxes, "car-tok", frames, "truck"), GRID, rule="center")
    np.testing.assert_array_equal(reclassed[2:4, truck], base[2:4, car])
    assert not reclassed[2:4, car].any() and not reclassed[[0, 1, 4, 5], truck].any()

    added = add(boxes, frame_range("1:", len(world_from_ego)), "pedestrian", (5.0, -2.0), 90.0, 1.0)
    pedestrian = LAYOUT_CHANNEL_NAMES.index("pedestrian")
    drawn = redraw_objects(layout, added, GRID, rule="center")
    assert drawn[0, pedestrian].sum() == 0 and drawn[1:, pedestrian].sum() > 0
    np.testing.assert_allclose(_footprint_centre_m(drawn[1, pedestrian]), [5.0, -2.0], atol=0.3)
    assert [row["class"] for row in describe(added, frame_range(None, len(world_from_ego)))] == ["car", "pedestrian"]

    with pytest.raises(UserError, match="unknown object class"):
        reclass(boxes, "0", frames, "spaceship")
    with pytest.raises(UserError, match="out of range"):
        drop(boxes, "5", frames)
    with pytest.raises(UserError, match="no frame"):
        frame_range("4:2", len(world_from_ego))
