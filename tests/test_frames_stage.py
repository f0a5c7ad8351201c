"""`uniscene frames` end to end: store layout, keyframe exactness, metrics against the truth."""

import numpy as np
import pytest

from uniscene.cli import main as cli_main
from uniscene.config import dumps, load_config
from uniscene.data.handmade import write_handmade_dataset
from uniscene.data.reader import keyframe_annotations, open_dataset, scene_record, scene_samples
from uniscene.metrics import scene_stores
from uniscene.metrics.frames import evaluate
from uniscene.paths import scene_store
from uniscene.store import open_store, store_provenance

VERSION = "v1.0-hand"
SCENES = ["hand-0000", "hand-0001"]

# docs/stores.md, frames.zarr: variable -> (dims, dtype kind or dtype)
LAYOUT = {
    "timestamp_us": (("frame",), "int64"), "is_keyframe": (("frame",), "bool"), "sample_token": (("frame",), "str"),
    "world_from_ego": (("frame", "row", "col"), "float64"), "cam_image_path": (("frame", "cam"), "str"),
    "cam_timestamp_us": (("frame", "cam"), "int64"), "cam_intrinsics": (("frame", "cam", "k_row", "k_col"), "float64"),
    "cam_image_size": (("cam", "hw"), "int64"), "ego_from_cam": (("frame", "cam", "row", "col"), "float64"),
    "lidar_sweep_index": (("frame",), "int64"), "sweep_path": (("sweep",), "str"), "sweep_timestamp_us": (("sweep",), "int64"),
    "sweep_is_keyframe": (("sweep",), "bool"), "sweep_lidarseg_path": (("sweep",), "str"),
    "world_from_sweep_ego": (("sweep", "row", "col"), "float64"), "ego_from_lidar": (("sweep", "row", "col"), "float64"),
    "box_center": (("frame", "box", "xyz"), "float64"), "box_size": (("frame", "box", "xyz"), "float32"),
    "box_rotation": (("frame", "box", "quat"), "float64"), "box_velocity": (("frame", "box", "xyz"), "float32"),
    "box_valid": (("frame", "box"), "bool"), "sweep_box_center": (("sweep", "box", "xyz"), "float64"),
    "sweep_box_size": (("sweep", "box", "xyz"), "float32"), "sweep_box_rotation": (("sweep", "box", "quat"), "float64"),
    "sweep_box_valid": (("sweep", "box"), "bool"), "box_instance_token": (("box",), "str"), "box_category": (("box",), "str"),
    "box_class": (("box",), "int8"), "box_occ_class": (("box",), "uint8"),
}


def handmade_config(dataroot) -> dict:
    config = load_config("config.yaml")
    config["dataset"] = {"kind": "nuscenes", "dataroot": str(dataroot), "version": VERSION, "scenes": SCENES}
    return config


@pytest.fixture(scope="module")
def handmade_run(tmp_path_factory):
    """The handmade dataset (with truth) and the frames stores of its scenes, written by the CLI."""
    dataroot = write_handmade_dataset(tmp_path_factory.mktemp("hand") / "data", version=VERSION, num_scenes=2)
    results = dataroot.parent / "results"
    config = handmade_config(dataroot)
    for scene in SCENES:
        assert cli_main(["frames", "--config", dumps(config), "--scene", scene, "--out", str(scene_store(results, scene, "frames"))]) == 0
    return config, dataroot, results


def _kind(dtype) -> str:
    return "str" if dtype.kind in "OUT" else str(dtype)


def test_store_layout_and_provenance(handmade_run):
    config, dataroot, results = handmade_run
    frames = open_store(scene_store(results, SCENES[0], "frames"), stage="frames")
    for name, (dims, dtype) in LAYOUT.items():
        assert frames[name].dims == dims, name
        assert _kind(frames[name].dtype) == dtype, name
    assert frames.sizes["cam"] == 6 and frames.sizes["quat"] == 4
    assert frames.attrs["scene"] == SCENES[0] and frames.attrs["version"] == VERSION
    assert frames.attrs["dataroot"] == str(dataroot.resolve())
    provenance = store_provenance(frames)
    assert provenance["config"]["frames"] == config["frames"] and provenance["stage"] == "frames"
    index = frames.lidar_sweep_index.values
    gap = np.abs(frames.sweep_timestamp_us.values[index] - frames.timestamp_us.values)
    assert gap.max() <= 25_000  # the nearest 20 Hz sweep


def test_keyframes_reproduce_annotations_exactly(handmade_run):
    config, dataroot, results = handmade_run
    nusc = open_dataset(dataroot, VERSION)
    for scene in SCENES:
        frames = open_store(scene_store(results, scene, "frames"), stage="frames")
        ann = keyframe_annotations(nusc, scene_samples(nusc, scene_record(nusc, scene)))
        rows = np.flatnonzero(frames.is_keyframe.values)
        assert list(frames.sample_token.values[rows]) == list(ann.sample_token)
        assert list(frames.box_instance_token.values) == list(ann.instance_token)
        np.testing.assert_array_equal(frames.box_valid.values[rows] & ann.present, ann.present)
        p = ann.present
        np.testing.assert_array_equal(frames.box_center.values[rows][p], ann.center[p])
        np.testing.assert_array_equal(frames.box_rotation.values[rows][p], ann.rotation[p])
        np.testing.assert_array_equal(frames.box_size.values[rows][p], ann.size[p].astype(np.float32))


def test_metrics_against_truth(handmade_run):
    config, dataroot, results = handmade_run
    scores = evaluate(config, scene_stores({"frames": [scene_store(results, scene, "frames") for scene in SCENES]}))
    interp, hold = scores["interpolated_between_keyframes"], scores["hold_last_keyframe_between_keyframes"]
    assert interp["median_center_error_m"] < 0.1 < hold["median_center_error_m"]
    assert interp["p95_center_error_m"] < hold["p95_center_error_m"]
    assert interp["median_yaw_error_deg"] < 0.1 < hold["median_yaw_error_deg"]
    assert interp["recall"] > 0.85 and interp["false_valid"] < 0.05
    assert scores["ego_pose"]["max_translation_error_m"] < 1e-9
    assert scores["keyframe_exactness"]["center_m"] == 0.0 and scores["keyframe_exactness"]["missing_boxes"] == 0


def test_bad_scene_and_bad_setting_exit_2(handmade_run, tmp_path, capsys):
    config, _, _ = handmade_run
    out = str(tmp_path / "frames.zarr")
    assert cli_main(["frames", "--config", dumps(config), "--scene", "no-such-scene", "--out", out]) == 2
    config = {**config, "frames": {**config["frames"], "hold_one_sided_s": -1.0}}  # a key left out takes its default
    assert cli_main(["frames", "--config", dumps(config), "--scene", SCENES[0], "--out", out]) == 2
    assert "frames.hold_one_sided_s" in capsys.readouterr().err
    assert not (tmp_path / "frames.zarr").exists()


def test_synthetic_dataset(request, tmp_path):
    """On the embedded synthetic dataset: exact keyframes and poses; interpolation beats holding."""
    try:
        config, dataroot = request.getfixturevalue("synthetic_dataset")
    except pytest.FixtureLookupError:
        pytest.skip("no synthetic_dataset fixture")
    config = {**config, "dataset": {**config["dataset"], "scenes": "all"}}
    scenes = ("synth-0000", "synth-0001")
    for scene in scenes:
        assert cli_main(["frames", "--config", dumps(config), "--scene", scene, "--out", str(scene_store(tmp_path, scene, "frames"))]) == 0
    scores = evaluate(config, scene_stores({"frames": [scene_store(tmp_path, scene, "frames") for scene in scenes]}))
    assert scores["keyframe_exactness"]["center_m"] == 0.0 and scores["keyframe_exactness"]["missing_boxes"] == 0
    assert scores["ego_pose"]["max_translation_error_m"] < 1e-6
    interp, hold = scores["interpolated_moving"], scores["hold_last_keyframe_moving"]
    assert interp["boxes"] > 0 and interp["p95_center_error_m"] < hold["p95_center_error_m"]
    # parked instances held over the scene: the world's parked cars never move, so their held boxes are exact
    config["frames"]["hold_parked_s"] = 0.0
    unparked = tmp_path / "unparked"
    for scene in scenes:
        assert cli_main(["frames", "--config", dumps(config), "--scene", scene, "--out", str(scene_store(unparked, scene, "frames"))]) == 0
    without = evaluate(config, scene_stores({"frames": [scene_store(unparked, scene, "frames") for scene in scenes]}))["interpolated"]
    assert scores["interpolated"]["recall"] > without["recall"] + 0.1
    assert scores["interpolated"]["false_valid"] == 0.0
    assert scores["interpolated"]["p95_center_error_m"] < 1e-6
