"""`uniscene train-lidar`: train the LiDAR generator on recorded sweeps and label occupancy.

Writes results/models/lidar/ (save_pretrained: config.json + safetensors; class_intensity.json,
the ray-cast baseline's table; training.json, the loss history). Checkpoints go to a sibling
folder `<out>.checkpoint/` after every epoch; a rerun with the same settings resumes there.
"""

import json
import os
import shutil
import time
from pathlib import Path

from uniscene.config import resolve_device
from uniscene.errors import UserError
from uniscene.grid import OccGrid
from uniscene.models.lidar.beams import beam_pattern
from uniscene.models.lidar.inputs import load_scene_inputs, true_range_images
from uniscene.models.lidar.network import MODEL_CONFIGS, LidarRangeNet
from uniscene.models.lidar.pipeline import CLASS_INTENSITY_FILE, cast_frames
from uniscene.models.lidar.settings import LidarSettings
from uniscene.models.lidar.train import TrainingSet, train_network
from uniscene.store import fingerprint, write_json_atomic

STAGE = "train_lidar"
HELP = "train the LiDAR generator on label occupancy"


def add_arguments(parser):
    parser.add_argument("--frames", nargs="+", required=True, help="frames.zarr of each training scene")
    parser.add_argument("--occupancy", nargs="+", required=True, help="occ_label.zarr of each training scene, in the same order")
    parser.add_argument("--out", required=True, help="model folder to write (results/models/lidar)")


def build_training_set(frames_paths, occupancy_paths, grid, pattern, settings: LidarSettings, device: str) -> TrainingSet:
    priors, targets = [], []
    for frames_path, occupancy_path in zip(frames_paths, occupancy_paths):
        inputs = load_scene_inputs(frames_path, occupancy_path, grid)
        chosen = slice(None, None, settings.frame_stride)
        semantics, poses = inputs.semantics[chosen], inputs.ego_from_sensor[chosen]
        desc = f"cast {Path(frames_path).parent.name}"
        priors += [prior.to("cpu") for _, prior in cast_frames(grid, semantics, poses, pattern, settings.cast_batch, device, desc)]
        targets.append(true_range_images(inputs.sweep_paths[chosen], pattern))
    return TrainingSet.from_parts(priors, targets)


def main(args, config):
    if len(args.frames) != len(args.occupancy):
        raise UserError(f"--frames names {len(args.frames)} stores and --occupancy {len(args.occupancy)}: give one occupancy store per frames store")
    settings = LidarSettings.from_config(config)
    grid, pattern, device, seed = OccGrid.from_config(config), beam_pattern(config), resolve_device(config), int(config["seed"])
    out = Path(args.out)
    start = time.perf_counter()
    data = build_training_set(args.frames, args.occupancy, grid, pattern, settings, device)
    cast_seconds = time.perf_counter() - start
    print(f"train-lidar: {len(data)} sweeps from {len(args.frames)} scenes cast on {device} in {cast_seconds:.1f} s")

    import torch

    torch.manual_seed(seed)
    network = LidarRangeNet(**MODEL_CONFIGS[settings.model])
    inputs = [*args.frames, *args.occupancy]
    run_config = {"settings": settings.as_dict(), "grid": config["grid"], "seed": seed, "inputs": {p: fingerprint(p) for p in inputs}}
    history = train_network(
        network, data, pattern, epochs=settings.epochs, batch_size=settings.batch_size, crop_width=settings.crop_width,
        learning_rate=settings.learning_rate, seed=seed, device=device,
        checkpoint_dir=out.parent / f"{out.name}.checkpoint", run_config=run_config,
    )

    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    network.save_pretrained(tmp)
    write_json_atomic(tmp / CLASS_INTENSITY_FILE, {"class_intensity": data.class_intensity().tolist()})
    write_json_atomic(tmp / "training.json", {
        "history": history, "num_sweeps": len(data), "config": config,
        "inputs": run_config["inputs"], "cast_seconds": round(cast_seconds, 2),
        "total_seconds": round(time.perf_counter() - start, 2), "device": device,
    })
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    shutil.rmtree(out.parent / f"{out.name}.checkpoint", ignore_errors=True)
    print(f"train-lidar: wrote {out} ({settings.model}, {settings.epochs} epochs) in {time.perf_counter() - start:.1f} s; "
          f"last epoch {json.dumps(history[-1]) if history else '-'}")
