"""Benchmark LiDAR generation: milliseconds per sweep, on the GPU when there is one and on the CPU.

Times the whole LidarPipeline (cast the 32 x 1084 LIDAR_TOP beams through a 200 x 200 x 16
occupancy grid, run the network, ray drop, range images back to numpy) and its two parts, with
untrained weights (speed does not depend on them) on a procedural street (ground, building
rows, parked cars, trees). Prints one JSON object per line: device, what, value, unit.

    python benchmarks/bench_lidar.py [--frames 32] [--cpu-frames 8] [--models tiny paper]
"""

import argparse
import json
import time

import numpy as np
import torch

from uniscene.classes import FREE, OCC_CLASS_ID
from uniscene.grid import OccGrid
from uniscene.models.lidar.beams import lidar_top
from uniscene.models.lidar.network import MODEL_CONFIGS, LidarRangeNet
from uniscene.models.lidar.pipeline import LidarPipeline, sweeps_from_range_images
from uniscene.models.lidar.prior import cast_beams, prior_features


def street(grid: OccGrid, frames: int, seed: int = 0) -> tuple:
    """Semantics [T, X, Y, Z] uint8 and sensor poses [T, 4, 4] of a procedural street."""
    rng = np.random.default_rng(seed)
    x, y, z = grid.shape
    semantics = np.full((frames, x, y, z), FREE, np.uint8)
    semantics[..., :3] = OCC_CLASS_ID["driveable_surface"]
    semantics[:, :, : y // 2 - 30, :3] = OCC_CLASS_ID["sidewalk"]
    semantics[:, :, y // 2 + 30:, :3] = OCC_CLASS_ID["sidewalk"]
    semantics[:, :, : y // 2 - 40, 3:14] = OCC_CLASS_ID["manmade"]
    semantics[:, :, y // 2 + 40:, 3:14] = OCC_CLASS_ID["manmade"]
    for t in range(frames):
        for _ in range(25):
            cx, cy = rng.integers(0, x - 12), rng.choice([y // 2 - 25, y // 2 + 20]) + rng.integers(-2, 3)
            semantics[t, cx:cx + 11, cy:cy + 5, 3:7] = OCC_CLASS_ID["car"]
        for _ in range(15):
            cx, cy = rng.integers(0, x - 4), rng.choice([y // 2 - 35, y // 2 + 32])
            semantics[t, cx:cx + 4, cy:cy + 4, 3:12] = OCC_CLASS_ID["vegetation"]
    poses = np.tile(np.eye(4), (frames, 1, 1))
    poses[:, :3, 3] = (0.94, 0.0, 1.84)
    return semantics, poses


def timed(fn, device: str, repeats: int) -> float:
    """Seconds per call of fn (after one warm-up call)."""
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def bench(device: str, frames: int, models: list, repeats: int) -> None:
    grid, pattern = OccGrid((-40.0, -40.0, -1.0, 40.0, 40.0, 5.4), 0.4), lidar_top()
    semantics, poses = street(grid, frames)
    occupancy = torch.from_numpy(semantics).to(device)
    poses_t = torch.from_numpy(poses).to(device)

    def emit(what, value, unit="ms/sweep"):
        print(json.dumps({"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "what": what,
                          "value": round(value, 3), "unit": unit, "batch_frames": frames}), flush=True)

    seconds = timed(lambda: cast_beams(grid, occupancy, poses_t, pattern), device, repeats)
    emit("cast_beams (DDA prior, 32 x 1084 rays, 200 x 200 x 16 grid)", 1000 * seconds / frames)
    prior = cast_beams(grid, occupancy, poses_t, pattern)
    for model in models:
        network = LidarRangeNet(**MODEL_CONFIGS[model]).to(device).eval()
        with torch.inference_mode():
            features = prior_features(prior, pattern)
            seconds = timed(lambda: network(features), device, repeats)
        emit(f"LidarRangeNet {model} forward", 1000 * seconds / frames)
        pipeline = LidarPipeline(network, torch.full((18,), 30.0), grid, pattern)

        def full():
            output = pipeline(semantics, poses, batch_frames=frames, device=device)
            sweeps_from_range_images(output.range_images(), pattern)

        emit(f"LidarPipeline {model} end to end (occupancy in, points out)", 1000 * timed(full, device, repeats) / frames)
    raycast = LidarPipeline(None, torch.full((18,), 30.0), grid, pattern)
    seconds = timed(lambda: raycast(semantics, poses, method="raycast", batch_frames=frames, device=device), device, repeats)
    emit("ray-cast baseline end to end", 1000 * seconds / frames)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32, help="sweeps per batch on the GPU")
    parser.add_argument("--cpu-frames", type=int, default=4, help="sweeps per batch on the CPU")
    parser.add_argument("--models", nargs="+", default=["tiny", "paper"], choices=sorted(MODEL_CONFIGS))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if torch.cuda.is_available():
        bench("cuda", args.frames, args.models, args.repeats)
    bench("cpu", args.cpu_frames, args.models, 1)


if __name__ == "__main__":
    main()
