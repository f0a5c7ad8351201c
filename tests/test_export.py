"""`uniscene export`: each export loaded by its consumer.

The nuScenes version through nuscenes-devkit (`NuScenes`, `get_sample_data`, `LidarPointCloud.from_file`),
the Occ3D files through numpy and uniscene's own Occ3D reader, the info files through pickle (and read
back against the exported version). Scenes: the hand-made dataset's two, with stand-in lidar, video,
layout and occupancy stores that the tests write themselves.
"""

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from PIL import Image

from store_examples import complete
from uniscene.cli import main
from uniscene.data.files import SWEEP_COLUMNS, read_sweep
from uniscene.data.handmade import write_handmade_dataset
from uniscene.data.reader import open_dataset, scene_data
from uniscene.frames import scene_frames
from uniscene.geometry import invert_transform
from uniscene.grid import OccGrid
from uniscene.sensors import CAMERA_NAMES, LIDAR_NAME
from uniscene.store import write_store

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "config.yaml")
VERSION = "v1.0-hand"
SCENES = ("hand-0000", "hand-0001")
DEFAULT_GRID = OccGrid((-40.0, -40.0, -1.0, 40.0, 40.0, 5.4), 0.4)


def _video(frames: xr.Dataset, size_hw: tuple) -> xr.Dataset:
    """A smooth image per frame and camera (JPEG keeps it within a few levels)."""
    t, (h, w) = frames.sizes["frame"], size_hw
    ramp = (np.arange(w, dtype=np.float64) * 150 / max(w - 1, 1))[None, None, None, :, None]  # + shade + channel offset <= 235
    shade = (np.arange(len(CAMERA_NAMES)) * 8)[None, :, None, None, None] + (np.arange(t) % 5)[:, None, None, None, None]
    rgb = np.broadcast_to(ramp + shade + np.array([0, 20, 40]), (t, len(CAMERA_NAMES), h, w, 3)).astype(np.uint8)
    return xr.Dataset({"rgb": (("frame", "cam", "h", "w", "channel"), rgb), "timestamp_us": ("frame", frames.timestamp_us.values)},
                      attrs={"scene": frames.attrs["scene"], "camera_names": list(CAMERA_NAMES)})


def _lidar(root: Path, frames: xr.Dataset) -> xr.Dataset:
    """Each frame's nearest recorded sweep (sensor frame), plus b + 1 points at the centre of box b at keyframes."""
    index = frames.lidar_sweep_index.values
    per_frame = []
    for t, s in enumerate(index):
        points = read_sweep(root / frames.sweep_path.values[s])
        if frames.is_keyframe.values[t]:
            sensor_from_world = invert_transform(frames.world_from_ego.values[t] @ frames.ego_from_lidar.values[s])
            valid = np.flatnonzero(frames.box_valid.values[t])
            centers = np.repeat(frames.box_center.values[t, valid], np.arange(1, len(valid) + 1), axis=0)
            local = centers @ sensor_from_world[:3, :3].T + sensor_from_world[:3, 3]
            points = np.concatenate([points, np.c_[local, np.full((len(local), 2), 1.0)]]).astype(np.float32)
        per_frame.append(points)
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in per_frame])]).astype(np.int64)
    return xr.Dataset(
        {"points": (("point", "channel"), np.concatenate(per_frame).astype(np.float32)), "frame_offsets": ("frame_edge", offsets),
         "timestamp_us": ("frame", frames.timestamp_us.values), "ego_from_sensor": (("frame", "row", "col"), frames.ego_from_lidar.values[index])},
        coords={"channel": np.array(SWEEP_COLUMNS, dtype=object)}, attrs={"scene": frames.attrs["scene"], "source": "label", "sensor": LIDAR_NAME},
    )


def _occupancy(frames: xr.Dataset, seed: int) -> xr.Dataset:
    """Random labels on the default grid at the keyframes only (a store of a subset of the frames)."""
    rng = np.random.default_rng(seed)
    keys = np.flatnonzero(frames.is_keyframe.values)
    shape = (len(keys), *DEFAULT_GRID.shape)
    semantics = rng.integers(0, 18, size=shape, dtype=np.uint8)
    mask_lidar = rng.random(shape) < 0.5
    mask_camera = rng.random(shape) < 0.5  # camera-only voxels too, as uniscene's labels have
    data = {"semantics": (("frame", "x", "y", "z"), semantics), "mask_lidar": (("frame", "x", "y", "z"), mask_lidar),
            "mask_camera": (("frame", "x", "y", "z"), mask_camera), "timestamp_us": ("frame", frames.timestamp_us.values[keys])}
    return xr.Dataset(data, attrs={"scene": frames.attrs["scene"], **DEFAULT_GRID.to_attrs()})


def _layout(frames: xr.Dataset) -> tuple:
    """frames.zarr's boxes with instance 0 dropped and a pedestrian added (as `layout-edit` would); (dataset, dropped, added)."""
    t, b = frames.sizes["frame"], frames.sizes["box"]
    center = np.concatenate([frames.box_center.values, frames.world_from_ego.values[:, None, :3, 3] + [5.0, 0.0, 0.0]], 1)
    size = np.concatenate([frames.box_size.values, np.tile(np.float32([0.6, 0.6, 1.8]), (t, 1, 1))], 1)
    rotation = np.concatenate([frames.box_rotation.values, np.tile([1.0, 0, 0, 0], (t, 1, 1))], 1)
    valid = np.concatenate([frames.box_valid.values, np.ones((t, 1), bool)], 1)
    valid[:, 0] = False
    klass = np.concatenate([np.tile(frames.box_class.values, (t, 1)), np.full((t, 1), 8, np.int8)], 1)
    tokens = np.array([*frames.box_instance_token.values.astype(object), "added-pedestrian"], dtype=object)
    layout = xr.Dataset(
        {"timestamp_us": ("frame", frames.timestamp_us.values), "world_from_ego": (("frame", "row", "col"), frames.world_from_ego.values),
         "box_center": (("frame", "box", "xyz"), center), "box_size": (("frame", "box", "xyz"), size),
         "box_rotation": (("frame", "box", "quat"), rotation), "box_valid": (("frame", "box"), valid),
         "box_class": (("frame", "box"), klass), "box_instance_token": ("box", tokens),
         "layout": (("frame", "channel", "x", "y"), np.zeros((t, 18, 4, 5), bool))},
        attrs={"scene": frames.attrs["scene"], "grid_range_m": [0.0, 0.0, 0.0, 2.0, 2.5, 1.0], "voxel_size_m": 0.5},
    )
    return complete(layout, "layout"), str(frames.box_instance_token.values[0]), "added-pedestrian"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """{scene: {kind: store path}}, the dataset root and the dropped / added layout instances of scene 0."""
    base = tmp_path_factory.mktemp("export")
    root = write_handmade_dataset(base / "data", version=VERSION, num_scenes=2, with_truth=False)
    nusc = open_dataset(root, VERSION)
    stores = {}
    for i, scene in enumerate(SCENES):
        frames = scene_frames(scene_data(nusc, scene, CAMERA_NAMES + (LIDAR_NAME,)), 0.25, 0.1)
        frames.attrs.update(dataroot=str(root.resolve()), version=VERSION)
        folder = base / "results" / scene
        paths = {kind: folder / f"{kind}.zarr" for kind in ("frames", "lidar", "video", "occ_label", "layout")}
        paths["video_small"] = folder / "video_small.zarr"
        write_store(paths["frames"], frames, stage="frames", config_subset={}, frame_chunk=4096)
        write_store(paths["lidar"], _lidar(root, frames), stage="lidar", config_subset={})
        write_store(paths["video"], complete(_video(frames, (18, 32)), "video"), stage="video", config_subset={})
        write_store(paths["video_small"], complete(_video(frames, (9, 16)), "video"), stage="video", config_subset={})
        write_store(paths["occ_label"], _occupancy(frames, i), stage="occ_label", config_subset={})
        layout, dropped, added = _layout(frames)
        write_store(paths["layout"], layout, stage="layout", config_subset={})
        stores[scene] = {k: str(v) for k, v in paths.items()}
    return {"stores": stores, "root": root, "base": base, "dropped": dropped, "added": added}


def _run(capsys, *args) -> tuple:
    code = main(["export", args[0], "--config", CONFIG, *args[1:]])
    out = capsys.readouterr()
    return code, out.out, out.err


def _stores(workspace, kind: str, scenes=SCENES) -> list:
    return [workspace["stores"][s][kind] for s in scenes]


def _devkit(version: str, root):
    from nuscenes.nuscenes import NuScenes

    return NuScenes(version=version, dataroot=str(root), verbose=False)


def test_nuscenes_export_loads_in_the_devkit(workspace, tmp_path, capsys):
    from nuscenes.utils.data_classes import LidarPointCloud
    from nuscenes.utils.geometry_utils import points_in_box

    out = tmp_path / "label"
    code, message, _ = _run(capsys, "nuscenes", "--frames", *_stores(workspace, "frames"), "--lidar", *_stores(workspace, "lidar"),
                            "--video", *_stores(workspace, "video"), "--chain", "label", "--out", str(out))
    assert code == 0 and "camera JPEGs" in message
    nusc = _devkit("v1.0-uniscene-label", out)
    source = open_dataset(workspace["root"], VERSION)
    assert sorted(s["name"] for s in nusc.scene) == sorted(SCENES)
    for scene in nusc.scene:
        frames = xr.open_zarr(workspace["stores"][scene["name"]]["frames"])
        lidar = xr.open_zarr(workspace["stores"][scene["name"]]["lidar"])
        video = xr.open_zarr(workspace["stores"][scene["name"]]["video"])
        keys = np.flatnonzero(frames.is_keyframe.values)
        assert scene["nbr_samples"] == len(keys)
        token, t = scene["first_sample_token"], 0
        while token:
            sample = nusc.get("sample", token)
            row = keys[t]
            assert sample["token"] == frames.sample_token.values[row] and sample["timestamp"] == frames.timestamp_us.values[row]
            # LiDAR: the .pcd.bin read by the devkit holds the lidar store's points of the frame
            path, boxes, _ = nusc.get_sample_data(sample["data"][LIDAR_NAME])
            cloud = LidarPointCloud.from_file(path)
            offsets = lidar.frame_offsets.values
            np.testing.assert_array_equal(cloud.points.T, lidar.points.values[offsets[row]:offsets[row + 1], :4])
            assert len(boxes) == len(sample["anns"]) == int(frames.box_valid.values[row].sum())
            # num_lidar_pts: the devkit's own points_in_box on the same points, in the world frame
            sd = nusc.get("sample_data", sample["data"][LIDAR_NAME])
            pose, calib = nusc.get("ego_pose", sd["ego_pose_token"]), nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            cloud.rotate(_rotation(calib["rotation"]))
            cloud.translate(np.array(calib["translation"]))
            cloud.rotate(_rotation(pose["rotation"]))
            cloud.translate(np.array(pose["translation"]))
            for ann_token in sample["anns"]:
                ann = nusc.get("sample_annotation", ann_token)
                assert ann["num_lidar_pts"] == int(points_in_box(nusc.get_box(ann_token), cloud.points[:3]).sum()) > 0
            # cameras: a JPEG of the video frame, the source's calibration reused (same image size)
            for v, camera in enumerate(CAMERA_NAMES):
                path, boxes, intrinsic = nusc.get_sample_data(sample["data"][camera])
                image = np.asarray(Image.open(path))
                assert image.shape == (18, 32, 3) and np.abs(image.astype(int) - video.rgb.values[row, v]).mean() < 4
                source_sd = source.get("sample_data", frames.cam_sample_data_token.values[row, v])
                assert nusc.get("sample_data", sample["data"][camera])["calibrated_sensor_token"] == source_sd["calibrated_sensor_token"]
                np.testing.assert_allclose(intrinsic, frames.cam_intrinsics.values[row, v])
            token, t = sample["next"], t + 1
        assert t == len(keys)
    # the 12 Hz frames that are not samples are sweeps of the next sample (the last after it), in sweeps/
    sweeps = [sd for sd in nusc.sample_data if not sd["is_key_frame"]]
    assert len(sweeps) == 7 * sum(int((~xr.open_zarr(s).is_keyframe.values).sum()) for s in _stores(workspace, "frames"))
    for sd in sweeps:
        sample = nusc.get("sample", sd["sample_token"])
        assert sd["filename"].startswith("sweeps/") and (sample["timestamp"] > sd["timestamp"] or sample["next"] == "")
    path, boxes, _ = nusc.get_sample_data(sweeps[0]["token"])
    assert Path(path).is_file()
    assert json.loads((out / "export.json").read_text())["provenance"]["stage"] == "export_nuscenes"


def _rotation(quaternion) -> np.ndarray:
    from uniscene.geometry import quaternion_to_matrix

    return quaternion_to_matrix(np.array(quaternion))


def test_nuscenes_export_of_a_generated_chain(workspace, tmp_path, capsys):
    """Boxes from the layout (an instance dropped, one added); without --video no camera data, said in the message;
    with a video at another size, new calibrations with the intrinsics scaled."""
    out = tmp_path / "gen"
    scene = SCENES[0]
    code, message, _ = _run(capsys, "nuscenes", "--frames", *_stores(workspace, "frames", [scene]), "--lidar",
                            *_stores(workspace, "lidar", [scene]), "--layout", *_stores(workspace, "layout", [scene]),
                            "--chain", "gen", "--out", str(out))
    assert code == 0 and "no camera sample_data (no --video" in message
    nusc = _devkit("v1.0-uniscene-gen", out)
    assert {sd["channel"] for sd in nusc.sample_data} == {LIDAR_NAME}
    instances = {record["token"]: nusc.get("category", record["category_token"])["name"] for record in nusc.instance}
    assert workspace["dropped"] not in instances and instances[workspace["added"]] == "human.pedestrian.adult"
    layout = xr.open_zarr(workspace["stores"][scene]["layout"])
    for sample in nusc.sample:  # each sample's annotations: the boxes the layout draws at that frame
        row = int(np.flatnonzero(layout.timestamp_us.values == sample["timestamp"])[0])
        drawn = layout.box_valid.values[row] & (layout.box_class.values[row] >= 0)
        tokens = {nusc.get("sample_annotation", a)["instance_token"] for a in sample["anns"]}
        assert tokens == set(layout.box_instance_token.values[drawn]) and workspace["added"] in tokens

    small = tmp_path / "small"
    code, _, _ = _run(capsys, "nuscenes", "--frames", *_stores(workspace, "frames", [scene]), "--lidar", *_stores(workspace, "lidar", [scene]),
                      "--video", *_stores(workspace, "video_small", [scene]), "--chain", "edits/small", "--out", str(small))
    assert code == 0
    nusc = _devkit("v1.0-uniscene-edits-small", small)
    frames = xr.open_zarr(workspace["stores"][scene]["frames"])
    sample = nusc.sample[0]
    row = int(np.flatnonzero(frames.sample_token.values == sample["token"])[0])
    path, _, intrinsic = nusc.get_sample_data(sample["data"]["CAM_FRONT"])
    assert np.asarray(Image.open(path)).shape == (9, 16, 3)
    np.testing.assert_allclose(intrinsic, np.diag([0.5, 0.5, 1.0]) @ frames.cam_intrinsics.values[row, 0])
    source_tokens = {r["token"] for r in open_dataset(workspace["root"], VERSION).calibrated_sensor}
    cameras = [r for r in nusc.calibrated_sensor if r["camera_intrinsic"]]
    assert len(cameras) == len(CAMERA_NAMES) and not {r["token"] for r in cameras} & source_tokens


def test_occ3d_export_at_the_default_grid(workspace, tmp_path, capsys):
    from uniscene.data import occ3d
    from uniscene.models.occ_vae.sources import Occ3DSequence

    out = tmp_path / "occ3d"
    code, message, _ = _run(capsys, "occ3d", "--frames", *_stores(workspace, "frames"), "--occupancy", *_stores(workspace, "occ_label"),
                            "--out", str(out))
    assert code == 0 and "mask_camera inside mask_lidar" in message
    nusc = open_dataset(workspace["root"], VERSION)
    for scene in SCENES:
        frames = xr.open_zarr(workspace["stores"][scene]["frames"])
        labels = xr.open_zarr(workspace["stores"][scene]["occ_label"])
        tokens = frames.sample_token.values[frames.is_keyframe.values]
        assert sorted(p.name for p in (out / "gts" / scene).iterdir()) == sorted(tokens)
        for k, token in enumerate(tokens):
            with np.load(out / "gts" / scene / token / "labels.npz") as data:
                assert sorted(data.files) == ["mask_camera", "mask_lidar", "semantics"]
                arrays = {name: data[name] for name in data.files}
            for name, array in arrays.items():
                assert array.dtype == np.uint8 and array.shape == (200, 200, 16), name
            assert arrays["semantics"].min() >= 0 and arrays["semantics"].max() <= 17
            assert set(np.unique(arrays["mask_lidar"])) <= {0, 1} and set(np.unique(arrays["mask_camera"])) <= {0, 1}
            assert not np.any(arrays["mask_camera"] & ~arrays["mask_lidar"])  # Occ3D: seen by the cameras only where the LiDAR saw
            np.testing.assert_array_equal(arrays["semantics"], labels.semantics.values[k])
            np.testing.assert_array_equal(arrays["mask_lidar"], labels.mask_lidar.values[k])
            np.testing.assert_array_equal(arrays["mask_camera"], labels.mask_camera.values[k] & labels.mask_lidar.values[k])
        # uniscene's own Occ3D reader (the VAE's source) reads the export back
        sequence = Occ3DSequence(occ3d.occ3d_scene(out, nusc, scene, (200, 200, 16)))
        read = sequence.read(0, sequence.num_frames)
        np.testing.assert_array_equal(read["semantics"], labels.semantics.values)
        np.testing.assert_array_equal(read["mask_camera"], labels.mask_camera.values & labels.mask_lidar.values)


def test_infos_of_the_source_frames(workspace, tmp_path, capsys):
    out = tmp_path / "nuscenes_infos_train.pkl"
    code, message, _ = _run(capsys, "infos", "--frames", *_stores(workspace, "frames"), "--out", str(out))
    assert code == 0 and VERSION in message
    payload = pickle.loads(out.read_bytes())
    frames = [xr.open_zarr(p) for p in _stores(workspace, "frames")]
    assert payload["metainfo"]["version"] == VERSION and len(payload["data_list"]) == sum(f.sizes["frame"] for f in frames)
    entry = payload["data_list"][0]
    assert set(entry["images"]) == set(CAMERA_NAMES) and (workspace["root"] / entry["lidar_points"]["lidar_path"]).is_file()


def test_infos_of_generated_frames_name_the_export(workspace, tmp_path, capsys):
    """The infos of a chain name the files of its nuScenes export; uniscene reads them back against that version."""
    from uniscene.interop.infos import frames_from_infos, read_infos

    export = tmp_path / "label"
    stores = ["--frames", *_stores(workspace, "frames"), "--lidar", *_stores(workspace, "lidar"), "--video", *_stores(workspace, "video"),
              "--chain", "label"]
    assert _run(capsys, "nuscenes", *stores, "--out", str(export))[0] == 0
    out = tmp_path / "nuscenes_infos.pkl"
    code, message, _ = _run(capsys, "infos", *stores, "--nuscenes", str(export), "--out", str(out))
    assert code == 0 and "generated frames with camera images" in message
    payload = pickle.loads(out.read_bytes())
    assert payload["metainfo"]["version"] == "v1.0-uniscene-label"
    for entry in payload["data_list"]:
        assert (export / entry["lidar_points"]["lidar_path"]).is_file()
        assert set(entry["images"]) == set(CAMERA_NAMES) and all((export / i["img_path"]).is_file() for i in entry["images"].values())
        assert all(i["height"] == 18 and i["width"] == 32 for i in entry["images"].values())
    frames = xr.open_zarr(workspace["stores"][SCENES[0]]["frames"])
    back = frames_from_infos(read_infos(out), SCENES[0], export, "v1.0-uniscene-label", 0.25)
    np.testing.assert_array_equal(back.timestamp_us.values, frames.timestamp_us.values)
    valid = frames.box_valid.values
    assert back.box_valid.values.sum() == valid.sum()
    np.testing.assert_allclose(back.box_center.values[back.box_valid.values], frames.box_center.values[valid], atol=1e-6)

    without_video = tmp_path / "lidar_only.pkl"
    code, message, _ = _run(capsys, "infos", "--frames", *_stores(workspace, "frames"), "--lidar", *_stores(workspace, "lidar"),
                            "--chain", "gen", "--out", str(without_video))
    assert code == 0 and "without cameras" in message
    assert all(entry["images"] == {} for entry in pickle.loads(without_video.read_bytes())["data_list"])


@pytest.mark.parametrize("case", ["count", "scene", "frames", "missing", "chain", "unused", "files"])
def test_bad_input_stops_with_one_message_and_no_output(workspace, tmp_path, capsys, case):
    s0, s1 = (workspace["stores"][s] for s in SCENES)
    out = tmp_path / "out"
    args = {
        "count": (["nuscenes", "--frames", s0["frames"], s1["frames"], "--lidar", s0["lidar"], "--chain", "label"], "--lidar names 1"),
        "scene": (["nuscenes", "--frames", s0["frames"], "--lidar", s1["lidar"], "--chain", "label"], "is of scene 'hand-0001'"),
        "frames": (["nuscenes", "--frames", s0["frames"], "--lidar", s0["lidar"], "--video", s0["occ_label"], "--chain", "label"],
                   "holds stage 'occ_label', expected 'video'"),
        "missing": (["occ3d", "--frames", s0["frames"], "--occupancy", str(tmp_path / "nowhere.zarr")], "nowhere.zarr does not exist"),
        "chain": (["nuscenes", "--frames", s0["frames"], "--lidar", s0["lidar"]], "needs --chain"),
        "unused": (["occ3d", "--frames", s0["frames"], "--occupancy", s0["occ_label"], "--video", s0["video"]], "reads no --video"),
        "files": (["infos", "--frames", s0["frames"], "--lidar", s0["lidar"], "--chain", "label", "--nuscenes", str(tmp_path)],
                  "holds no nuScenes version v1.0-uniscene-label"),
    }[case]
    target = out.with_suffix(".pkl") if args[0][0] == "infos" else out
    code, _, err = _run(capsys, *args[0], "--out", str(target))
    assert code == 2 and re.search(re.escape(args[1]), err) and len(err.strip().splitlines()) == 1, err
    assert not target.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
