"""The synthetic dataset: read through nuscenes-devkit and checked against the generator's truth."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pyquaternion import Quaternion

from uniscene.sensors import CAMERA_NAMES
from uniscene.classes import LIDARSEG_CLASS_NAMES, LIDARSEG_TO_OCC, OCC_CLASS_ID, occ_class_of
from uniscene.geometry import make_transform
from uniscene.grid import OccGrid
from uniscene.store import open_store
from uniscene.synth import kernels
from uniscene.synth.truth import ground_layer
from uniscene.synth.world import build_scene


@pytest.fixture(scope="module")
def nusc(synthetic_dataset):
    from nuscenes.nuscenes import NuScenes

    config, dataroot = synthetic_dataset
    return NuScenes(config["dataset"]["version"], str(dataroot), verbose=False)


def _transform(record) -> np.ndarray:
    return make_transform(np.asarray(record["rotation"]), np.asarray(record["translation"]))


def _keyframe_lidar(nusc, sample):
    from nuscenes.utils.data_classes import LidarPointCloud

    sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    points = LidarPointCloud.from_file(nusc.get_sample_data_path(sd["token"])).points.T  # [N, 4]
    labels = np.fromfile(Path(nusc.dataroot) / nusc.get("lidarseg", sd["token"])["filename"], dtype=np.uint8)
    ego_from_lidar = _transform(nusc.get("calibrated_sensor", sd["calibrated_sensor_token"]))
    world_from_ego = _transform(nusc.get("ego_pose", sd["ego_pose_token"]))
    return sd, points, labels, ego_from_lidar, world_from_ego


def _scene_index(nusc, sample) -> int:
    return int(nusc.get("scene", sample["scene_token"])["name"].split("-")[1])


def test_devkit_reads_every_table(nusc, synthetic_dataset):
    config, dataroot = synthetic_dataset
    assert [s["name"] for s in nusc.scene] == ["synth-0000", "synth-0001"]
    assert [c["name"] for c in sorted(nusc.category, key=lambda c: c["index"])] == list(LIDARSEG_CLASS_NAMES)
    assert len(nusc.visibility) == 4 and len(nusc.sensor) == 7
    for scene in nusc.scene:
        assert scene["nbr_samples"] == 7  # 3 s at 2 Hz, both ends
        sample = nusc.get("sample", scene["first_sample_token"])
        stamps = []
        while True:
            assert set(sample["data"]) == set(CAMERA_NAMES) | {"LIDAR_TOP"}
            for channel, token in sample["data"].items():
                sd = nusc.get("sample_data", token)
                assert sd["timestamp"] == sample["timestamp"]  # keyframes of every sensor coincide
                assert nusc.get("ego_pose", sd["ego_pose_token"])["timestamp"] == sd["timestamp"]
            stamps.append(sample["timestamp"])
            if not sample["next"]:
                break
            sample = nusc.get("sample", sample["next"])
        assert np.all(np.diff(stamps) == 500_000)
    # sensor chains: 20 Hz LiDAR, 12 Hz cameras, prev/next consistent, each with its own ego pose
    chain = {}
    for sd in nusc.sample_data:
        chain.setdefault((nusc.get("sample", sd["sample_token"])["scene_token"], sd["channel"]), []).append(sd)
    for (_, channel), records in chain.items():
        records.sort(key=lambda r: r["timestamp"])
        gaps = np.diff([r["timestamp"] for r in records])
        period = 50_000 if channel == "LIDAR_TOP" else 1e6 / 12
        assert np.all(np.abs(gaps - period) <= 1), channel
        for a, b in zip(records[:-1], records[1:]):
            assert a["next"] == b["token"] and b["prev"] == a["token"]
        assert records[0]["prev"] == "" and records[-1]["next"] == ""
        assert sum(r["is_key_frame"] for r in records) == 7
    assert len({sd["ego_pose_token"] for sd in nusc.sample_data}) == len(nusc.sample_data)
    # lidarseg: one label per point of every keyframe sweep
    for record in nusc.lidarseg:
        sd = nusc.get("sample_data", record["sample_data_token"])
        assert sd["is_key_frame"] and sd["channel"] == "LIDAR_TOP"
        labels = np.fromfile(Path(dataroot) / record["filename"], dtype=np.uint8)
        points = np.fromfile(Path(dataroot) / sd["filename"], dtype=np.float32).reshape(-1, 5)
        assert len(labels) == len(points) and labels.max() < 32
    # annotations: chains per instance, plausible fields
    assert len(nusc.sample_annotation) > 50
    for instance in nusc.instance:
        ann = nusc.get("sample_annotation", instance["first_annotation_token"])
        count = 1
        while ann["next"]:
            ann = nusc.get("sample_annotation", ann["next"])
            count += 1
        assert count == instance["nbr_annotations"]
        assert ann["token"] == instance["last_annotation_token"]
    # cameras: image files of the declared size
    from PIL import Image

    sd = nusc.get("sample_data", nusc.sample[0]["data"]["CAM_BACK"])
    assert Image.open(nusc.get_sample_data_path(sd["token"])).size == (sd["width"], sd["height"]) == (80, 45)


def test_lidar_points_lie_on_true_surfaces(nusc, synthetic_dataset):
    config, _ = synthetic_dataset
    sample = nusc.sample[2]
    scene = build_scene(config, _scene_index(nusc, sample))
    sd, points, labels, ego_from_lidar, world_from_ego = _keyframe_lidar(nusc, sample)
    t_s = (sd["timestamp"] - scene.start_us) / 1e6
    world_from_lidar = world_from_ego @ ego_from_lidar
    world = points[:, :3] @ world_from_lidar[:3, :3].T + world_from_lidar[:3, 3]
    origin = world_from_lidar[:3, 3]
    rng = np.linalg.norm(world - origin, axis=1)
    directions = (world - origin) / rng[:, None]
    hits = scene.raycast(np.broadcast_to(origin, world.shape), directions, t_s, 80.0)
    assert np.all(hits.hit)
    assert np.abs(hits.range_m - rng).max() < 2e-3  # float32 points
    assert np.array_equal(hits.lidarseg, labels)
    assert np.all(np.abs(world[hits.ground, 2]) < 1e-3)
    assert rng.max() <= 70.0 + 1e-3
    assert len(points) > 0.5 * 32 * 1084


def test_lidarseg_matches_truth_occupancy(nusc, synthetic_dataset):
    config, dataroot = synthetic_dataset
    grid = OccGrid.from_config(config)
    agree, total = 0, 0
    for sample in nusc.sample[::3]:
        scene_name = nusc.get("scene", sample["scene_token"])["name"]
        truth = open_store(Path(dataroot) / "truth" / f"{scene_name}.zarr", stage="synth_truth")
        frame = int(np.nonzero(truth["timestamp_us"].values == sample["timestamp"])[0][0])
        _, points, labels, ego_from_lidar, _ = _keyframe_lidar(nusc, sample)
        ego = points[:, :3] @ ego_from_lidar[:3, :3].T + ego_from_lidar[:3, 3]
        ijk, inside = grid.index_of(ego)
        semantics = truth["semantics"][frame].values
        truth_class = semantics[ijk[inside, 0], ijk[inside, 1], ijk[inside, 2]]
        agree += int((truth_class == LIDARSEG_TO_OCC[labels[inside]]).sum())
        total += int(inside.sum())
    assert total > 10_000
    assert agree / total > 0.95, agree / total


def test_annotated_boxes_hold_their_points(nusc):
    from nuscenes.utils.geometry_utils import points_in_box

    checked = 0
    for sample in nusc.sample[1:6]:
        _, points, labels, ego_from_lidar, world_from_ego = _keyframe_lidar(nusc, sample)
        world_from_lidar = world_from_ego @ ego_from_lidar
        world = points[:, :3] @ world_from_lidar[:3, :3].T + world_from_lidar[:3, 3]
        for token in sample["anns"]:
            ann = nusc.get("sample_annotation", token)
            box = nusc.get_box(token)
            inside = points_in_box(box, world.T, wlh_factor=1.0)
            same_class = inside & (labels == LIDARSEG_CLASS_NAMES.index(ann["category_name"]))
            assert same_class.sum() >= ann["num_lidar_pts"], (ann["category_name"], same_class.sum(), ann["num_lidar_pts"])
            assert inside.sum() >= ann["num_lidar_pts"]
            checked += ann["num_lidar_pts"] > 0
    assert checked > 20


def test_box_centres_project_onto_their_class(nusc, synthetic_dataset):
    from nuscenes.utils.geometry_utils import BoxVisibility

    config, dataroot = synthetic_dataset
    hits, total = 0, 0
    for sample in nusc.sample:
        scene_name = nusc.get("scene", sample["scene_token"])["name"]
        truth = open_store(Path(dataroot) / "truth" / f"{scene_name}.zarr", stage="synth_truth")
        frame = int(np.nonzero(truth["timestamp_us"].values == sample["timestamp"])[0][0])
        for v, cam in enumerate(CAMERA_NAMES):
            _, boxes, intrinsic = nusc.get_sample_data(sample["data"][cam], box_vis_level=BoxVisibility.ALL)
            semantics = truth["cam_semantics"][frame, v].values
            for box in boxes:
                ann = nusc.get("sample_annotation", box.token)
                if ann["visibility_token"] != "4" or np.linalg.norm(box.center) > 30:
                    continue
                uvw = intrinsic @ box.center
                u, w = int(uvw[0] / uvw[2]), int(uvw[1] / uvw[2])
                total += 1
                hits += int(semantics[w, u] == occ_class_of(ann["category_name"]))
    assert total >= 10
    assert hits / total > 0.8, (hits, total)


def test_map_mask_agrees_with_truth_ground(nusc, synthetic_dataset):
    from nuscenes.map_expansion.map_api import NuScenesMap

    config, dataroot = synthetic_dataset
    grid = OccGrid.from_config(config)
    layer = ground_layer(grid)
    ground_classes = [OCC_CLASS_ID[n] for n in ("driveable_surface", "other_flat", "sidewalk", "terrain")]
    for scene_record in nusc.scene:
        log = nusc.get("log", scene_record["log_token"])
        nmap = NuScenesMap(str(dataroot), log["location"])
        sample = nusc.get("sample", scene_record["first_sample_token"])
        truth = open_store(Path(dataroot) / "truth" / f"{scene_record['name']}.zarr", stage="synth_truth")
        world_from_ego = truth["world_from_ego"][0].values
        yaw = np.degrees(np.arctan2(world_from_ego[1, 0], world_from_ego[0, 0]))
        # a patch centred on the grid's centre, aligned with the ego axes
        center = world_from_ego @ np.array([*(grid.lower_m[:2] + grid.upper_m[:2]) / 2, 0.0, 1.0])
        extent = grid.upper_m[:2] - grid.lower_m[:2]
        masks = nmap.get_map_mask((center[0], center[1], extent[1], extent[0]), yaw,
                                  ["drivable_area", "walkway", "ped_crossing"], grid.shape[1::-1])
        drivable = masks[0].T.astype(bool)  # [x, y] like the grid
        ground = truth["semantics"][0, :, :, layer].values
        on_ground = np.isin(ground, ground_classes)
        agreement = (drivable == (ground == OCC_CLASS_ID["driveable_surface"]))[on_ground].mean()
        assert agreement > 0.97, agreement
        assert drivable.any() and masks[1].any() and masks[2].any()
        assert sample["timestamp"] == truth["timestamp_us"][0]


def test_truth_store_layout(synthetic_dataset, nusc):
    config, dataroot = synthetic_dataset
    grid = OccGrid.from_config(config)
    truth = open_store(Path(dataroot) / "truth" / "synth-0000.zarr", stage="synth_truth")
    t = truth.sizes["frame"]
    assert t == 37  # 3 s at 12 Hz, both ends
    expected = {
        "timestamp_us": (("frame",), np.int64), "world_from_ego": (("frame", "row", "col"), np.float64),
        "semantics": (("frame", "x", "y", "z"), np.uint8), "mask_camera": (("frame", "x", "y", "z"), np.bool_),
        "box_center": (("frame", "box", "xyz"), np.float64), "box_size": (("frame", "box", "xyz"), np.float32),
        "box_rotation": (("frame", "box", "quat"), np.float64), "box_present": (("frame", "box"), np.bool_),
        "cam_semantics": (("frame", "cam", "h", "w"), np.uint8), "cam_depth": (("frame", "cam", "h", "w"), np.float32),
    }
    for name, (dims, dtype) in expected.items():
        assert truth[name].dims == dims, name
        assert truth[name].dtype == dtype, name
    assert set(truth.data_vars) == set(expected) | {"box_instance_token", "box_category"}
    assert truth["semantics"].shape[1:] == grid.shape
    assert truth["cam_semantics"].shape[1:] == (6, 45, 80)
    assert truth.attrs["camera_names"] == list(CAMERA_NAMES)
    # frames are the CAM_FRONT captures, with their logged poses
    scene = nusc.scene[0]
    front = sorted((sd for sd in nusc.sample_data if sd["channel"] == "CAM_FRONT"
                    and nusc.get("sample", sd["sample_token"])["scene_token"] == scene["token"]), key=lambda r: r["timestamp"])
    assert [sd["timestamp"] for sd in front] == truth["timestamp_us"].values.tolist()
    for k in (0, 7, t - 1):
        pose = nusc.get("ego_pose", front[k]["ego_pose_token"])
        np.testing.assert_allclose(truth["world_from_ego"][k].values, _transform(pose), atol=1e-6)
    semantics = truth["semantics"].values
    assert set(np.unique(semantics)) <= set(range(18))
    mask = truth["mask_camera"].values
    assert 0.05 < mask.mean() < 0.9
    # instance tokens match the dataset's, boxes match the annotations at keyframes
    tokens = list(truth["box_instance_token"].values)
    sample = nusc.get("sample", scene["first_sample_token"])
    sample = nusc.get("sample", sample["next"])
    frame = truth["timestamp_us"].values.tolist().index(sample["timestamp"])
    for token in sample["anns"]:
        ann = nusc.get("sample_annotation", token)
        b = tokens.index(ann["instance_token"])
        np.testing.assert_allclose(truth["box_center"][frame, b].values, ann["translation"], atol=1e-6)
        np.testing.assert_allclose(truth["box_size"][frame, b].values, ann["size"], rtol=1e-6)
        q = Quaternion(truth["box_rotation"][frame, b].values)
        assert abs(q.absolute_distance(q, Quaternion(ann["rotation"]))) < 1e-6
        assert bool(truth["box_present"][frame, b])
        assert truth["box_category"][b] == ann["category_name"]
    # camera depth: 0 exactly where the sky is
    assert np.array_equal(truth["cam_depth"].values == 0, truth["cam_semantics"].values == 255)


def test_camera_depth_and_mask_agree_with_geometry(synthetic_dataset):
    config, dataroot = synthetic_dataset
    grid = OccGrid.from_config(config)
    scene = build_scene(config, 0)
    truth = open_store(Path(dataroot) / "truth" / "synth-0000.zarr", stage="synth_truth")
    frame = 5
    depth = truth["cam_depth"][frame].values
    mask = truth["mask_camera"][frame].values
    semantics = truth["semantics"][frame].values
    origins, dirs, z_of_dir = scene.rig.pixel_rays_ego()
    hit = depth > 0
    view = np.nonzero(hit)[0]
    points = origins[view] + dirs[hit] * (depth[hit] / z_of_dir[hit])[:, None]
    ijk, inside = grid.index_of(points + dirs[hit] * 1e-4)
    ijk = ijk[inside]
    assert mask[ijk[:, 0], ijk[:, 1], ijk[:, 2]].all()
    # the surfaces that the cameras see are occupied voxels of their class
    cam_class = truth["cam_semantics"][frame].values[hit][inside]
    agreement = (semantics[ijk[:, 0], ijk[:, 1], ijk[:, 2]] == cam_class).mean()
    assert agreement > 0.9, agreement


def test_scene_is_deterministic_and_drives_smoothly(synthetic_dataset):
    config, _ = synthetic_dataset
    a, b = build_scene(config, 1), build_scene(config, 1)
    np.testing.assert_array_equal(a.ego_xy, b.ego_xy)
    np.testing.assert_array_equal(a.instances.xy, b.instances.xy)
    np.testing.assert_array_equal(a.town.raster, b.town.raster)
    speed = np.hypot(*np.diff(a.ego_xy, axis=0).T) / 0.02
    assert 2.0 < speed.mean() < 11.0 and speed.max() < 11.0
    yaw_rate = np.abs(np.diff(a.ego_yaw)) / 0.02
    assert yaw_rate.max() < 1.5  # rad/s
    moving = [i for i, m in enumerate(a.instances.mobility) if m == "moving"]
    assert len(moving) > 5
    for i in moving:
        step = np.hypot(*np.diff(a.instances.xy[i], axis=0).T)
        assert step.max() < 15.0 * 0.02


def test_first_box_hits_matches_reference():
    rng = np.random.default_rng(0)
    m, n = 60, 3000
    center = np.concatenate([rng.uniform(-40, 40, (m, 2)), rng.uniform(0, 3, (m, 1))], 1)
    half = rng.uniform(0.2, 4.0, (m, 3))
    yaw = rng.uniform(-np.pi, np.pi, m)
    origins = rng.normal(0, 1.0, (n, 3)) + [0, 0, 1.8]
    dirs = rng.normal(size=(n, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    t, box, _ = kernels.first_box_hits(origins, dirs, center, half, yaw, 60.0)
    t_ref, box_ref = kernels.first_box_hits_reference(origins, dirs, center, half, yaw, 60.0)
    np.testing.assert_array_equal(box, box_ref)
    np.testing.assert_allclose(t[np.isfinite(t)], t_ref[np.isfinite(t_ref)])
    assert (box >= 0).sum() > 300


def test_box_voxel_pairs_matches_reference():
    rng = np.random.default_rng(1)
    grid = OccGrid((-4.0, -4.0, -1.0, 4.0, 4.0, 2.2), 0.4)
    m = 8
    center = np.concatenate([rng.uniform(-4, 4, (m, 2)), rng.uniform(-0.5, 1.5, (m, 1))], 1)
    half = rng.uniform(0.1, 1.5, (m, 3))
    yaw = rng.uniform(-np.pi, np.pi, m)
    yaw[0] = 0.0
    center[0] = (0.2, 0.2, 0.6)  # faces on voxel boundaries must not spill over
    half[0] = (0.8, 0.4, 0.4)
    fast = set(zip(*kernels.box_voxel_pairs(grid, center, half, yaw)))
    slow = set(zip(*kernels.box_voxel_pairs_reference(grid, center, half, yaw)))
    assert fast == slow


def test_cli_rejects_tiny_images(tmp_path):
    config = {"device": "cpu", "seed": 0,
              "dataset": {"kind": "synthetic", "dataroot": str(tmp_path / "d"), "version": "v1.0-synth", "scenes": "all"},
              "grid": {"range_m": [-40, -40, -1, 40, 40, 5.4], "voxel_size_m": 0.4},
              "synth": {"num_scenes": 1, "duration_s": 2.0, "image_size": [9, 12], "density": 1.0}}
    out = subprocess.run([sys.executable, "-m", "uniscene.cli", "synth", "--config", json.dumps(config), "--out",
                          str(tmp_path / "d")], capture_output=True, text=True)
    assert out.returncode == 2
    assert "synth.image_size" in out.stderr
    assert not (tmp_path / "d").exists()


def test_generation_is_deterministic(tmp_path):
    from tests.conftest import tiny_synth_config
    from uniscene.synth.generate import generate_dataset

    roots = []
    for name in ("a", "b"):
        config = tiny_synth_config(tmp_path / name)
        config["synth"].update(num_scenes=1, duration_s=1.0, image_size=[16, 24], town_blocks=2)
        roots.append(generate_dataset(config, tmp_path / name, workers=1, progress=False))
    files_a = sorted(p.relative_to(roots[0]) for p in roots[0].rglob("*") if p.is_file() and "truth" not in p.parts)
    files_b = sorted(p.relative_to(roots[1]) for p in roots[1].rglob("*") if p.is_file() and "truth" not in p.parts)
    assert files_a == files_b and len(files_a) > 40
    for rel in files_a:
        assert (roots[0] / rel).read_bytes() == (roots[1] / rel).read_bytes(), rel


def test_mask_camera_matches_grid_traversal(synthetic_dataset):
    """mask_camera against the obvious reference: pixel rays (of CAM_FRONT and CAM_BACK) walked through
    the true occupancy with uniscene.ops.raycast (free voxels up to and including the first occupied one)."""
    import torch

    from uniscene.classes import FREE
    from uniscene.geometry import invert_transform
    from uniscene.ops.raycast import traverse_grid

    config, dataroot = synthetic_dataset
    grid = OccGrid.from_config(config)
    truth = open_store(Path(dataroot) / "truth" / "synth-0001.zarr", stage="synth_truth")
    frame = 10
    semantics = truth["semantics"][frame].values
    mask = truth["mask_camera"][frame].values
    rig = build_scene(config, 1).rig
    cams = [CAMERA_NAMES.index("CAM_FRONT"), CAMERA_NAMES.index("CAM_BACK")]
    origins, dirs, _ = rig.pixel_rays_ego()
    origins, dirs = origins[cams], dirs[cams]
    origins = np.repeat(origins, dirs.shape[1] * dirs.shape[2], axis=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: threads only add overhead (and contention on a busy machine)
    try:
        walk = traverse_grid(grid, torch.from_numpy(origins), torch.from_numpy(dirs.reshape(-1, 3)), max_range_m=20.0,
                             occupied=torch.from_numpy(semantics != FREE))  # near voxels only: rays are dense there
    finally:
        torch.set_num_threads(threads)
    reference = walk.visited.numpy().copy()
    end = walk.end_voxel.numpy()
    end = end[end[:, 0] >= 0]
    reference[end[:, 0], end[:, 1], end[:, 2]] = True
    assert mask[reference].mean() > 0.95  # every voxel a pixel ray reaches is in the mask
    # voxels of the mask near the car and inside the two cameras' views are reached by their rays
    centers = grid.voxel_centers().reshape(-1, 3).astype(np.float64)
    in_view = np.zeros(len(centers), bool)
    h, w = rig.size_hw
    for v in cams:
        cam_from_ego = invert_transform(rig.ego_from_cam[v])
        p = centers @ cam_from_ego[:3, :3].T + cam_from_ego[:3, 3]
        uvw = p @ rig.intrinsics[v].T
        with np.errstate(divide="ignore", invalid="ignore"):
            u, vv = uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2]
        in_view |= (p[:, 2] > 0.1) & (u >= 0) & (u < w) & (vv >= 0) & (vv < h)
    near = (np.hypot(centers[:, 0], centers[:, 1]) < 15.0) & in_view
    assert reference.reshape(-1)[mask.reshape(-1) & near].mean() > 0.9
