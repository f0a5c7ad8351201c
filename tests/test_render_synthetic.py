"""The render stage and its metrics on the synthetic dataset: real cameras, poses, LiDAR and layout.

The occupancy rendered is the synthetic world's true occupancy (the truth store has the
`semantics` and `timestamp_us` of an occupancy store), so the scores measure the renderer and
the camera conventions, not the labelling stage: the rendered depth must agree with the
scene's LiDAR and the synthetic cameras' true depth, the semantic maps with their true classes.
"""

import json

import numpy as np
import pytest

from uniscene.cli import main as cli_main
from uniscene.metrics import scene_stores
from uniscene.metrics.render import evaluate
from uniscene.paths import scene_store, truth_store
from store_examples import complete
from uniscene.store import open_store, write_store

SCENE = "synth-0000"
FRAME_STRIDE = 6  # the true occupancy is solid (~175k voxels): a few frames keep the test short


@pytest.fixture(scope="module")
def rendered(synthetic_dataset, tmp_path_factory):
    """Every FRAME_STRIDE-th frame of one scene rendered from its true occupancy, as the stage's stores."""
    config, dataroot = synthetic_dataset
    config = {**config, "device": "cpu", "dataset": {**config["dataset"], "scenes": [SCENE]}}
    root = tmp_path_factory.mktemp("render_synthetic")
    results = root / "results"
    frames, layout, render = (scene_store(results, SCENE, name) for name in ("frames", "layout", "render"))
    inline = json.dumps(config)
    assert cli_main(["frames", "--config", inline, "--scene", SCENE, "--out", str(root / "all_frames.zarr")]) == 0
    every = slice(0, None, FRAME_STRIDE)
    write_store(frames, open_store(root / "all_frames.zarr").isel(frame=every).load(), stage="frames", config_subset={})
    truth = open_store(truth_store(dataroot, SCENE))[["semantics", "timestamp_us"]].isel(frame=every).load()
    write_store(root / "occupancy.zarr", complete(truth, "occ_label"), stage="occ_label", config_subset={})
    assert cli_main(["layout", "--config", inline, "--frames", str(frames), "--out", str(layout)]) == 0
    argv = ["render", "--config", inline, "--frames", str(frames), "--occupancy", str(root / "occupancy.zarr"),
            "--layout", str(layout), "--out", str(render), "--preview", str(render.with_suffix(".png"))]
    assert cli_main(argv) == 0
    return config, results


def test_render_store_matches_frames(rendered):
    config, results = rendered
    render = open_store(scene_store(results, SCENE, "render"), stage="render")
    frames = open_store(scene_store(results, SCENE, "frames"), stage="frames")
    np.testing.assert_array_equal(render["timestamp_us"].values, frames["timestamp_us"].values)
    assert render["semantic"].shape[1:] == (6,) + tuple(config["synth"]["image_size"])
    np.testing.assert_allclose(render["intrinsics"].values, frames["cam_intrinsics"].values)  # render size = image size


def test_rendered_true_occupancy_agrees_with_lidar_and_cameras(rendered):
    config, results = rendered
    figures = evaluate(config, scene_stores({name: [scene_store(results, SCENE, name)] for name in ("frames", "render")}))
    lidar, semantic = figures["depth_vs_lidar"], figures["semantic_in_grid"]
    assert lidar["num"] > 10_000 and lidar["coverage"] > 0.95, lidar
    assert lidar["median_abs_error_m"] < 0.6, lidar
    assert figures["depth_vs_truth"]["median_abs_error_m"] < 0.6, figures["depth_vs_truth"]
    assert semantic["pixel_accuracy"] > 0.85, semantic
    assert semantic["iou"]["driveable_surface"] > 0.85, semantic
    assert semantic["miou"] > 0.4, semantic
