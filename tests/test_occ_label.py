"""occ_label core on a hand-built scene whose geometry is known exactly.

The scene: flat road (z = 0), a wall 14 m ahead, and a car driving across in front of the ego
car, which creeps forward. A 32-beam LiDAR is cast analytically at 20 Hz (every 10th sweep
labelled, as nuScenes' keyframes), two cameras at 12 Hz.
"""

import numpy as np
import pytest
from scipy import ndimage
import torch

from uniscene.boxes import Boxes
from uniscene.classes import FREE, LIDARSEG_CLASS_ID, OCC_CLASS_ID
from uniscene.geometry import invert_transform, make_transform, quaternion_to_matrix, yaw_to_quaternion
from uniscene.grid import OccGrid
from uniscene.occ_label.aggregate import STATIC, aggregate_sweeps
from uniscene.occ_label.label import LabelOptions, SceneArrays, build_surface, label_frames
from uniscene.occ_label.semantics import UNLABELLED, occ_classes_of_lidarseg
from uniscene.occ_label.sweeps import SweepArrays
from uniscene.settings import default_settings

GRID = OccGrid((-12.8, -12.8, -1.0, 19.2, 12.8, 4.6), 0.4)  # 80 x 64 x 14
WALL_X_M = 14.0
CAR_SIZE_WLH = (1.8, 4.2, 1.6)
EGO_SPEED_MPS = 1.0
CAR_SPEED_MPS = 3.0
DURATION_S = 2.0


def car_center(t_s):
    return np.array([8.0, -6.0 + CAR_SPEED_MPS * t_s, CAR_SIZE_WLH[2] / 2])


CAR_YAW = np.pi / 2  # drives along +y


def ego_pose(t_s):
    return make_transform(np.eye(3), [EGO_SPEED_MPS * t_s, 0.0, 0.0])


def cast_world(origins, directions, t_s):
    """Analytic ray cast: range [N] and occupancy class [N] (FREE: no hit)."""
    n = origins.shape[0]
    best = np.full(n, np.inf)
    cls = np.full(n, FREE)
    # ground
    t = np.where(directions[:, 2] < -1e-9, -origins[:, 2] / np.where(directions[:, 2] < -1e-9, directions[:, 2], -1), np.inf)
    hit = t < best
    best[hit], cls[hit] = t[hit], OCC_CLASS_ID["driveable_surface"]
    # wall: x = WALL_X_M facing the car, y in [-10, 10], z in [0, 4]
    t = np.where(directions[:, 0] > 1e-9, (WALL_X_M - origins[:, 0]) / np.where(directions[:, 0] > 1e-9, directions[:, 0], 1), np.inf)
    p = origins + directions * t[:, None]
    hit = (t < best) & (np.abs(p[:, 1]) <= 10) & (p[:, 2] >= 0) & (p[:, 2] <= 4)
    best[hit], cls[hit] = t[hit], OCC_CLASS_ID["manmade"]
    # car box (slab test in its frame)
    box_from_world = invert_transform(make_transform(yaw_to_quaternion(CAR_YAW), car_center(t_s)))
    o = origins @ box_from_world[:3, :3].T + box_from_world[:3, 3]
    d = directions @ box_from_world[:3, :3].T
    half = np.array([CAR_SIZE_WLH[1], CAR_SIZE_WLH[0], CAR_SIZE_WLH[2]]) / 2
    safe = np.where(np.abs(d) < 1e-12, 1e-12, d)
    ta, tb = (-half - o) / safe, (half - o) / safe
    t_in, t_out = np.minimum(ta, tb).max(1), np.maximum(ta, tb).min(1)
    hit = (t_in <= t_out) & (t_in > 0) & (t_in < best)
    best[hit], cls[hit] = t_in[hit], OCC_CLASS_ID["car"]
    return best, cls


def lidar_directions(azimuth_steps=540):
    elevation = np.deg2rad(np.linspace(-30.67, 10.67, 32))
    azimuth = 2 * np.pi * np.arange(azimuth_steps) / azimuth_steps
    az, el = np.meshgrid(azimuth, elevation, indexing="ij")
    return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1).reshape(-1, 3)


OCC_TO_LIDARSEG = {
    OCC_CLASS_ID["driveable_surface"]: LIDARSEG_CLASS_ID["flat.driveable_surface"],
    OCC_CLASS_ID["manmade"]: LIDARSEG_CLASS_ID["static.manmade"],
    OCC_CLASS_ID["car"]: LIDARSEG_CLASS_ID["vehicle.car"],
}


def box_track(times_s):
    t = np.asarray(times_s)
    center = np.stack([car_center(v) for v in t])[:, None]  # [S, 1, 3]
    size = np.broadcast_to(np.array(CAR_SIZE_WLH, np.float32), (len(t), 1, 3)).copy()
    rotation = np.broadcast_to(yaw_to_quaternion(CAR_YAW), (len(t), 1, 4)).copy()
    return Boxes(center, size, rotation, np.ones((len(t), 1), bool))


def build_scene(labelled=True, duration_s=DURATION_S) -> SceneArrays:
    ego_from_lidar = make_transform(yaw_to_quaternion(-np.pi / 2), [0.94, 0.0, 1.84])
    directions_sensor = lidar_directions()
    sweep_t = np.arange(0, duration_s, 0.05)
    rings = np.tile(np.arange(32), len(directions_sensor) // 32)  # lidar_directions: elevation varies fastest
    points, ring, lidarseg, offsets = [], [], [], [0]
    for s, t in enumerate(sweep_t):
        world_from_lidar = ego_pose(t) @ ego_from_lidar
        origins = np.repeat(world_from_lidar[None, :3, 3], len(directions_sensor), 0)
        directions_world = directions_sensor @ world_from_lidar[:3, :3].T
        rng, cls = cast_world(origins, directions_world, t)
        keep = np.isfinite(rng) & (rng < 60)
        points.append((directions_sensor[keep] * rng[keep, None]).astype(np.float32))
        ring.append(rings[keep].astype(np.uint8))
        labels = np.array([OCC_TO_LIDARSEG[c] for c in cls[keep]], np.uint8)
        lidarseg.append(occ_classes_of_lidarseg(labels) if labelled and s % 10 == 0 else np.full(keep.sum(), UNLABELLED, np.uint8))
        offsets.append(offsets[-1] + keep.sum())
    frame_t = np.arange(0, duration_s, 1 / 12)
    intrinsics = np.array([[20.0, 0, 16], [0, 20.0, 12], [0, 0, 1]])
    opencv = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    ego_from_cam = np.stack([make_transform(quaternion_to_matrix(yaw_to_quaternion(yaw)) @ opencv, [1.5, 0, 1.5]) for yaw in (0.0, np.pi)])
    return SceneArrays(
        sweeps=SweepArrays(np.concatenate(points), np.concatenate(ring), np.concatenate(lidarseg), np.array(offsets, np.int64)),
        sweep_timestamp_us=(sweep_t * 1e6).astype(np.int64),
        ego_from_lidar=np.repeat(ego_from_lidar[None], len(sweep_t), 0),
        world_from_sweep_ego=np.stack([ego_pose(t) for t in sweep_t]),
        sweep_boxes=box_track(sweep_t),
        frame_timestamp_us=(frame_t * 1e6).astype(np.int64),
        world_from_ego=np.stack([ego_pose(t) for t in frame_t]),
        frame_boxes=box_track(frame_t),
        box_occ_class=np.array([OCC_CLASS_ID["car"]], np.uint8),
        cam_intrinsics=np.broadcast_to(intrinsics, (len(frame_t), 2, 3, 3)).copy(),
        ego_from_cam=np.broadcast_to(ego_from_cam, (len(frame_t), 2, 4, 4)).copy(),
        cam_image_size=np.array([[24, 32], [24, 32]]),
    )


@pytest.fixture(scope="module")
def scene():
    return build_scene()


@pytest.fixture(scope="module")
def surface(scene):
    return build_surface(scene, GRID, default_settings(LabelOptions))


@pytest.fixture(scope="module")
def labels(scene, surface):
    return list(label_frames(surface, scene, GRID, default_settings(LabelOptions, frames_per_batch=24)))


def truth_semantics(scene: SceneArrays, frame: int, grid: OccGrid = GRID) -> np.ndarray:
    """The hand-built scene voxelised like the synthetic truth (solids overlapping a voxel; ground layer)."""
    centers = grid.voxel_centers().reshape(-1, 3).astype(np.float64)
    world = centers @ scene.world_from_ego[frame, :3, :3].T + scene.world_from_ego[frame, :3, 3]
    half = grid.voxel_size_m / 2
    truth = np.full(len(centers), FREE, np.uint8)
    truth[(world[:, 2] - half <= 1e-6) & (world[:, 2] + half > 1e-6)] = OCC_CLASS_ID["driveable_surface"]  # the layer holding z = 0
    wall = (np.abs(world[:, 0] - WALL_X_M) < half) & (np.abs(world[:, 1]) <= 10 + half) & (world[:, 2] > -half) & (world[:, 2] < 4 + half)
    truth[wall] = OCC_CLASS_ID["manmade"]
    local = (world - car_center(scene.frame_timestamp_us[frame] / 1e6)) @ quaternion_to_matrix(yaw_to_quaternion(CAR_YAW))
    car_half = np.array([CAR_SIZE_WLH[1], CAR_SIZE_WLH[0], CAR_SIZE_WLH[2]]) / 2
    truth[np.all(np.abs(local) < car_half + half, axis=1)] = OCC_CLASS_ID["car"]
    return truth.reshape(grid.shape)


def test_object_points_land_inside_their_box_at_every_frame(scene, surface):
    """The car's points from all sweeps pile up on its true surface in the box frame; its carved
    solid, placed back at each frame's box, lies inside the car at that frame."""
    options = default_settings(LabelOptions)
    scene_from_ego = invert_transform(scene.world_from_scene) @ scene.world_from_sweep_ego
    agg = aggregate_sweeps(scene.sweeps, scene.ego_from_lidar, scene_from_ego, box_track(scene.sweep_timestamp_us / 1e6),
                           options.ego_box_m, options.box_margin_m, options.ground_margin_m)
    car_half = np.array([CAR_SIZE_WLH[1], CAR_SIZE_WLH[0], CAR_SIZE_WLH[2]]) / 2
    assert surface.object_points.shape[0] > 200 and (surface.object_classes == OCC_CLASS_ID["car"]).all()
    raw = agg.box_points[agg.slot == 0].numpy().astype(np.float64)
    solid = surface.object_points.numpy().astype(np.float64)
    assert raw.shape[0] > 200
    for t in scene.frame_timestamp_us / 1e6:
        world_from_box = make_transform(yaw_to_quaternion(CAR_YAW), car_center(t))
        for points, on_surface in ((raw, True), (solid, False)):
            world = points @ world_from_box[:3, :3].T + world_from_box[:3, 3]
            local = np.abs((world - car_center(t)) @ world_from_box[:3, :3])  # in the true box at t
            assert np.all(local <= car_half + 1e-3)
            if on_surface:
                assert np.all(np.any(local >= car_half - 1e-3, axis=1))


def test_frames_voxelised_together_match_frames_voxelised_alone(scene, surface, labels, monkeypatch):
    """On a GPU a batch's frames are voxelised in one sort (label.VOXELIZE_POINTS); the labels are the same bytes."""
    import uniscene.occ_label.label as label

    monkeypatch.setattr(label, "VOXELIZE_POINTS_CPU", 2**40)
    together = list(label_frames(surface, scene, GRID, default_settings(LabelOptions, frames_per_batch=24)))
    for ours, alone in zip(together, labels, strict=True):
        for name in ("frames", "semantics", "mask_lidar", "mask_camera"):
            np.testing.assert_array_equal(getattr(ours, name), getattr(alone, name))


def test_lidar_rays_of_a_batch_match_a_frame_at_a_time(scene, surface):
    """The batch's rays (one sort for all its frames) are those of each frame alone, by the obvious loop: one ray per
    (sweep, end voxel), the first of its sweep's returns there, in the ego frame of its frame."""
    import uniscene.occ_label.label as label

    options = default_settings(LabelOptions, mask_lidar_window_s=0.2)  # several sweeps a frame
    scene_from_world = invert_transform(scene.world_from_scene)
    ego_from_scene = invert_transform(scene_from_world @ scene.world_from_ego)
    offsets = np.searchsorted(surface.ray_sweep.numpy(), np.arange(len(scene.sweep_timestamp_us) + 1))
    batch = np.arange(3, 11)
    matrices = torch.as_tensor(ego_from_scene[batch], dtype=torch.float32)
    origins, ends, frames = label._lidar_rays(surface, scene, GRID, options, batch, matrices, offsets)
    for f, frame_index in enumerate(batch):
        gap = np.abs(scene.sweep_timestamp_us - scene.frame_timestamp_us[frame_index])
        expected = set()
        for s in np.flatnonzero(gap <= 0.1e6):
            rows = torch.arange(offsets[s], offsets[s + 1])
            end = surface.ray_ends[rows] @ matrices[f, :3, :3].T + matrices[f, :3, 3]
            origin = surface.sweep_origin[s] @ matrices[f, :3, :3].T + matrices[f, :3, 3]
            seen = set()
            for e, voxel in zip(end.tolist(), torch.floor(end / GRID.voxel_size_m).long().tolist()):
                if tuple(voxel) not in seen:
                    seen.add(tuple(voxel))
                    expected.add((tuple(np.round(origin.tolist(), 4)), tuple(e)))
        ours = {(tuple(np.round(o, 4)), tuple(e)) for o, e in zip(origins[frames == f].tolist(), ends[frames == f].tolist())}
        assert len(ours) == (frames == f).sum() and ours == expected, f


def test_moving_car_voxels_follow_the_box_without_a_trail(scene, labels):
    car = OCC_CLASS_ID["car"]
    for batch in labels:
        for f, semantics in zip(batch.frames, batch.semantics):
            near_box = ndimage.binary_dilation(truth_semantics(scene, f) == car, np.ones((3, 3, 3)))  # one voxel of slack
            ours = semantics == car
            assert ours.sum() > 30
            assert near_box[ours].all(), f  # no trail behind the moving car


def test_labels_match_the_hand_built_scene_inside_the_camera_mask(scene, labels):
    hits, unions, correct, occupied = 0, 0, 0, 0
    for batch in labels:
        for f, semantics, visible in zip(batch.frames, batch.semantics, batch.mask_camera):
            truth = truth_semantics(scene, f)[visible]
            ours = semantics[visible]
            hits += np.sum((truth != FREE) & (ours != FREE))
            unions += np.sum((truth != FREE) | (ours != FREE))
            both = (truth != FREE) & (ours != FREE)
            correct += np.sum(truth[both] == ours[both])
            occupied += both.sum()
    assert hits / unions > 0.85
    assert correct / occupied > 0.97


def test_free_space_is_never_marked_behind_the_wall(scene, labels):
    for batch in labels:
        for f, mask_lidar, mask_camera in zip(batch.frames, batch.mask_lidar, batch.mask_camera):
            centers = GRID.voxel_centers() + np.asarray(scene.world_from_ego[f, :3, 3], np.float32)
            behind = (centers[..., 0] > WALL_X_M + GRID.voxel_size_m) & (np.abs(centers[..., 1]) < 9) & (centers[..., 2] < 3.5)
            assert not mask_lidar[behind].any()
            assert not mask_camera[behind].any()
            assert mask_lidar.sum() > 1000 and mask_camera.sum() > 100


def test_aggregate_drops_the_ego_body_and_splits_static_from_object():
    points = np.array([[0.5, 0.0, 1.0], [5.0, 0.0, 1.0], [0.0, 5.0, 0.5], [0.0, 5.0, 0.05]], np.float32)
    boxes = Boxes(np.array([[[0.0, 5.0, 0.5]]]), np.array([[[1.0, 1.0, 1.0]]], np.float32),
                  np.array([[[1.0, 0, 0, 0]]]), np.array([[True]]))
    sweeps = SweepArrays(points, np.zeros(4, np.uint8), np.zeros(4, np.uint8), np.array([0, 4]))
    agg = aggregate_sweeps(sweeps, np.eye(4)[None], np.eye(4)[None], boxes, (-1, -1, 0.25, 1, 1, 2), 0.2, 0.15)
    assert agg.points.shape[0] == 3  # the point on the car body is gone
    assert agg.slot.tolist() == [STATIC, 0, STATIC]  # the last point is ground under the box
    torch.testing.assert_close(agg.box_points[1], torch.zeros(3))


def test_aggregate_pairs_points_with_every_box_that_holds_them(monkeypatch):
    """Random boxes over 6 sweeps, aggregated in chunks of about two sweeps: each point joins the first
    (lowest slot) of the valid boxes of its own sweep that hold it, as a brute-force test over all pairs says."""
    import uniscene.occ_label.aggregate as aggregate

    rng = np.random.default_rng(7)
    sweeps, slots, per_sweep = 6, 40, 3000
    center = np.concatenate([rng.uniform(-30, 30, (sweeps, slots, 2)), rng.uniform(0.5, 1.5, (sweeps, slots, 1))], 2)
    size = np.broadcast_to(rng.uniform(0.5, 6.0, (1, slots, 3)), (sweeps, slots, 3)).astype(np.float32)
    yaw = rng.uniform(-np.pi, np.pi, (sweeps, slots))
    rotation = np.stack([np.cos(yaw / 2), 0 * yaw, 0 * yaw, np.sin(yaw / 2)], -1)
    boxes = Boxes(center, size, rotation, rng.random((sweeps, slots)) < 0.7)
    points = np.concatenate([rng.uniform([-32, -32, 0.3], [32, 32, 3.0], (sweeps * per_sweep, 3))]).astype(np.float32)
    offsets = np.arange(sweeps + 1) * per_sweep
    monkeypatch.setattr(aggregate, "POINTS_PER_CHUNK", 2 * per_sweep + 1)
    source = SweepArrays(points, np.zeros(len(points), np.uint8), np.zeros(len(points), np.uint8), offsets)
    agg = aggregate_sweeps(source, np.tile(np.eye(4), (sweeps, 1, 1)), np.tile(np.eye(4), (sweeps, 1, 1)), boxes,
                           (-1, -1, -5, 1, 1, -4), 0.2, 0.0)
    expected = np.full(len(points), STATIC)
    local = np.einsum("sbji,sbnj->sbni", boxes.world_from_box()[..., :3, :3],
                      points.reshape(sweeps, 1, per_sweep, 3) - center[:, :, None])  # [S, B, n, 3]
    half = size[..., [1, 0, 2]] / 2 + 0.2
    inside = np.all(np.abs(local) <= half[:, :, None], axis=-1) & boxes.valid[..., None]  # [S, B, n]
    inside &= local[..., 2] >= -size[:, :, None, 2] / 2  # under the box's bottom (in its margin) is ground
    held = inside.any(1).reshape(-1)
    expected[held] = inside.argmax(1).reshape(-1)[held]
    assert (expected != STATIC).sum() > 1000
    np.testing.assert_array_equal(agg.slot.numpy(), expected)
    np.testing.assert_array_equal(agg.sweep.numpy(), np.repeat(np.arange(sweeps), per_sweep))


def test_scene_without_lidarseg_labels_static_voxels_others():
    scene = build_scene(labelled=False, duration_s=0.5)
    options = default_settings(LabelOptions)
    surface = build_surface(scene, GRID, options)
    assert (surface.static_classes == OCC_CLASS_ID["others"]).all()
    assert (surface.object_classes == OCC_CLASS_ID["car"]).all()


def test_an_object_outside_its_annotated_boxes_leaves_no_trail():
    """The car is annotated only from 1 s on (as an object entering annotation range): its points
    before that are static points of a moving class and are dropped, not smeared along its path."""
    scene = build_scene()
    late = scene.sweep_timestamp_us < 1_000_000
    scene.sweep_boxes = Boxes(scene.sweep_boxes.center, scene.sweep_boxes.size, scene.sweep_boxes.rotation,
                              scene.sweep_boxes.valid & ~late[:, None])
    surface = build_surface(scene, GRID, default_settings(LabelOptions))
    assert not (surface.static_classes == OCC_CLASS_ID["car"]).any()
    frames = np.flatnonzero(scene.frame_timestamp_us >= 1_000_000)
    for batch in label_frames(surface, scene, GRID, default_settings(LabelOptions), frames):
        for f, semantics in zip(batch.frames, batch.semantics):
            near_box = ndimage.binary_dilation(truth_semantics(scene, f) == OCC_CLASS_ID["car"], np.ones((3, 3, 3)))
            assert not ((semantics != FREE) & (semantics != OCC_CLASS_ID["driveable_surface"]) & (semantics != OCC_CLASS_ID["manmade"]) & ~near_box).any()


def test_a_fine_grid_runs_without_code_change(scene):
    """0.1 m voxels (64 layers, as the 800 x 800 x 64 config) over the same scene: only the grid changes.
    Scored where the LiDAR looked (mask_lidar): the test cameras' 32 x 24 pixels are too few rays
    to see most 0.1 m voxels."""
    fine = OccGrid((-6.4, -6.4, -1.0, 12.8, 6.4, 5.4), 0.1)  # 192 x 128 x 64
    options = default_settings(LabelOptions, frames_per_batch=2, splat_radius_m=0.5)  # a smaller disk: its cost grows as (radius / cell)^2
    surface = build_surface(scene, fine, options)
    frames = [0, 23]
    hits = unions = 0
    for batch in label_frames(surface, scene, fine, options, frames):
        assert batch.semantics.shape[1:] == fine.shape == (192, 128, 64)
        for f, semantics, visible in zip(batch.frames, batch.semantics, batch.mask_lidar):
            truth = truth_semantics(scene, f, fine)[visible]
            ours = semantics[visible]
            hits += np.sum((truth != FREE) & (ours != FREE))
            unions += np.sum((truth != FREE) | (ours != FREE))
    assert hits / unions > 0.8
