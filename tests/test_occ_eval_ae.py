"""The evaluation-only occupancy autoencoder and the F3D / MMD of results/metrics/occ_gen.json, against numbers known
by construction.

The world is test_occ_gen's: a 48 x 48 x 4 grid (0.4 m), a road along x between walkways, cars
two voxels high driving along it. `uniscene train-occ-eval-ae` trains the tiny model on twelve
training scenes; two held-out scenes are the label distribution the figures compare with.
"""

import copy
import json

import numpy as np
import pytest
import torch

from store_examples import complete, example_dataset
from test_occ_gen import CAR, GRID, LANES_M, write_scene
from uniscene import cli
from uniscene.classes import OCC_CLASS_ID
from uniscene.config import defaults, dumps
from uniscene.errors import UserError
from uniscene.metrics import occ_gen as occ_gen_metrics
from uniscene.metrics import scene_stores
from uniscene.metrics.frechet import features_frechet
from uniscene.metrics.mmd import median_bandwidth, mmd_rbf
from uniscene.models.occ_eval_ae.features import frame_features
from uniscene.models.occ_eval_ae.network import OccEvalAE
from uniscene.models.occ_eval_ae.pretrained import load_eval_ae
from uniscene.store import open_store, write_store

STEPS = 80
VEGETATION = OCC_CLASS_ID["vegetation"]


def world_config() -> dict:
    config = copy.deepcopy(defaults())
    config["device"] = "cpu"
    config["grid"] = {"range_m": list(GRID.range_m), "voxel_size_m": GRID.voxel_size_m}
    config["occ_eval_ae"].update(model="tiny", steps=STEPS, batch_size=8, learning_rate=0.01)
    return config


def random_cars(rng) -> list:
    return [(rng.uniform(-7, 7), LANES_M[rng.integers(2)], rng.uniform(-3, 3)) for _ in range(rng.integers(1, 4))]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(config, root, model folder, held-out label stores): the tiny model trained on twelve scenes by the command."""
    root = tmp_path_factory.mktemp("occ_eval_ae_world")
    rng = np.random.default_rng(1)
    train = [write_scene(root / "scenes", f"train-{i:02d}", random_cars(rng)) / "occ_label.zarr" for i in range(12)]
    held_out = [write_scene(root / "scenes", f"held-{i}", random_cars(rng)) for i in range(2)]
    config = world_config()
    model = root / "models" / "occ_eval_ae"
    assert cli.main(["train-occ-eval-ae", "--config", dumps(config), "--occupancy", *map(str, train), "--out", str(model)]) == 0
    return config, root, model, held_out


def labels_of(scenes) -> np.ndarray:
    return np.concatenate([open_store(s / "occ_label.zarr")["semantics"].values for s in scenes])  # [T, X, Y, Z]


def test_reconstruction_beats_the_constant_prediction(trained):
    """The mean IoU (free is ~73 % of the voxels, so the accuracy says little; a 4 x 4 x 2 patch here mixes the ground
    with the free voxel above it, so no per-patch prediction tops ~75 % accuracy)."""
    _, _, model, held_out = trained
    info = json.loads((model / "training.json").read_text())
    assert info["scenes"] == [f"train-{i:02d}" for i in range(12)] and info["frames"] == 120 and info["steps"] == STEPS
    scores = info["reconstruction_on_training_frames"]
    assert scores["miou"] > scores["constant_miou"] + 0.15, scores
    assert scores["patch_ceiling_miou"] >= scores["miou"], scores
    # the same on the held-out scenes, which it never saw
    from uniscene.models.occ_eval_ae.train import reconstruction_scores
    held = reconstruction_scores(load_eval_ae(model, GRID.shape), labels_of(held_out))
    assert held["miou"] > held["constant_miou"] + 0.15, held


def test_f3d_and_mmd_rank_distributions(trained):
    """Identical sets score ~0; cars turned into vegetation score far above cars moved by one voxel."""
    _, _, model_dir, held_out = trained
    model = load_eval_ae(model_dir, GRID.shape)
    labels = labels_of(held_out)
    moved = labels.copy()
    moved[labels == CAR] = OCC_CLASS_ID["driveable_surface"]  # cars one voxel further along x; the road under them
    cars = np.roll(labels == CAR, 1, axis=1)
    moved[cars] = CAR
    corrupted = np.where(labels == CAR, VEGETATION, labels).astype(np.uint8)
    reference = frame_features(model, labels)
    assert reference.shape == (20, model.config.feature_dim)
    sigma = median_bandwidth(reference)

    def figures(other):
        features = frame_features(model, other)
        return features_frechet(features, reference), mmd_rbf(features, reference, sigma)

    same, light, heavy = figures(labels), figures(moved), figures(corrupted)
    assert abs(same[0]) < 1e-6 * heavy[0]
    assert abs(same[1]) <= 2.0 / len(reference)  # the unbiased estimate of identical sets: 2 (mean k - 1) / n
    assert heavy[0] > 5 * light[0] and heavy[1] > 5 * light[1], (light, heavy)


def test_mmd_closed_forms():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)), rng.normal(size=(50, 3)) + 2.0
    # a slow, obvious reference: the U-statistic by loops
    sigma = 1.5

    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / (2 * sigma**2))

    xx = np.mean([k(x[i], x[j]) for i in range(40) for j in range(40) if i != j])
    yy = np.mean([k(y[i], y[j]) for i in range(50) for j in range(50) if i != j])
    xy = np.mean([k(a, b) for a in x for b in y])
    assert mmd_rbf(x, y, sigma) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    assert mmd_rbf(x, y, sigma, unbiased=False) == pytest.approx(
        np.mean([k(a, b) for a in x for b in x]) + np.mean([k(a, b) for a in y for b in y]) - 2 * xy, rel=1e-10)
    distances = [np.linalg.norm(x[i] - x[j]) for i in range(40) for j in range(i + 1, 40)]
    assert median_bandwidth(x) == pytest.approx(np.median(distances), rel=1e-10)
    # the same distribution: centred on 0; a shifted one: clearly positive
    same = [mmd_rbf(rng.normal(size=(40, 3)), rng.normal(size=(40, 3)), 1.5) for _ in range(20)]
    assert abs(np.mean(same)) < 0.01 and mmd_rbf(x, y, sigma) > 0.5


def test_save_load_round_trip_gives_identical_features(trained, tmp_path):
    _, _, model_dir, held_out = trained
    model = load_eval_ae(model_dir, GRID.shape)
    model.save_pretrained(tmp_path / "copy")
    again = load_eval_ae(tmp_path / "copy", GRID.shape)
    labels = torch.from_numpy(labels_of(held_out)[:6])
    with torch.no_grad():
        assert torch.equal(model.features(labels), again.features(labels))
        assert torch.equal(model(labels).logits, again(labels).logits)
    assert model.features(labels).shape == (6, model.config.feature_dim)


def write_stand_ins(root, scene_dir, generated: np.ndarray):
    """frames.zarr (stand-in) and gen/occ_gen.zarr (`generated` [T, X, Y, Z] on the label store's frames) of a scene."""
    labels = open_store(scene_dir / "occ_label.zarr")
    name = str(labels.attrs["scene"])
    frames = example_dataset("frames", frame=labels.sizes["frame"])
    frames.attrs["scene"] = name
    write_store(root / name / "frames.zarr", frames, stage="frames", config_subset={})
    store = labels[["semantics", "mask_lidar", "mask_camera", "timestamp_us"]].load().copy()
    store["semantics"] = (("frame", "x", "y", "z"), generated)
    write_store(root / name / "occ_gen.zarr", complete(store, "occ_gen"), stage="occ_gen", config_subset={})
    return root / name


def test_occ_gen_metrics_hold_f3d_and_mmd(trained, tmp_path):
    """occ_gen's evaluate on two held-out scenes whose 'generated' occupancy is their labels (figures ~0, the matched
    halves equal to the floor, split by scene), then the labels with cars turned into vegetation; the model's identity
    in the JSON."""
    config, _, model_dir, held_out = trained
    config = {**config, "dataset": {**config["dataset"], "kind": "synthetic"}}

    def figures(name, corrupt):
        stores = {"frames": [], "layout": [], "occ_label": [], "occ_gen": []}
        for scene in held_out:
            labels = open_store(scene / "occ_label.zarr")["semantics"].values
            generated = np.where(labels == CAR, VEGETATION, labels).astype(np.uint8) if corrupt else labels
            stand_ins = write_stand_ins(tmp_path / name, scene, generated)
            stores["frames"].append(stand_ins / "frames.zarr")
            stores["occ_gen"].append(stand_ins / "occ_gen.zarr")
            stores["layout"].append(scene / "layout.zarr")
            stores["occ_label"].append(scene / "occ_label.zarr")
        return occ_gen_metrics.evaluate(config, scene_stores(stores), occ_eval_ae=model_dir)["f3d_mmd"]

    same, corrupted = figures("same", False), figures("corrupted", True)
    model = same["feature_model"]
    assert model["folder"] == str(model_dir) and model["feature_dim"] == 128 and len(model["weights_sha256"]) == 64
    assert model["trained_on_scenes"] == [f"train-{i:02d}" for i in range(12)]
    assert same["floor"]["split"].startswith("by scene") and same["floor"]["half_a"] == {"held-0": "all"}
    assert (same["default"]["frames_a"], same["default"]["frames_b"]) == (20, 20)
    assert same["eval_window"]["default"]["frames_a"] == 20  # eval_frames 13 > the scenes' 10 frames
    assert abs(same["default"]["f3d"]) < 1e-5 and abs(same["default"]["mmd"]) <= 2.0 / 20
    assert same["generated_b_vs_label_a"] == {key: same["floor"][key] for key in ("frames_a", "frames_b", "f3d", "mmd")}
    assert corrupted["floor"] == same["floor"] and corrupted["mmd_bandwidth"] == same["mmd_bandwidth"]
    assert corrupted["default"]["f3d"] > 1e-3 and corrupted["default"]["mmd"] > 0.2, corrupted["default"]


def test_bad_model_folders(trained, tmp_path, capsys):
    config, _, model_dir, held_out = trained
    with pytest.raises(UserError, match="has no config.json"):
        load_eval_ae(tmp_path / "missing")
    OccEvalAE(grid_shape=(8, 8, 4), block_out_channels=(8,), feature_dim=4).save_pretrained(tmp_path / "small")
    with pytest.raises(UserError, match="trained for the grid"):
        load_eval_ae(tmp_path / "small", GRID.shape)
    (tmp_path / "small" / "diffusion_pytorch_model.safetensors").write_bytes(b"not weights")
    with pytest.raises(UserError, match="cannot be loaded as an OccEvalAE"):
        load_eval_ae(tmp_path / "small")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"_class_name": "OccVAE"}))
    with pytest.raises(UserError, match="holds a OccVAE, not an OccEvalAE"):
        load_eval_ae(tmp_path / "other")
    # through the command: one line, exit status 2, no output
    config = {**config, "dataset": {**config["dataset"], "kind": "synthetic"}}
    scene = held_out[0]
    labels = open_store(scene / "occ_label.zarr")["semantics"].values
    stand_ins = write_stand_ins(tmp_path / "stores", scene, labels)
    out = tmp_path / "occ_gen.json"
    assert cli.main(["metrics", "occ_gen", "--config", dumps(config), "--frames", str(stand_ins / "frames.zarr"),
                     "--layout", str(scene / "layout.zarr"), "--occ-label", str(scene / "occ_label.zarr"),
                     *[part for flag in ("", "-ddim50", "-leak-noise-prior", "-leak-meta")
                       for part in (f"--occ-gen{flag}", str(stand_ins / "occ_gen.zarr"))],
                     "--occ-eval-ae", str(tmp_path / "other"), "--out", str(out)]) == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and "not an OccEvalAE" in message and str(tmp_path / "other") in message
    assert not out.exists()
    # training on held-out-sized data that cannot fill a batch
    few = copy.deepcopy(config)
    few["occ_eval_ae"]["batch_size"] = 64
    assert cli.main(["train-occ-eval-ae", "--config", dumps(few), "--occupancy", str(scene / "occ_label.zarr"),
                     "--out", str(tmp_path / "m")]) == 2
    assert "occ_eval_ae.batch_size" in capsys.readouterr().err and not (tmp_path / "m").exists()
