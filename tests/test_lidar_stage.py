"""LiDAR generation end to end on the tiny synthetic dataset: `uniscene train-lidar`, `uniscene
lidar` (store layout, .pcd.bin export, the ray-cast baseline), `uniscene metrics lidar`, resuming, errors.

Label occupancy is stood in for by the dataset's true occupancy (written as an occ_label store),
so these tests do not depend on the labelling stage's speed; each scene is cut to every
FRAME_STEP-th 12 Hz frame to keep the suite fast.
"""

import copy
import json

import numpy as np
import pytest
import torch
import xarray as xr

from uniscene import cli
from uniscene.config import dumps
from uniscene.data.files import read_sweep
from uniscene.data.scenes import selected_scenes, train_scenes, val_scenes
from uniscene.errors import UserError
from uniscene.grid import OccGrid
from uniscene.models.lidar.beams import beam_pattern
from uniscene.models.lidar.inputs import load_scene_inputs, true_range_images
from uniscene.models.lidar.network import MODEL_CONFIGS, LidarRangeNet
from uniscene.models.lidar.pipeline import cast_frames
from uniscene.models.lidar.train import TrainingSet, train_network
from uniscene.paths import model_dir, scene_store, truth_store
from store_examples import complete
from uniscene.store import open_store, write_store

EPOCHS = 4
FRAME_STEP = 4


def cut_frames(path, step: int) -> None:
    """Rewrite a frames store with every `step`-th frame (the sweep arrays stay whole)."""
    frames = open_store(path, "frames").isel(frame=slice(None, None, step)).load()
    write_store(path, frames, stage="frames", config_subset={}, inputs=[path])


def write_label_stand_in(config, dataroot, scene, out, step: int):
    """An occ_label store holding the true semantics of every `step`-th frame of `scene`."""
    truth = open_store(truth_store(dataroot, scene)).isel(frame=slice(None, None, step))
    grid = OccGrid.from_config(config)
    dataset = xr.Dataset(
        {"semantics": (("frame", "x", "y", "z"), truth["semantics"].values), "timestamp_us": ("frame", truth["timestamp_us"].values)},
        attrs={"scene": scene, **grid.to_attrs(), "backend": "truth (test stand-in)"},
    )
    write_store(out, complete(dataset, "occ_label"), stage="occ_label", config_subset={}, inputs=[truth_store(dataroot, scene)],
                frame_chunk=8)


@pytest.fixture(scope="module")
def lidar_run(synthetic_dataset, tmp_path_factory):
    config, dataroot = synthetic_dataset
    config = copy.deepcopy(config)
    config["device"] = "cpu"
    config["lidar"] = {**config["lidar"], "epochs": EPOCHS, "batch_size": 4}
    results = tmp_path_factory.mktemp("lidar_results")
    text = dumps(config)
    for scene in selected_scenes(config):
        assert cli.main(["frames", "--config", text, "--scene", scene, "--out", str(scene_store(results, scene, "frames"))]) == 0
        cut_frames(scene_store(results, scene, "frames"), FRAME_STEP)
        write_label_stand_in(config, dataroot, scene, scene_store(results, scene, "occ_label"), FRAME_STEP)
    train = train_scenes(config)
    assert cli.main(["train-lidar", "--config", text, "--frames", *[str(scene_store(results, s, "frames")) for s in train],
                     "--occupancy", *[str(scene_store(results, s, "occ_label")) for s in train],
                     "--out", str(model_dir(results, "lidar"))]) == 0
    scene = val_scenes(config)[0]
    export = scene_store(results, scene, "lidar").parent / "lidar_pcd"
    assert cli.main(["lidar", "--config", text, "--model", str(model_dir(results, "lidar")),
                     "--frames", str(scene_store(results, scene, "frames")), "--occupancy", str(scene_store(results, scene, "occ_label")),
                     "--out", str(scene_store(results, scene, "lidar")), "--export", str(export)]) == 0
    assert cli.main(["lidar", "--method", "raycast", "--config", text, "--model", str(model_dir(results, "lidar")),
                     "--frames", str(scene_store(results, scene, "frames")), "--occupancy", str(scene_store(results, scene, "occ_label")),
                     "--out", str(scene_store(results, scene, "lidar_raycast"))]) == 0
    return config, dataroot, results, scene, export


def test_model_folder(lidar_run):
    config, _, results, _, _ = lidar_run
    folder = model_dir(results, "lidar")
    network = LidarRangeNet.from_pretrained(folder, low_cpu_mem_usage=False)
    assert network.config.block_out_channels == list(MODEL_CONFIGS["tiny"]["block_out_channels"])
    assert len(json.loads((folder / "class_intensity.json").read_text())["class_intensity"]) == 18
    training = json.loads((folder / "training.json").read_text())
    assert [h["epoch"] for h in training["history"]] == list(range(1, EPOCHS + 1))
    assert not (folder.parent / "lidar.checkpoint").exists()  # removed once the model is in place


def test_lidar_store_and_export(lidar_run):
    config, _, results, scene, export = lidar_run
    store = open_store(scene_store(results, scene, "lidar"), "lidar")
    frames = open_store(scene_store(results, scene, "frames"), "frames")
    num_frames = frames.sizes["frame"]
    assert store["points"].dims == ("point", "channel") and store["points"].dtype == np.float32
    assert list(store["channel"].values) == ["x", "y", "z", "intensity", "ring"]
    offsets = store["frame_offsets"].values
    assert store["frame_offsets"].dims == ("frame_edge",) and offsets.shape == (num_frames + 1,) and offsets[0] == 0
    assert np.all(np.diff(offsets) > 1000) and offsets[-1] == store.sizes["point"]
    np.testing.assert_array_equal(store["timestamp_us"].values, frames["timestamp_us"].values)
    recorded = store.attrs["uniscene"]["config"]  # what sampling reads; the model's training is an input (fingerprinted)
    assert store.attrs["source"] == "label" and set(recorded["lidar"]) == {"ray_drop", "cast_batch"}
    assert recorded["synth"] == {"lidar_azimuth_steps": config["synth"]["lidar_azimuth_steps"]}
    points = store["points"].values
    pattern = beam_pattern(config)
    range_m = np.linalg.norm(points[:, :3], axis=1)
    assert range_m.min() >= pattern.min_range_m and range_m.max() <= pattern.max_range_m
    assert set(np.unique(points[:, 4])) <= set(range(32))
    files = sorted(export.glob("*.pcd.bin"))
    assert len(files) == num_frames
    stamp = int(frames["timestamp_us"].values[5])
    np.testing.assert_array_equal(read_sweep(export / f"{scene}__LIDAR_TOP__{stamp}.pcd.bin"), points[offsets[5]:offsets[6]])


def test_generated_chain_sweeps_scored_as_generated(lidar_run, tmp_path):
    """gen/lidar.zarr (sweeps from an occ_gen store) is scored under sources.generated; an occ_gen store holding the label
    occupancy itself gives the label chain's figures exactly (same occupancy, same seed)."""
    config, _, results, scene, _ = lidar_run
    text = dumps(config)
    labels = open_store(scene_store(results, scene, "occ_label"), "occ_label").load()
    generated = labels[["semantics", "timestamp_us"]].assign(clip=("frame", np.zeros(labels.sizes["frame"], np.int64)))
    generated.attrs.update(sampler="stand-in", inference_steps=0, guidance_scale=0.0, seed=0)
    write_store(tmp_path / "occ_gen.zarr", complete(generated, "occ_gen"), stage="occ_gen", config_subset={})
    assert cli.main(["lidar", "--config", text, "--model", str(model_dir(results, "lidar")), "--frames", str(scene_store(results, scene, "frames")),
                     "--occupancy", str(tmp_path / "occ_gen.zarr"), "--out", str(tmp_path / "gen_lidar.zarr")]) == 0
    assert open_store(tmp_path / "gen_lidar.zarr", "lidar").attrs["source"] == "generated"
    out = tmp_path / "lidar.json"
    assert cli.main(["metrics", "lidar", "--config", text, "--frames", str(scene_store(results, scene, "frames")),
                     "--lidar", str(scene_store(results, scene, "lidar")), "--lidar-raycast", str(scene_store(results, scene, "lidar_raycast")),
                     "--lidar-gen", str(tmp_path / "gen_lidar.zarr"), "--out", str(out)]) == 0
    sources = json.loads(out.read_text())["sources"]
    generated_figures, label_figures = sources["generated"]["learned"], sources["label"]["learned"]
    assert generated_figures.pop("from") == [str(tmp_path / "gen_lidar.zarr")]
    label_figures.pop("from")
    assert generated_figures == label_figures


def test_metrics_against_recorded_sweeps(lidar_run, tmp_path):
    config, _, results, scene, _ = lidar_run
    out = tmp_path / "lidar.json"
    assert cli.main(["metrics", "lidar", "--config", dumps(config), "--frames", str(scene_store(results, scene, "frames")),
                     "--lidar", str(scene_store(results, scene, "lidar")),
                     "--lidar-raycast", str(scene_store(results, scene, "lidar_raycast")), "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["scenes"] == [scene] and payload["held_out"]
    assert payload["sources"]["generated"]["status"].startswith("not scored")
    label = payload["sources"]["label"]
    raycast, learned = label["raycast"], label["learned"]
    assert learned["from"] == [str(scene_store(results, scene, "lidar"))]
    assert raycast["from"] == [str(scene_store(results, scene, "lidar_raycast"))]
    assert open_store(scene_store(results, scene, "lidar_raycast"), "lidar").attrs["method"] == "raycast"
    # the ray-cast of the true occupancy lands within a voxel or so of the recorded return (it
    # stops at voxel faces: 0.2 m above the true ground); the learned correction does better
    assert raycast["range_median_ae_m"] < 1.0 and raycast["ray_drop_f1"] > 0.5
    assert learned["range_median_ae_m"] < raycast["range_median_ae_m"]
    assert 0.8 < raycast["points_per_sweep"] / raycast["recorded_points_per_sweep"] < 1.0
    for figures in (raycast, learned):
        assert figures["mmd_bev"] > 0 and 0 < figures["jsd_bev"] < 1 and figures["chamfer_m"] > 0
        assert figures["num_sweeps"] == open_store(scene_store(results, scene, "frames")).sizes["frame"]
    assert label["mmd_ratio_raycast_over_learned"] == pytest.approx(raycast["mmd_bev"] / learned["mmd_bev"])


def test_training_resumes_from_its_checkpoint(lidar_run, tmp_path):
    config, _, results, scene, _ = lidar_run
    grid, pattern = OccGrid.from_config(config), beam_pattern(config)
    inputs = load_scene_inputs(scene_store(results, scene, "frames"), scene_store(results, scene, "occ_label"), grid)
    priors = [p for _, p in cast_frames(grid, inputs.semantics[:2], inputs.ego_from_sensor[:2], pattern, 2, "cpu")]
    data = TrainingSet.from_parts(priors, [true_range_images(inputs.sweep_paths[:2], pattern)])
    kwargs = dict(epochs=2, batch_size=2, crop_width=128, learning_rate=1e-3, seed=0, device="cpu", checkpoint_dir=tmp_path / "ck")
    torch.manual_seed(0)
    trained = LidarRangeNet(**MODEL_CONFIGS["tiny"])
    history = train_network(trained, data, pattern, run_config={"run": 1}, **kwargs)
    resumed = LidarRangeNet(**MODEL_CONFIGS["tiny"])
    assert train_network(resumed, data, pattern, run_config={"run": 1}, **kwargs) == history  # nothing left to do
    for a, b in zip(trained.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b)
    fresh = train_network(LidarRangeNet(**MODEL_CONFIGS["tiny"]), data, pattern, run_config={"run": 2}, **kwargs)
    assert len(fresh) == 2  # another run's checkpoint is ignored


def test_user_errors(lidar_run, tmp_path, capsys):
    config, _, results, scene, _ = lidar_run
    text = dumps(config)
    frames = str(scene_store(results, scene, "frames"))
    assert cli.main(["train-lidar", "--config", text, "--frames", frames, frames, "--occupancy", frames, "--out", str(tmp_path / "m")]) == 2
    assert "give one occupancy store per frames store" in capsys.readouterr().err
    assert cli.main(["lidar", "--config", text, "--model", str(tmp_path), "--frames", frames, "--occupancy", frames,
                     "--out", str(tmp_path / "l.zarr")]) == 2
    assert "not a trained LiDAR model" in capsys.readouterr().err
    other = copy.deepcopy(config)
    other["grid"] = {"range_m": [-20.0, -20.0, -1.0, 20.0, 20.0, 5.4], "voxel_size_m": 0.4}
    with pytest.raises(UserError, match="grid.range_m"):
        load_scene_inputs(frames, scene_store(results, scene, "occ_label"), OccGrid.from_config(other))
    assert not (tmp_path / "l.zarr").exists()
    # the metrics: stores of one kind per scene, in the frames' scene order, of the method each argument takes
    lidar, raycast = str(scene_store(results, scene, "lidar")), str(scene_store(results, scene, "lidar_raycast"))
    train_frames = str(scene_store(results, train_scenes(config)[0], "frames"))
    out = str(tmp_path / "lidar.json")
    assert cli.main(["metrics", "lidar", "--config", text, "--frames", frames, "--lidar", lidar, "--out", out]) == 2
    assert "--lidar-raycast" in capsys.readouterr().err
    assert cli.main(["metrics", "lidar", "--config", text, "--frames", train_frames, frames, "--lidar", lidar,
                     "--lidar-raycast", raycast, "--out", out]) == 2
    assert "--lidar names 1 stores and --frames 2" in capsys.readouterr().err
    assert cli.main(["metrics", "lidar", "--config", text, "--frames", train_frames, "--lidar", lidar,
                     "--lidar-raycast", raycast, "--out", out]) == 2
    assert f"store {lidar} is of scene {scene}" in capsys.readouterr().err
    assert cli.main(["metrics", "lidar", "--config", text, "--frames", frames, "--lidar", raycast,
                     "--lidar-raycast", raycast, "--out", out]) == 2
    assert "holds raycast sweeps, --lidar takes learned ones" in capsys.readouterr().err
    assert cli.main(["metrics", "lidar", "--config", text, "--frames", frames, "--lidar", lidar, "--lidar-raycast", raycast,
                     "--layout", lidar, "--out", out]) == 2
    assert "does not read --layout" in capsys.readouterr().err
    assert not (tmp_path / "lidar.json").exists()
