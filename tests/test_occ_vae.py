"""The occupancy VAE end to end on the tiny synthetic dataset (CPU): `uniscene train-occ-vae` learns,
`uniscene eval-occ-vae` scores stores and Occ3D folders, save -> load gives identical reconstructions,
a resumed training ends where an uninterrupted one does, and bad input stops with one message.

The occupancy is the dataset's true occupancy (truth/<scene>.zarr), so these tests do not wait for
the labelling stage; the Occ3D folder is written by the test from the same truth, one labels.npz per
sample (mask_lidar stood in for by mask_camera: the truth has no LiDAR mask).
"""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from uniscene import cli
from uniscene.config import checked_config, dumps
from uniscene.data import occ3d
from uniscene.data.reader import open_dataset, scene_record, scene_samples
from uniscene.data.scenes import train_scenes, val_scenes
from uniscene.grid import OccGrid
from uniscene.models.occ_vae.network import OccVAE
from uniscene.models.occ_vae.pretrained import load_vae
from uniscene.models.occ_vae.settings import OccVAESettings
from uniscene.models.occ_vae.sources import store_sequences
from uniscene.models.occ_vae.train import ClipDataset, train_vae
from uniscene.paths import truth_store
from uniscene.store import open_store, write_store
from uniscene.training import TrainingConfig, seed_everything

# The tiny training of the default run, shortened to fit the test: ~25 s on one CPU core.
TRAINING = {"steps": 150, "crop_cells": 64, "clip_frames": 2, "batch_size": 1, "learning_rate": 0.01}
SCORED_FRAMES = 12  # the held-out scene is scored on its first frames (full-grid decoding is the slow part on a CPU)


def vae_config(config: dict, **section) -> dict:
    config = copy.deepcopy(config)
    config["device"] = "cpu"
    config["occ_vae"] = {**config.get("occ_vae", {}), **TRAINING, **section}
    return checked_config(config)


def write_occ3d(config: dict, dataroot, root, scenes) -> dict:
    """Occ3D's layout (gts/<scene>/<sample>/labels.npz) from the truth at each sample's frame; {scene: [K, X, Y, Z] semantics}."""
    nusc = open_dataset(dataroot, config["dataset"]["version"])
    written = {}
    for scene in scenes:
        truth = open_store(truth_store(dataroot, scene))
        stamps = truth["timestamp_us"].values
        frames = []
        for sample in scene_samples(nusc, scene_record(nusc, scene)):
            row = int(np.argmin(np.abs(stamps - sample["timestamp"])))
            semantics, mask = truth["semantics"][row].values, truth["mask_camera"][row].values
            occ3d.write_labels_file(Path(root) / "gts" / scene / sample["token"] / occ3d.FILE_NAME, semantics, mask, mask)
            frames.append(semantics)
        written[scene] = np.stack(frames)
    return written


def cut_store(source, out, frames: int):
    """A copy of the truth store `source` holding its first `frames` frames."""
    dataset = open_store(source).isel(frame=slice(0, frames)).load()
    return write_store(out, dataset, stage="synth_truth", config_subset={}, inputs=[source])


@pytest.fixture(scope="module")
def trained(synthetic_dataset, tmp_path_factory):
    """The tiny VAE trained by `uniscene train-occ-vae` on the training scenes' truth, and its metrics on the held-out one."""
    base, dataroot = synthetic_dataset
    config = vae_config(base)
    folder = tmp_path_factory.mktemp("occ_vae")
    model, metrics = folder / "models" / "occ_vae", folder / "metrics" / "occ_vae.json"
    train, val = train_scenes(config), val_scenes(config)
    assert cli.main(["train-occ-vae", "--config", dumps(config), "--occupancy", *[str(truth_store(dataroot, s)) for s in train],
                     "--out", str(model)]) == 0
    scored = [str(cut_store(truth_store(dataroot, s), folder / "scored" / f"{s}.zarr", SCORED_FRAMES)) for s in val]
    assert cli.main(["eval-occ-vae", "--config", dumps(config), "--model", str(model), "--occupancy", *scored,
                     "--out", str(metrics)]) == 0
    return config, dataroot, model, json.loads(metrics.read_text())


def test_tiny_config_learns(trained):
    config, _, model, metrics = trained
    scores = metrics["sources"]["occupancy"]
    baseline = scores["constant_class_baseline"]["miou"]
    # a model that learned nothing gets the constant-class figure (under 1 here); the short training is far above it
    # (80 steps of 64-cell crops gave mIoU 5.5, IoU 64.7 against a baseline of ~0.2)
    assert baseline < 1.0
    assert scores["miou"] > 4.0 and scores["miou"] > 10 * baseline
    assert scores["iou_geometric"] > 40.0
    assert scores["frames"] == SCORED_FRAMES * len(val_scenes(config))
    assert scores["encode_decode_ms_per_frame"] > 0
    # the compression ratio, in the model's config and the metrics: 200 x 200 x 16 voxels per 8 x 50 x 50 latent
    assert metrics["compression_ratio"] == json.loads((model / "config.json").read_text())["compression_ratio"] == 32.0
    assert metrics["latent_shape_per_frame"] == [8, 50, 50]
    training = json.loads((model / "training.json").read_text())
    history = [json.loads(line) for line in (model / "history.jsonl").read_text().splitlines()]
    assert history[-1]["step"] == TRAINING["steps"] and history[-1]["losses"]["loss"] < history[0]["losses"]["loss"]
    assert training["steps"] == TRAINING["steps"] and len(training["class_weights"]) == 18
    assert not (model.parent / "occ_vae.checkpoint").exists()


def test_save_load_round_trip_reconstructs_identically(trained, tmp_path):
    config, dataroot, model, _ = trained
    vae = load_vae(model, OccGrid.from_config(config).shape)
    assert vae.config.scaling_factor > 0 and vae.config.scaling_factor != 1.0  # set from the training latents
    semantics = torch.from_numpy(open_store(truth_store(dataroot, val_scenes(config)[0]))["semantics"][:3].values)[None]
    vae.save_pretrained(tmp_path / "copy")
    again = load_vae(tmp_path / "copy", OccGrid.from_config(config).shape)
    with torch.no_grad():
        first = vae.decode(vae.encode(semantics).latent_dist.mode()).logits
        second = again.decode(again.encode(semantics).latent_dist.mode()).logits
    assert torch.equal(first, second)
    assert torch.equal(vae.reconstruct(semantics), again.reconstruct(semantics))


class _Interrupt(Exception):
    pass


class _StopAfter(ClipDataset):
    """The clip dataset, raising after `limit` items: a job killed mid-training."""

    def __init__(self, sequences, clip_frames, limit):
        super().__init__(sequences, clip_frames)
        self.limit, self.served = limit, 0

    def __getitem__(self, index):
        if self.served >= self.limit:
            raise _Interrupt()
        self.served += 1
        return super().__getitem__(index)


def test_resumed_training_ends_with_the_same_weights(synthetic_dataset, tmp_path, monkeypatch):
    base, dataroot = synthetic_dataset
    config = vae_config(base, steps=4, crop_cells=32, clip_frames=2)
    settings = OccVAESettings.from_config(config)
    grid = OccGrid.from_config(config)
    sequences = store_sequences([truth_store(dataroot, s) for s in train_scenes(config)], grid)
    training = TrainingConfig(batch_size=1, learning_rate=3e-3, steps=4, checkpoint_every=2, log_every=1, seed=0)

    def run(work, limit=None):
        if limit is not None:
            monkeypatch.setattr("uniscene.models.occ_vae.train.ClipDataset", lambda s, t: _StopAfter(s, t, limit))
        seed_everything(0)
        vae = OccVAE(**settings.model_config(grid.shape))
        try:
            trainer, _ = train_vae(vae, sequences, settings, seed=0, device="cpu", work_dir=work, run_hash="h", training=training)
        finally:
            monkeypatch.undo()
        return trainer.final_model().state_dict()

    whole = run(tmp_path / "whole")
    with pytest.raises(_Interrupt):
        run(tmp_path / "cut", limit=2)  # killed reading step 3's clip, after the checkpoint of step 2
    assert json.loads((tmp_path / "cut" / "history.jsonl").read_text().splitlines()[-1])["step"] == 2
    resumed = run(tmp_path / "cut")
    assert whole.keys() == resumed.keys()
    for name in whole:
        assert torch.equal(whole[name], resumed[name]), name


def test_occ3d_folder_scores_like_the_same_frames_in_a_store(trained, tmp_path):
    config, dataroot, model, _ = trained
    scene = val_scenes(config)[0]
    written = write_occ3d(config, dataroot, tmp_path / "occ3d", [scene])
    out = tmp_path / "occ3d.json"
    assert cli.main(["eval-occ-vae", "--config", dumps(config), "--model", str(model), "--occ3d", str(tmp_path / "occ3d"),
                     "--out", str(out)]) == 0
    scores = json.loads(out.read_text())["sources"]["occ3d"]
    assert scores["frames"] == len(written[scene]) and list(scores["scenes"]) == [scene]
    # the samples are the 2 Hz keyframes: score them by hand through the same VAE, clips of the same length
    vae = load_vae(model, OccGrid.from_config(config).shape)
    from uniscene.metrics.occ_vae import score_sequences
    from uniscene.models.occ_vae.sources import occ3d_sequences

    again = score_sequences(vae, occ3d_sequences(tmp_path / "occ3d", None, config, OccGrid.from_config(config)),
                            config["occ_vae"]["clip_frames"], 2)
    assert again["miou"] == scores["miou"] and again["iou_per_class"] == scores["iou_per_class"]
    assert scores["miou"] > 10 * scores["constant_class_baseline"]["miou"]


def test_training_on_occ3d(trained, tmp_path):
    config, dataroot, _, _ = trained
    written = write_occ3d(config, dataroot, tmp_path / "occ3d", train_scenes(config))
    occ3d_config = vae_config(config, source="occ3d", occ3d_root=str(tmp_path / "occ3d"), steps=2, clip_frames=2, crop_cells=32)
    model = tmp_path / "model"
    assert cli.main(["train-occ-vae", "--config", dumps(occ3d_config), "--scenes", *train_scenes(config), "--out", str(model)]) == 0
    training = json.loads((model / "training.json").read_text())
    assert training["frames"] == sum(len(v) for v in written.values()) and training["scenes"] == train_scenes(config)


def test_user_errors(trained, tmp_path, capsys):
    config, dataroot, model, _ = trained
    text = dumps(config)
    scene = val_scenes(config)[0]
    root = tmp_path / "occ3d"
    write_occ3d(config, dataroot, root, [scene])
    files = sorted((root / "gts" / scene).glob("*/labels.npz"))
    out = tmp_path / "out.json"

    def fails(*argv) -> str:
        assert cli.main(list(argv)) == 2
        assert not out.exists()  # no partial output
        return capsys.readouterr().err

    # a missing labels.npz
    files[1].rename(files[1].with_suffix(".bak"))
    err = fails("eval-occ-vae", "--config", text, "--model", str(model), "--occ3d", str(root), "--out", str(out))
    assert f"Occ3D file {files[1]} is missing" in err and len(err.strip().splitlines()) == 1
    files[1].with_suffix(".bak").rename(files[1])
    # a mis-shaped one
    occ3d.write_labels_file(files[2], *(np.zeros((100, 100, 16), np.uint8),) * 3)
    err = fails("eval-occ-vae", "--config", text, "--model", str(model), "--occ3d", str(root), "--out", str(out))
    assert f"Occ3D file {files[2]}: 'semantics' has shape (100, 100, 16), the grid is (200, 200, 16)" in err
    # a model folder of another model
    from uniscene.models.lidar.network import MODEL_CONFIGS, LidarRangeNet

    LidarRangeNet(**MODEL_CONFIGS["tiny"]).save_pretrained(tmp_path / "lidar")
    store = str(truth_store(dataroot, scene))
    err = fails("eval-occ-vae", "--config", text, "--model", str(tmp_path / "lidar"), "--occupancy", store, "--out", str(out))
    assert "holds a LidarRangeNet, not an OccVAE" in err
    # an OccVAE folder whose config is not the one its weights were trained with
    saved = load_vae(model)
    saved.save_pretrained(tmp_path / "edited")
    edited = json.loads((tmp_path / "edited" / "config.json").read_text())
    edited.update(latent_channels=4, compression_ratio=64.0)
    (tmp_path / "edited" / "config.json").write_text(json.dumps(edited))
    err = fails("eval-occ-vae", "--config", text, "--model", str(tmp_path / "edited"), "--occupancy", store, "--out", str(out))
    assert "cannot be loaded as an OccVAE" in err and "weights do not match" in err
    # a grid that does not match the model: the config's grid has 8 layers
    other = copy.deepcopy(config)
    other["grid"] = {"range_m": [-40.0, -40.0, -1.0, 40.0, 40.0, 2.2], "voxel_size_m": 0.4}
    err = fails("eval-occ-vae", "--config", dumps(other), "--model", str(model), "--occupancy", store, "--out", str(out))
    assert "was trained for the grid (200, 200, 16), the occupancy here is (200, 200, 8)" in err
    # and occupancy stores on another grid than the config's
    err = fails("train-occ-vae", "--config", dumps(other), "--occupancy", store, "--out", str(tmp_path / "m"))
    assert f"store {store} is on the grid" in err and not (tmp_path / "m").exists()
