"""Benchmark the occupancy VAE: a rate-distortion table of the paper config over compression ratios.

Writes a larger synthetic dataset (the GPU preset below: scenes x duration at 12 Hz, generated
on all CPU cores), trains the paper-sized OccVAE on the TRUE occupancy of its training scenes
(<dataroot>/truth/<scene>.zarr, not the labelling stage's output) once per latent shape, each for
a fixed time budget (steps = budget / the step time of a short probe, bf16 autocast on CUDA), and
scores the held-out scenes (their true occupancy, Occ3D's metric inside mask_camera). Prints one
JSON object per line (and appends them to --out):
  {"what": "dataset", ...}   generation time, scenes, frames
  {"what": "occ_vae", ...}   per latent shape: compression ratio, mIoU, IoU, per-class IoU,
                             training frames/s, steps, peak memory, encode + decode ms/frame, forward GFLOP
                             a frame and the TFLOP/s the training sustained (three forwards a step)

    python benchmarks/bench_occ_vae.py --budget-s 90 --out $OUT/occ_vae.jsonl
    python benchmarks/bench_occ_vae.py --budget-s 5 --scenes 3 --duration-s 2 --model tiny   # a CPU smoke run
"""

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from uniscene.config import defaults
from uniscene.grid import OccGrid
from uniscene.metrics.occ_vae import model_summary, score_sequences
from uniscene.models.occ_vae.network import OccVAE
from uniscene.models.occ_vae.settings import OccVAESettings
from uniscene.models.occ_vae.sources import store_sequences
from uniscene.models.occ_vae.train import training_config, train_vae
from uniscene.paths import truth_store
from uniscene.training import seed_everything

# latent shape per frame (C x h x w for a 200 x 200 x 16 grid) -> (latent_channels, downsample_factor)
LATENTS = {"4x50x50": (4, 4), "8x25x25": (8, 8), "4x25x25": (4, 8), "2x25x25": (2, 8)}
# The GPU preset: a synthetic town with more agents, 12 Hz; small camera images (only the truth is used).
SYNTH_PRESET = {"image_size": [45, 80], "density": 1.5, "town_blocks": 4, "lidar_azimuth_steps": 271}


def emit(record: dict, out: Path | None) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if out is not None:
        with open(out, "a") as file:
            file.write(line + "\n")


def make_dataset(root: Path, scenes: int, duration_s: float, seed: int) -> tuple:
    """The synthetic dataset at `root` (written unless already there); returns (config, seconds spent)."""
    from uniscene.synth.generate import generate_dataset

    config = defaults()
    config["seed"] = seed
    config["dataset"].update({"kind": "synthetic", "dataroot": str(root)})
    config["synth"].update({**SYNTH_PRESET, "num_scenes": scenes, "duration_s": duration_s, "workers": 0})
    start = time.perf_counter()
    if not (root / "truth").is_dir():
        generate_dataset(config, root, progress=False)
    return config, time.perf_counter() - start


def device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def forward_gflop_per_frame(model: OccVAE, grid: tuple, clip_frames: int, device: str) -> float:
    """GFLOP of one frame through the VAE (encode, sample, decode) in a clip of `clip_frames`, counted by
    torch.utils.flop_counter with attention through the math backend (so that its matrix products count)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    clip = torch.zeros((1, clip_frames, *grid), dtype=torch.long, device=device)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(clip)
    return counter.get_total_flops() / clip_frames / 1e9


def run_one(name: str, sequences: tuple, settings: OccVAESettings, args, device: str, work: Path) -> dict:
    """Train one latent shape for the time budget and score it; returns its record."""
    train, val = sequences
    grid = (200, 200, 16)  # the default grid (uniscene.config.defaults())
    # 1. probe: the step time of this size (warm-up included, then steady steps)
    seed_everything(args.seed)
    probe_steps = 6
    probe = training_config(settings, args.seed)
    probe = type(probe)(**{**probe.as_dict(), "steps": probe_steps, "log_every": 1, "checkpoint_every": 10**6})
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer, _ = train_vae(OccVAE(**settings.model_config(grid)), train, settings, seed=args.seed, device=device,
                           work_dir=work / f"probe-{name}", run_hash="probe", training=probe, description=f"probe {name}")
    steady = trainer.history[2:] or trainer.history
    clips_per_s = sum(r["samples_per_s"] for r in steady) / len(steady)
    seconds_per_step = settings.batch_size / max(clips_per_s, 1e-9)
    steps = max(2, int(args.budget_s / seconds_per_step))
    shutil.rmtree(work / f"probe-{name}", ignore_errors=True)

    # 2. the timed training
    seed_everything(args.seed)
    vae = OccVAE(**settings.model_config(grid))
    config = training_config(settings, args.seed)
    config = type(config)(**{**config.as_dict(), "steps": steps, "log_every": max(1, steps // 10),
                             "checkpoint_every": 10**6, "num_workers": args.workers})
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer, _ = train_vae(vae, train, settings, seed=args.seed, device=device, work_dir=work / name, run_hash=name,
                           training=config, description=f"train {name}")
    train_seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    model = trainer.final_model().eval()

    # 3. scores on the held-out scenes
    result = score_sequences(model, val, settings.clip_frames, args.eval_batch, autocast=device == "cuda")
    summary = model_summary(model)
    shutil.rmtree(work / name, ignore_errors=True)
    frames_per_s = steps * settings.batch_size * settings.clip_frames / train_seconds
    gflop = forward_gflop_per_frame(model, grid, settings.clip_frames, device)
    return {
        "what": "occ_vae", "device": device_name(device), "latent": name, "model": settings.model,
        "compression_ratio": summary["compression_ratio"], "parameters": summary["parameters"],
        "training_data": "synthetic TRUE occupancy (truth/<scene>.zarr), not labels",
        "train_frames": sum(s.num_frames for s in train), "val_frames": result["frames"],
        "budget_s": args.budget_s, "steps": steps, "batch_clips": settings.batch_size, "clip_frames": settings.clip_frames,
        "train_seconds": round(train_seconds, 1), "train_frames_per_s": round(frames_per_s, 1),
        # a training step's work taken as three forwards (the backward about two): what the device sustained
        "forward_gflop_per_frame": round(gflop, 1), "train_tflop_per_s_est": round(3 * gflop * frames_per_s / 1e3, 1),
        "epochs": round(steps * settings.batch_size / max(1, sum(s.num_frames - settings.clip_frames + 1 for s in train)), 2),
        "peak_memory_gib": round(peak, 2) if peak is not None else None,
        "miou": result["miou"], "iou_geometric": result["iou_geometric"], "iou_per_class": result["iou_per_class"],
        "all_voxels_miou": result["all_voxels"]["miou"], "constant_class_baseline": result["constant_class_baseline"],
        "encode_decode_ms_per_frame": result["encode_decode_ms_per_frame"], "eval_precision": "bf16" if device == "cuda" else "fp32",
        "last_losses": trainer.history[-1]["losses"] if trainer.history else None,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=90.0, help="training seconds per latent shape")
    parser.add_argument("--latents", nargs="+", default=["4x50x50", "4x25x25", "2x25x25"], choices=sorted(LATENTS))
    parser.add_argument("--model", default="paper", choices=["tiny", "paper"])
    parser.add_argument("--scenes", type=int, default=12, help="synthetic scenes (the last --val-scenes held out; one camera task per core)")
    parser.add_argument("--val-scenes", type=int, default=2)
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--batch-clips", type=int, default=4)
    parser.add_argument("--clip-frames", type=int, default=5)
    parser.add_argument("--lovasz-voxels", type=int, default=0, help="voxels per step the Lovasz loss is taken on (0: all, as the reference)")
    parser.add_argument("--crop-cells", type=int, default=0, help="train on random crops this many cells square (0: whole frames)")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--eval-batch", type=int, default=4, help="clips encoded and decoded together when scoring")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers")
    parser.add_argument("--dataroot", default=None, help="where the dataset goes (kept); default: a temporary folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON lines file to append to")
    args = parser.parse_args()
    out = Path(args.out) if args.out else None
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    temporary = None if args.dataroot else tempfile.mkdtemp(prefix="bench_occ_vae_")
    root = Path(args.dataroot or temporary) / "synthetic"
    try:
        config, seconds = make_dataset(root, args.scenes, args.duration_s, args.seed)
        names = [f"synth-{i:04d}" for i in range(args.scenes)]
        grid = OccGrid.from_config(config)
        train = store_sequences([truth_store(root, n) for n in names[:-args.val_scenes]], grid)
        val = store_sequences([truth_store(root, n) for n in names[-args.val_scenes:]], grid)
        emit({"what": "dataset", "scenes": args.scenes, "duration_s": args.duration_s, "synth": config["synth"],
              "train_frames": sum(s.num_frames for s in train), "val_frames": sum(s.num_frames for s in val),
              "generation_seconds": round(seconds, 1), "cpu_cores": os.cpu_count(), "data": "truth/<scene>.zarr (true occupancy)"},
             out)
        for name in args.latents:
            latent_channels, downsample = LATENTS[name]
            settings = OccVAESettings(
                source="labels", occ3d_root=None, model=args.model, latent_channels=latent_channels,
                downsample_factor=downsample, clip_frames=args.clip_frames, batch_size=args.batch_clips, crop_cells=args.crop_cells,
                steps=1, learning_rate=args.learning_rate, ema_decay=0.0, kl_weight=1e-3, lovasz_weight=1.0, lovasz_voxels=args.lovasz_voxels, class_weights="enet",
                num_workers=args.workers)
            work = Path(temporary or args.dataroot) / "work"
            try:
                emit(run_one(name, (train, val), settings, args, device, work), out)
            except (RuntimeError, ValueError) as error:  # out of memory, a shape this size cannot take: the next one still runs
                emit({"what": "occ_vae", "latent": name, "device": device_name(device), "error": f"{type(error).__name__}: {error}"[:500]}, out)
                if device == "cuda":
                    torch.cuda.empty_cache()
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)


if __name__ == "__main__":
    main()
