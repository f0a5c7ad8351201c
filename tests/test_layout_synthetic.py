"""`uniscene layout`, `layout-edit` and `metrics layout` on the synthetic dataset, scored against its truth."""

import json

import numpy as np
import pytest

from uniscene.classes import LAYOUT_CHANNEL_NAMES
from uniscene.cli import main as cli_main
from uniscene.config import dumps
from uniscene.grid import OccGrid
from uniscene.metrics.layout import MATCHING_CLASS, channel_agreement, object_agreement
from uniscene.paths import scene_store, truth_store
from uniscene.store import open_store, write_store

SCENE = "synth-0000"


@pytest.fixture(scope="module")
def layout_run(synthetic_dataset, tmp_path_factory):
    """frames.zarr and layout.zarr (+ preview) of one synthetic scene, written by the CLI."""
    config, dataroot = synthetic_dataset
    config = {**config, "dataset": {**config["dataset"], "scenes": [SCENE]}}
    results = tmp_path_factory.mktemp("layout_results")
    frames = scene_store(results, SCENE, "frames")
    assert cli_main(["frames", "--config", dumps(config), "--scene", SCENE, "--out", str(frames)]) == 0
    layout = scene_store(results, SCENE, "layout")
    preview = layout.with_suffix(".png")
    assert cli_main(["layout", "--config", dumps(config), "--frames", str(frames), "--out", str(layout),
                     "--preview", str(preview)]) == 0
    return config, dataroot, results


def _truth_on_layout_frames(layout, truth):
    common, ours, theirs = np.intersect1d(layout["timestamp_us"].values, truth["timestamp_us"].values, return_indices=True)
    assert common.size == layout.sizes["frame"]
    return ours, theirs


def test_layout_store(layout_run):
    config, _, results = layout_run
    layout = open_store(scene_store(results, SCENE, "layout"), stage="layout")
    frames = open_store(scene_store(results, SCENE, "frames"), stage="frames")
    grid = OccGrid.from_config(config)
    assert layout["layout"].dims == ("frame", "channel", "x", "y") and layout["layout"].dtype == bool
    assert layout["layout"].shape == (frames.sizes["frame"], 18) + grid.shape[:2]
    assert tuple(layout.attrs["channel_names"]) == LAYOUT_CHANNEL_NAMES
    np.testing.assert_array_equal(layout["timestamp_us"].values, frames["timestamp_us"].values)
    provenance = layout.attrs["uniscene"]
    assert provenance["stage"] == "layout" and "layout" in provenance["config"]
    assert any(path.endswith(".json") for path in provenance["inputs"])  # the map expansion file
    assert scene_store(results, SCENE, "layout").with_suffix(".png").stat().st_size > 10_000
    assert layout["layout"].values[:, LAYOUT_CHANNEL_NAMES.index("drivable_area")].mean() > 0.05


def test_layout_overlays_truth_occupancy(layout_run):
    """drivable_area over driveable_surface voxels, walkway over sidewalk, each box over its object's voxels."""
    config, dataroot, results = layout_run
    layout = open_store(scene_store(results, SCENE, "layout"), stage="layout")
    truth = open_store(truth_store(dataroot, SCENE))
    ours, theirs = _truth_on_layout_frames(layout, truth)
    cells = layout["layout"].values[ours]
    semantics = truth["semantics"].values[theirs]
    iou = {name: c["intersection"] / c["union"] for name, c in channel_agreement(cells, semantics).items() if c["union"]}
    assert iou["drivable_area"] > 0.95 and iou["walkway"] > 0.85, iou

    boxes = {name: layout[name].values[ours] for name in ("box_center", "box_size", "box_rotation", "box_valid", "world_from_ego")}
    boxes["box_instance_token"] = layout["box_instance_token"].values
    true_boxes = {name: truth[name].values[theirs] for name in ("box_center", "box_size", "box_rotation", "box_present", "world_from_ego")}
    true_boxes.update(box_instance_token=truth["box_instance_token"].values, box_category=truth["box_category"].values)
    frame, objects, coverage = object_agreement(boxes, true_boxes, semantics, OccGrid.from_config(config), layout.attrs["box_rule"])
    on_keyframe = open_store(scene_store(results, SCENE, "frames"))["is_keyframe"].values[ours][frame]
    # On keyframes the boxes are the annotations: every object's voxels lie under its footprint (the
    # IoU is below 1 as objects are built of parts inside their boxes). Between keyframes the frames
    # stage interpolates (a turning car drifts by metres).
    assert on_keyframe.sum() > 20 and coverage[on_keyframe].mean() > 0.99, coverage[on_keyframe].mean()
    assert objects[on_keyframe].mean() > 0.8 and objects.mean() > 0.7, (objects[on_keyframe].mean(), objects.mean())

    # The orientation matters: the same layout mirrored left-right (y) or front-back (x) agrees far less.
    for flipped in (cells[..., ::-1], cells[..., ::-1, :]):
        flipped_iou = {n: c["intersection"] / c["union"] for n, c in channel_agreement(flipped, semantics).items() if c["union"]}
        assert flipped_iou["walkway"] < iou["walkway"] - 0.2 or flipped_iou["drivable_area"] < iou["drivable_area"] - 0.2


def test_metrics_json(layout_run, tmp_path):
    config, _, results = layout_run
    out = tmp_path / "layout.json"
    stores = ["--frames", str(scene_store(results, SCENE, "frames")), "--layout", str(scene_store(results, SCENE, "layout"))]
    assert cli_main(["metrics", "layout", "--config", dumps(config), *stores, "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert set(metrics["iou"]) == set(MATCHING_CLASS)
    assert metrics["iou"]["drivable_area"] > 0.95
    assert metrics["objects"]["coverage_keyframes"]["mean"] > 0.99
    assert metrics["iou_truth_boxes"]["car"] > 0.9  # the drawing alone: true boxes over the cars built inside them
    assert "method" in metrics and SCENE in metrics["scenes"]


def test_layout_edit_cli(layout_run, tmp_path, capsys):
    config, _, results = layout_run
    source = scene_store(results, SCENE, "layout")
    capsys.readouterr()
    assert cli_main(["layout-edit", "--config", dumps(config), "--layout", str(source), "--list"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    cars = [row for row in rows if row["class"] == "car"]
    assert cars, rows
    edited = tmp_path / "edited.zarr"
    car = LAYOUT_CHANNEL_NAMES.index("car")
    bus = LAYOUT_CHANNEL_NAMES.index("bus")
    assert cli_main(["layout-edit", "--config", dumps(config), "--layout", str(source), "--out", str(edited),
                     "--frames", "0:12", "--drop", "car", "--add", "bus", "12", "0", "0", "5",
                     "--preview", str(tmp_path / "edited.png")]) == 0
    before = open_store(source, stage="layout")
    after = open_store(edited, stage="layout")  # what the generators open
    assert not after["layout"].values[:12, car].any() and after["layout"].values[:12, bus].any()
    np.testing.assert_array_equal(after["layout"].values[12:], before["layout"].values[12:])
    np.testing.assert_array_equal(after["layout"].values[:, :8], before["layout"].values[:, :8])
    assert [edit["op"] for edit in after.attrs["edits"]] == ["drop", "add"]
    assert after.sizes["box"] == before.sizes["box"] + 1

    assert cli_main(["layout-edit", "--config", dumps(config), "--layout", str(source), "--out", str(tmp_path / "bad.zarr"),
                     "--reclass", "car", "spaceship"]) == 2
    assert not (tmp_path / "bad.zarr").exists()


def test_missing_map_expansion_is_a_user_error(layout_run, tmp_path, capsys):
    """A dataset without maps/expansion/<map>.json: exit 2, a message naming the download and where it goes, no store."""
    config, dataroot, results = layout_run
    bare = tmp_path / "bare"
    bare.mkdir()
    for entry in dataroot.iterdir():  # the dataset as it is, but maps/ without expansion/
        if entry.name != "maps":
            (bare / entry.name).symlink_to(entry)
    (bare / "maps").mkdir()
    for entry in (dataroot / "maps").iterdir():
        if entry.name != "expansion":
            (bare / "maps" / entry.name).symlink_to(entry)
    frames = open_store(scene_store(results, SCENE, "frames"), stage="frames").load()
    frames.attrs["dataroot"] = str(bare)
    moved = write_store(tmp_path / "frames.zarr", frames, stage="frames", config_subset={})
    out = tmp_path / "layout.zarr"
    capsys.readouterr()
    assert cli_main(["layout", "--config", dumps(config), "--frames", str(moved), "--out", str(out)]) == 2
    message = capsys.readouterr().err
    assert "nuScenes-map-expansion-v1.3" in message and str(bare / "maps" / "expansion") in message
    assert not out.exists()
