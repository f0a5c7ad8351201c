"""`uniscene train-lidar`: train the LiDAR generator on recorded sweeps and label occupancy.

Writes results/models/lidar/ (save_pretrained: config.json + safetensors; class_intensity.json,
the ray-cast baseline's table; training.json and history.jsonl, the loss history). The sibling
folder `<out>.checkpoint/` holds the cast priors (read per sweep during training) and a
checkpoint after every epoch; a rerun with the same settings resumes there. It is removed once
the model is in place.
"""

import json
import time
from pathlib import Path

from uniscene.config import resolve_device
from uniscene.errors import UserError
from uniscene.grid import OccGrid
from uniscene.models.lidar.beams import beam_pattern
from uniscene.models.lidar.network import MODEL_CONFIGS, LidarRangeNet
from uniscene.models.lidar.pipeline import CLASS_INTENSITY_FILE
from uniscene.models.lidar.settings import LidarSettings
from uniscene.models.lidar.train import CACHE_DIR, cache_training_set, lidar_trainer
from uniscene.store import fingerprint

STAGE = "train_lidar"
HELP = "train the LiDAR generator on label occupancy"


def add_arguments(parser):
    parser.add_argument("--frames", nargs="+", required=True, help="frames.zarr of each training scene")
    parser.add_argument("--occupancy", nargs="+", required=True, help="occ_label.zarr of each training scene, in the same order")
    parser.add_argument("--out", required=True, help="model folder to write (results/models/lidar)")


def main(args, config):
    if len(args.frames) != len(args.occupancy):
        raise UserError(f"--frames names {len(args.frames)} stores and --occupancy {len(args.occupancy)}: give one occupancy store per frames store")
    settings = LidarSettings.from_config(config)
    grid, pattern, device, seed = OccGrid.from_config(config), beam_pattern(config), resolve_device(config), int(config["seed"])
    out = Path(args.out)
    work = out.parent / f"{out.name}.checkpoint"  # the checkpoint, the history and the cast priors, until the model is in place
    start = time.perf_counter()
    inputs = {p: fingerprint(p) for p in [*args.frames, *args.occupancy]}
    data = cache_training_set(
        args.frames, args.occupancy, grid, pattern, frame_stride=settings.frame_stride, cast_batch=settings.cast_batch,
        device=device, folder=work / CACHE_DIR,
        key={"grid": config["grid"], "beams": list(pattern.shape), "frame_stride": settings.frame_stride, "inputs": inputs},
    )
    cast_seconds = time.perf_counter() - start
    print(f"train-lidar: {len(data)} sweeps from {len(args.frames)} scenes cast on {device} in {cast_seconds:.1f} s")

    import torch

    torch.manual_seed(seed)
    network = LidarRangeNet(**MODEL_CONFIGS[settings.model])
    run_config = {"settings": settings.as_dict(), "grid": config["grid"], "seed": seed, "inputs": inputs}
    trainer = lidar_trainer(
        network, data, pattern, epochs=settings.epochs, batch_size=settings.batch_size, crop_width=settings.crop_width,
        learning_rate=settings.learning_rate, seed=seed, device=device, checkpoint_dir=work, run_config=run_config,
    )
    history = trainer.fit()
    trainer.save_final(out, files={CLASS_INTENSITY_FILE: {"class_intensity": data.class_intensity().tolist()}}, info={
        "num_sweeps": len(data), "config": config, "inputs": inputs, "cast_seconds": round(cast_seconds, 2),
        "total_seconds": round(time.perf_counter() - start, 2), "device": device,
    })
    print(f"train-lidar: wrote {out} ({settings.model}, {settings.epochs} epochs) in {time.perf_counter() - start:.1f} s; "
          f"last epoch {json.dumps(history[-1]) if history else '-'}")
