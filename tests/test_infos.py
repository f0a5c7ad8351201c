"""mmdet3d-style info files: frames -> v1.1 pkl -> frames round trip, and UniScene's 12 Hz infos."""

import pickle

import numpy as np
import pytest

from uniscene.sensors import CAMERA_NAMES, LIDAR_NAME
from uniscene.data.handmade import write_handmade_dataset
from uniscene.data.reader import open_dataset, scene_data
from uniscene.errors import UserError
from uniscene.frames import scene_frames
from uniscene.geometry import invert_transform, matrix_to_quaternion, quaternion_to_matrix
from uniscene.export.infos import export_infos
from uniscene.interop.infos import frames_from_infos, read_infos

VERSION = "v1.0-hand"
SCENE = "hand-0000"


@pytest.fixture(scope="module")
def dataset_and_frames(tmp_path_factory):
    root = write_handmade_dataset(tmp_path_factory.mktemp("hand") / "data", version=VERSION, num_scenes=2, with_truth=False)
    nusc = open_dataset(root, VERSION)
    frames = [scene_frames(scene_data(nusc, s, CAMERA_NAMES + (LIDAR_NAME,)), 0.25, 0.1) for s in ("hand-0000", "hand-0001")]
    for f in frames:
        f.attrs["version"] = VERSION
    return root, frames


def _assert_same_frames(a, b, exclude=()):
    for name in a.data_vars:
        if name.startswith("sweep_box_") or name in exclude:
            continue
        x, y = a[name].values, b[name].values
        assert x.shape == y.shape, name
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x, y, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(x, y, err_msg=name)


def test_round_trip(dataset_and_frames, tmp_path):
    root, frames = dataset_and_frames
    path = export_infos(frames, tmp_path / "nuscenes_infos_train.pkl")
    payload = pickle.loads(path.read_bytes())
    assert payload["metainfo"]["info_version"] == "1.1" and len(payload["data_list"]) == sum(f.sizes["frame"] for f in frames)
    entry = payload["data_list"][0]
    assert set(entry["images"]) == set(CAMERA_NAMES) and len(entry["instances"][0]["bbox_3d"]) == 7
    back = frames_from_infos(read_infos(path), SCENE, root, VERSION, 0.25)
    _assert_same_frames(frames[0], back)
    # sweep boxes are re-interpolated from the 12 Hz boxes: close to the keyframe interpolation
    both = frames[0].sweep_box_valid.values & back.sweep_box_valid.values
    error = np.linalg.norm(frames[0].sweep_box_center.values - back.sweep_box_center.values, axis=-1)[both]
    assert both.sum() > 0.9 * frames[0].sweep_box_valid.values.sum() and error.max() < 0.1


def _legacy_infos(frames) -> dict:
    """A 12 Hz info file as UniScene users have them (no instance ids, detection names, LiDAR frame boxes)."""
    infos = []
    f = {n: frames[n].values for n in frames.data_vars}
    for i in range(frames.sizes["frame"]):
        s = f["lidar_sweep_index"][i]
        world_from_lidar = f["world_from_sweep_ego"][s] @ f["ego_from_lidar"][s]
        lidar_from_world = invert_transform(world_from_lidar)
        valid = np.flatnonzero(f["box_valid"][i])
        center = f["box_center"][i, valid] @ lidar_from_world[:3, :3].T + lidar_from_world[:3, 3]
        rotation = lidar_from_world[:3, :3] @ quaternion_to_matrix(f["box_rotation"][i, valid])
        yaw = np.arctan2(rotation[:, 1, 0], rotation[:, 0, 0])
        w, l, h = f["box_size"][i, valid].T
        infos.append({
            "token": f"{f['frame_token'][i]}-12hz",
            "lidar_path": f"./data/nuscenes/{f['sweep_path'][s]}",
            "timestamp": int(f["timestamp_us"][i]),
            "ego2global_translation": f["world_from_sweep_ego"][s][:3, 3].tolist(),
            "ego2global_rotation": matrix_to_quaternion(f["world_from_sweep_ego"][s][:3, :3]).tolist(),
            "lidar2ego_translation": f["ego_from_lidar"][s][:3, 3].tolist(),
            "lidar2ego_rotation": matrix_to_quaternion(f["ego_from_lidar"][s][:3, :3]).tolist(),
            "gt_boxes": np.concatenate([center, np.stack([l, w, h, yaw], 1)], 1),
            "gt_names": np.array(["car" if c == 0 else "pedestrian" if c == 8 else "truck" if c == 1 else "barrier" if c == 5 else "bicycle"
                                  for c in f["box_class"][valid]]),
            "gt_velocity": (f["box_velocity"][i, valid].astype(np.float64) @ lidar_from_world[:3, :3].T)[:, :2],
            "cams": {
                c: {
                    "data_path": f"./data/nuscenes/{f['cam_image_path'][i, v]}",
                    "sample_data_token": f["cam_sample_data_token"][i, v],
                    "sensor2ego_translation": f["ego_from_cam"][i, v][:3, 3].tolist(),
                    "sensor2ego_rotation": matrix_to_quaternion(f["ego_from_cam"][i, v][:3, :3]).tolist(),
                    "ego2global_translation": f["world_from_ego"][i][:3, 3].tolist(),
                    "ego2global_rotation": matrix_to_quaternion(f["world_from_ego"][i][:3, :3]).tolist(),
                    "cam_intrinsic": f["cam_intrinsics"][i, v],
                    "timestamp": int(f["cam_timestamp_us"][i, v]),
                }
                for v, c in enumerate(CAMERA_NAMES)
            },
        })
    return {"infos": infos, "metadata": {"version": VERSION}}


def test_uniscene_12hz_infos_without_ids(dataset_and_frames, tmp_path):
    """Tracks are recovered by association; boxes and poses equal the frames they were made from."""
    root, frames = dataset_and_frames
    path = tmp_path / "nuscenes_interp_12Hz_infos_train.pkl"
    both_scenes = _legacy_infos(frames[0])["infos"] + _legacy_infos(frames[1])["infos"]
    path.write_bytes(pickle.dumps({"infos": both_scenes, "metadata": {"version": VERSION}}))
    back = frames_from_infos(read_infos(path), SCENE, root, VERSION, 0.25)
    original = frames[0]
    _assert_same_frames(original, back, exclude=(
        "box_center", "box_size", "box_rotation", "box_velocity", "box_valid", "box_instance_token", "box_category",
        "box_class", "box_occ_class",
    ))
    # one track per instance: map tracks to instances by their first box
    assert back.sizes["box"] == original.sizes["box"]
    order = [int(np.flatnonzero(np.all(np.isclose(original.box_center.values[np.argmax(v)], c[np.argmax(v)]), -1)
                                & original.box_valid.values[np.argmax(v)])[0])
             for v, c in zip(back.box_valid.values.T, back.box_center.values.transpose(1, 0, 2))]
    np.testing.assert_array_equal(back.box_valid.values, original.box_valid.values[:, order])
    valid = back.box_valid.values
    np.testing.assert_allclose(back.box_center.values[valid], original.box_center.values[:, order][valid], atol=1e-6)
    np.testing.assert_allclose(back.box_size.values[valid], original.box_size.values[:, order][valid], atol=1e-6)
    np.testing.assert_array_equal(back.box_class.values, original.box_class.values[order])
    dot = np.abs(np.sum(back.box_rotation.values * original.box_rotation.values[:, order], -1))[valid]
    np.testing.assert_allclose(dot, 1.0, atol=1e-9)


def test_bad_info_files(dataset_and_frames, tmp_path):
    root, _ = dataset_and_frames
    with pytest.raises(UserError, match="does not exist"):
        read_infos(tmp_path / "missing.pkl")
    (tmp_path / "other.pkl").write_bytes(pickle.dumps({"something": []}))
    with pytest.raises(UserError, match="data_list"):
        read_infos(tmp_path / "other.pkl")
    (tmp_path / "empty.pkl").write_bytes(pickle.dumps({"infos": []}))
    with pytest.raises(UserError, match=SCENE):
        frames_from_infos(read_infos(tmp_path / "empty.pkl"), SCENE, root, VERSION, 0.25)
