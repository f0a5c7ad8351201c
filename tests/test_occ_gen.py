"""Occupancy generation end to end on a small procedural world: `uniscene train-occ-dit` on a trained VAE,
`uniscene occ-gen` (store, provenance, no label store read by default, the leak options), a layout edit
regenerated with a fixed seed, and the occ_gen metrics against numbers known by construction.

The world: a 48 x 48 x 4 grid (0.4 m), a road along x (drivable_area) between walkways, and cars (boxes
drawn by the layout's own rasteriser) driving along the road; their voxels are the footprint cells at
heights 1-2 above the ground. Every scene is written as a layout.zarr and an occ_label.zarr.
"""

import copy
import json

import numpy as np
import pytest
import torch
import xarray as xr
from PIL import Image

from uniscene import cli
from uniscene.classes import FREE, LAYOUT_CHANNEL_NAMES, OCC_CLASS_ID
from uniscene.config import defaults, dumps
from uniscene.geometry import yaw_to_quaternion
from uniscene.grid import OccGrid
from uniscene.layout.raster import NUM_MAP_LAYERS, box_footprints, layout_dataset
from uniscene.metrics import occ_gen as occ_gen_metrics
from uniscene.store import open_store, store_provenance, write_store

GRID = OccGrid((-9.6, -9.6, -1.0, 9.6, 9.6, 0.6), 0.4)  # 48 x 48 x 4
ROAD_HALF_WIDTH_M = 4.0
LANES_M = (-1.8, 1.8)
CAR_SIZE_M = (1.95, 4.6, 1.7)
FRAMES = 10
VAE_STEPS = 150
CAR = OCC_CLASS_ID["car"]
CAR_CHANNEL = LAYOUT_CHANNEL_NAMES.index("car")


def write_scene(folder, name: str, cars: list, frames: int = FRAMES, ego_speed_mps: float = 0.0):
    """Write <folder>/<name>/layout.zarr and occ_label.zarr; cars: (x_m, lane_y_m, speed_mps) at frame 0."""
    timestamp_us = np.arange(frames, dtype=np.int64) * 83_333
    seconds = timestamp_us / 1e6
    world_from_ego = np.tile(np.eye(4), (frames, 1, 1))
    world_from_ego[:, 0, 3] = ego_speed_mps * seconds
    num = max(len(cars), 1)
    center = np.zeros((frames, num, 3))
    valid = np.zeros((frames, num), bool)
    for b, (x_m, y_m, speed) in enumerate(cars):
        center[:, b] = np.stack([x_m + speed * seconds, np.full(frames, y_m), np.full(frames, CAR_SIZE_M[2] / 2 - 0.6)], 1)
        valid[:, b] = True
    size = np.broadcast_to(np.asarray(CAR_SIZE_M, np.float32), (frames, num, 3)).copy()
    rotation = np.broadcast_to(yaw_to_quaternion(0.0), (frames, num, 4)).copy()
    klass = np.zeros((frames, num), np.int8)

    # layout: road and walkway (the same in every ego frame of a static ego), car footprints
    x_cells, y_cells, _ = GRID.shape
    y_m = GRID.lower_m[1] + (np.arange(y_cells) + 0.5) * GRID.voxel_size_m
    road = np.broadcast_to(np.abs(y_m)[None, :] < ROAD_HALF_WIDTH_M, (x_cells, y_cells))
    layout = np.zeros((frames, len(LAYOUT_CHANNEL_NAMES), x_cells, y_cells), bool)
    layout[:, LAYOUT_CHANNEL_NAMES.index("drivable_area")] = road
    layout[:, LAYOUT_CHANNEL_NAMES.index("walkway")] = ~road
    layout[:, NUM_MAP_LAYERS:] = box_footprints(world_from_ego, center, size, rotation, valid, klass, GRID)
    tokens = np.array([f"{name}-car{b}" for b in range(num)], dtype=object)
    layout_store = layout_dataset(layout, timestamp_us, world_from_ego, center, size, rotation, valid, klass, tokens, GRID,
                                  attrs={"scene": name, "box_rule": "overlap"})
    write_store(folder / name / "layout.zarr", layout_store, stage="layout", config_subset={})

    # occupancy: ground (driveable_surface on the road, sidewalk beside it), cars two voxels high
    semantics = np.full((frames, *GRID.shape), FREE, np.uint8)
    semantics[..., 0] = np.where(road, OCC_CLASS_ID["driveable_surface"], OCC_CLASS_ID["sidewalk"])
    semantics[..., 1:3] = np.where(layout[:, CAR_CHANNEL, :, :, None], CAR, FREE)
    mask = np.ones(semantics.shape, bool)
    dims = ("frame", "x", "y", "z")
    labels = xr.Dataset({"semantics": (dims, semantics), "mask_lidar": (dims, mask), "mask_camera": (dims, mask),
                         "timestamp_us": ("frame", timestamp_us)}, attrs={"scene": name, **GRID.to_attrs()})
    write_store(folder / name / "occ_label.zarr", labels, stage="occ_label", config_subset={})
    return folder / name


def world_config() -> dict:
    config = copy.deepcopy(defaults())
    config["device"] = "cpu"
    config["grid"] = {"range_m": list(GRID.range_m), "voxel_size_m": GRID.voxel_size_m}
    config["occ_dit"].update(model="tiny", clip_frames=3, context_frames=1, crop_latent=0, steps=400, batch_size=8,
                             learning_rate=1e-3, ema_decay=0.0, sampler="dpmsolver++", inference_steps=10, guidance_scale=2.0)
    return config


def train_world_vae(paths, out):
    """The occupancy VAE (uniscene.models.occ_vae) trained on the world's label stores, saved to `out`."""
    from uniscene.models.occ_vae.network import OccVAE
    from uniscene.models.occ_vae.settings import OccVAESettings
    from uniscene.models.occ_vae.sources import store_sequences
    from uniscene.models.occ_vae.train import train_vae

    changes = dict(model="tiny", latent_channels=4, downsample_factor=4, clip_frames=3, batch_size=4, crop_cells=0, steps=VAE_STEPS,
                   learning_rate=3e-3, ema_decay=0.0, kl_weight=1e-6, lovasz_weight=1.0, class_weights="none", num_workers=0)
    settings = OccVAESettings.from_config({"occ_vae": {**defaults()["occ_vae"], **changes}})
    torch.manual_seed(0)
    vae = OccVAE(**settings.model_config(GRID.shape))
    trainer, _ = train_vae(vae, store_sequences(paths, GRID), settings, seed=0, device="cpu", work_dir=out.parent / "vae_work",
                           run_hash="world")
    trainer.save_final(out)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Sixteen training scenes, one held-out scene with two cars; a trained VAE and DiT."""
    root = tmp_path_factory.mktemp("occ_gen_world")
    rng = np.random.default_rng(0)
    train = []
    for i in range(16):
        cars = [(rng.uniform(-7, 7), LANES_M[rng.integers(2)], rng.uniform(-3, 3)) for _ in range(rng.integers(0, 3))]
        train.append(write_scene(root / "scenes", f"train-{i:02d}", cars))
    held_out = write_scene(root / "scenes", "held-out", [(-5.0, LANES_M[0], 0.0), (4.0, LANES_M[1], 0.0)])
    config = world_config()
    vae = train_world_vae([p / "occ_label.zarr" for p in train], root / "models" / "occ_vae")
    model = root / "models" / "occ_dit"
    assert cli.main(["train-occ-dit", "--config", dumps(config), "--vae", str(vae),
                     "--occupancy", *[str(p / "occ_label.zarr") for p in train],
                     "--layout", *[str(p / "layout.zarr") for p in train], "--out", str(model)]) == 0
    return config, root, model, held_out


def generate(config, model, layout, out, *extra) -> int:
    return cli.main(["occ-gen", "--config", dumps(config), "--model", str(model), "--layout", str(layout), "--out", str(out), *extra])


def test_model_folder_holds_the_pipeline(world):
    _, _, model, _ = world
    assert {p.name for p in model.iterdir()} >= {"vae", "transformer", "scheduler", "model_index.json", "training.json"}
    training = json.loads((model / "training.json").read_text())
    losses = [record["losses"]["mse"] for record in training["history"]]
    assert losses[-1] < 0.6 * losses[0]  # the diffusion loss fell


def test_default_generation_reads_no_label_store(world, tmp_path):
    config, _, model, held_out = world
    labels = held_out / "occ_label.zarr"
    hidden = held_out / "occ_label.hidden"
    labels.rename(hidden)  # the scene's label store is absent: the default path must not need it
    try:
        assert generate(config, model, held_out / "layout.zarr", tmp_path / "occ_gen.zarr") == 0
        assert generate(config, model, held_out / "layout.zarr", tmp_path / "leak.zarr", "--leak-meta") == 2  # asks for --labels
        assert not (tmp_path / "leak.zarr").exists()
    finally:
        hidden.rename(labels)
    store = open_store(tmp_path / "occ_gen.zarr", "occ_gen")
    assert store["semantics"].shape == (FRAMES, *GRID.shape) and store["semantics"].dtype == np.uint8
    assert bool(store["mask_camera"].all()) and "all true" in store.attrs["masks"]
    assert store.attrs["sampler"] == "dpmsolver++" and store.attrs["inference_steps"] == 10 and store.attrs["seed"] == 0
    provenance = store_provenance(store)
    assert set(provenance["inputs"]) == {str(model), str(held_out / "layout.zarr")}
    assert provenance["config"]["generation"]["leak_meta"] is False
    np.testing.assert_array_equal(store["clip"].values, [0, 0, 0, 1, 1, 2, 2, 3, 3, 4])

    # the leak options read the labels when given, and say so
    assert generate(config, model, held_out / "layout.zarr", tmp_path / "leak.zarr", "--leak-meta", "--leak-noise-prior",
                    "--labels", str(labels), "--frames", "0:5") == 0
    leak = open_store(tmp_path / "leak.zarr", "occ_gen")
    assert leak.attrs["leak_meta"] and leak.attrs["leak_noise_prior"] and leak.sizes["frame"] == 5
    assert str(labels) in store_provenance(leak)["inputs"]


def test_the_streamed_store_holds_the_pipelines_whole_scene(world, tmp_path):
    """The command hands each clip to the store's writer as it comes: the same labels and clips, bit for bit,
    as the pipeline's whole-scene call with the same seed, and a preview of frames from several clips."""
    from uniscene.commands.occ_gen import load_pipeline
    from uniscene.models.occ_dit.pipeline import sampler_scheduler

    config, _, model, held_out = world
    assert generate(config, model, held_out / "layout.zarr", tmp_path / "occ_gen.zarr", "--preview", str(tmp_path / "gen.png")) == 0
    pipeline = load_pipeline(model, GRID, "cpu")
    pipeline.scheduler = sampler_scheduler(pipeline.scheduler.config, "dpmsolver++")
    layout = open_store(held_out / "layout.zarr", "layout")["layout"].values
    whole = pipeline(layout, num_inference_steps=10, guidance_scale=2.0, generator=torch.Generator().manual_seed(0), progress=False)
    store = open_store(tmp_path / "occ_gen.zarr", "occ_gen")
    np.testing.assert_array_equal(store["semantics"].values, whole.semantics)
    np.testing.assert_array_equal(store["clip"].values, whole.clip_of_frame)
    np.testing.assert_array_equal(store["timestamp_us"].values, open_store(held_out / "layout.zarr")["timestamp_us"].values)
    assert np.asarray(Image.open(tmp_path / "gen.png")).ndim == 3


def test_edit_drop_and_add_a_car(world, tmp_path):
    """Same seed: the dropped car's box empties of car voxels, the added car's box fills."""
    config, _, model, held_out = world
    edited = tmp_path / "edited_layout.zarr"
    assert cli.main(["layout-edit", "--config", dumps(config), "--layout", str(held_out / "layout.zarr"), "--out", str(edited),
                     "--drop", "held-out-car0", "--add", "car", "-4.0", "1.8"]) == 0
    assert generate(config, model, held_out / "layout.zarr", tmp_path / "before.zarr") == 0
    assert generate(config, model, edited, tmp_path / "after.zarr") == 0
    before = open_store(tmp_path / "before.zarr")["semantics"].values
    after = open_store(tmp_path / "after.zarr")["semantics"].values
    original = open_store(held_out / "layout.zarr")["layout"].values[:, CAR_CHANNEL]
    edited_cars = open_store(edited)["layout"].values[:, CAR_CHANNEL]
    dropped = original & ~edited_cars  # [T, X, Y] the dropped car's footprint
    added = edited_cars & ~original

    def car_columns(semantics, cells):  # share of the footprint columns holding a car voxel
        return float((semantics == CAR).any(-1)[cells].mean())

    assert dropped.any() and added.any()
    assert car_columns(before, dropped) > 0.5
    assert car_columns(after, dropped) < 0.3 * car_columns(before, dropped)
    assert car_columns(before, added) < 0.1
    assert car_columns(after, added) > 0.5
    kept = original & edited_cars  # the other car stays
    assert car_columns(after, kept) > 0.5


def test_metrics_against_known_numbers(world, tmp_path):
    """The label store scored against its own layout is perfect; cars shifted by 3 cells lose 3/12 of each car's
    voxels outside its footprint; a static world seen from a moving ego keeps every static voxel."""
    _, root, _, held_out = world
    layout = open_store(held_out / "layout.zarr")
    labels = open_store(held_out / "occ_label.zarr")
    perfect = occ_gen_metrics.score_store(labels, layout, labels, GRID)
    assert perfect["layout_adherence"]["car"]["box_recall"] == 1.0 and perfect["layout_adherence"]["car"]["outside_share"] == 0.0
    assert perfect["layout_adherence"]["car"]["boxes"] == 2 * FRAMES
    assert perfect["map_class_iou"] == {"driveable_surface": 1.0, "sidewalk": 1.0} and perfect["vs_label"]["miou"] == 1.0

    semantics = labels["semantics"].values
    shifted = semantics.copy()
    cars = semantics == CAR
    shifted[cars] = FREE
    shifted[np.roll(cars, 3, axis=1)] = CAR  # 3 cells along x: each 12-cell-long car leaves 3 / 12 of itself behind
    moved = labels.assign(semantics=(labels["semantics"].dims, shifted))
    adherence = occ_gen_metrics.layout_adherence(shifted, layout, GRID)["car"]
    assert adherence["box_recall"] == 1.0
    np.testing.assert_allclose(adherence["outside_share"], 3 / 12, atol=0.02)
    assert occ_gen_metrics.score_store(moved, layout, labels, GRID)["vs_label"]["per_class"]["car"] < 1.0

    static = write_scene(tmp_path, "moving-ego", [], frames=4, ego_speed_mps=4.8)  # 0.4 m (one voxel) per frame
    static_labels = open_store(static / "occ_label.zarr")
    world_from_ego = open_store(static / "layout.zarr")["world_from_ego"].values
    agreement = occ_gen_metrics.static_agreement(static_labels["semantics"].values, world_from_ego, GRID)
    np.testing.assert_allclose(agreement, 1.0)  # the road is the same road one voxel further on
    noisy = static_labels["semantics"].values.copy()
    noisy[2, :, :24, 0] = FREE  # half of frame 2's ground gone
    agreement = occ_gen_metrics.static_agreement(noisy, world_from_ego, GRID)
    assert agreement[0] == pytest.approx(1.0) and agreement[1] < 0.6 and agreement[2] < 0.6


def test_bad_inputs_exit_2(world, tmp_path, capsys):
    config, _, model, held_out = world
    layout = held_out / "layout.zarr"
    assert generate(config, tmp_path / "no-model", layout, tmp_path / "a.zarr") == 2
    assert "no trained occupancy generator" in capsys.readouterr().err
    other_grid = copy.deepcopy(config)
    other_grid["grid"] = {"range_m": [-40.0, -40.0, -1.0, 40.0, 40.0, 5.4], "voxel_size_m": 0.4}
    assert generate(other_grid, model, layout, tmp_path / "b.zarr") == 2
    assert "grid" in capsys.readouterr().err
    bad_sampler = copy.deepcopy(config)
    bad_sampler["occ_dit"]["sampler"] = "heun"
    assert generate(bad_sampler, model, layout, tmp_path / "c.zarr") == 2
    assert "occ_dit.sampler" in capsys.readouterr().err
    assert cli.main(["train-occ-dit", "--config", dumps(config), "--vae", str(model / "vae"), "--occupancy", str(held_out / "occ_label.zarr"),
                     "--layout", str(layout), str(layout), "--out", str(tmp_path / "d")]) == 2
    assert "one layout per scene" in capsys.readouterr().err
    # a grid whose latent frames (44 / 4 = 11 cells) the DiT's 2 x 2 patches do not tile: named, before any data is read
    from uniscene.models.occ_vae.network import OccVAE
    odd_grid = copy.deepcopy(config)
    odd_grid["grid"] = {"range_m": [-8.8, -8.8, -1.0, 8.8, 8.8, 0.6], "voxel_size_m": 0.4}  # 44 x 44 x 4
    OccVAE(grid_shape=(44, 44, 4), embed_dim=2, base_channels=8, channel_multipliers=(1, 1), layers_per_block=1, latent_channels=4,
           downsample_factor=4, patch_size=2, attention_heads=1, norm_num_groups=4).save_pretrained(tmp_path / "odd_vae")
    assert cli.main(["train-occ-dit", "--config", dumps(odd_grid), "--vae", str(tmp_path / "odd_vae"), "--occupancy",
                     str(held_out / "occ_label.zarr"), "--layout", str(layout), "--out", str(tmp_path / "e")]) == 2
    message = capsys.readouterr().err
    assert "grid" in message and "multiples of 8" in message
    assert not any((tmp_path / name).exists() for name in ("a.zarr", "b.zarr", "c.zarr", "d", "e"))
