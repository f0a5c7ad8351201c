"""Benchmark of `uniscene synth` on the CPU: LiDAR sweeps and camera frames per second.

Prints one JSON line per measurement. `--full` also times writing the whole dataset of the
given config (default: the repository's config.yaml) into a temporary folder.

    python benchmarks/bench_synth.py [--config config.yaml] [--frames 12] [--full]
"""

import argparse
import datetime as _dt
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from uniscene.config import load_config
from uniscene.grid import OccGrid
from uniscene.synth.capture import CameraRays, capture_cameras, capture_lidar
from uniscene.synth.truth import CameraVisibility, frame_semantics
from uniscene.synth.world import build_scene


def _emit(**fields):
    fields.update(device="cpu", cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
                  date=_dt.date.today().isoformat())
    print(json.dumps(fields), flush=True)


def _timed(fn, repeats):
    wall, cpu = time.perf_counter(), time.process_time()
    for k in range(repeats):
        fn(k)
    return (time.perf_counter() - wall) / repeats, (time.process_time() - cpu) / repeats


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "config.yaml"))
    parser.add_argument("--frames", type=int, default=12, help="captures to time per measurement")
    parser.add_argument("--full", action="store_true", help="also time the whole dataset of the config")
    args = parser.parse_args()
    config = load_config(args.config)
    grid = OccGrid.from_config(config)

    start = time.perf_counter()
    scene = build_scene(config, 0)
    _emit(bench="synth_build_scene", seconds=round(time.perf_counter() - start, 3),
          static_boxes=len(scene.town.static), instances=len(scene.instances))

    times = np.linspace(0.0, scene.camera_offsets_us[-1] / 1e6, args.frames)
    wall, cpu = _timed(lambda k: capture_lidar(scene, times[k]), args.frames)
    points = len(capture_lidar(scene, times[0]).points)
    _emit(bench="synth_lidar_sweep", sweeps_per_s=round(1 / wall, 2), cpu_s_per_sweep=round(cpu, 4),
          rays=len(scene.lidar.directions), points=points)

    rays = CameraRays(scene)
    h, w = scene.rig.size_hw
    wall, cpu = _timed(lambda k: capture_cameras(scene, times[k], rays), args.frames)
    _emit(bench="synth_camera_frame", frames_per_s=round(1 / wall, 2), cpu_s_per_frame=round(cpu, 4),
          images_per_frame=6, image_size=[h, w])

    visibility = CameraVisibility(grid, scene.rig)
    captures = [capture_cameras(scene, t, rays) for t in times[:3]]

    def truth(k):
        frame_semantics(scene, times[k % 3], grid)
        visibility.mask(captures[k % 3].depth, rays.origins_ego, rays.dirs_ego, rays.z_of_dir)

    wall, cpu = _timed(truth, args.frames)
    _emit(bench="synth_truth_frame", frames_per_s=round(1 / wall, 2), cpu_s_per_frame=round(cpu, 4), grid=list(grid.shape))

    if args.full:
        from uniscene.synth.generate import generate_dataset

        with tempfile.TemporaryDirectory() as tmp:
            wall, cpu = time.perf_counter(), time.process_time()
            generate_dataset(config, Path(tmp) / "synthetic", progress=False)
            synth = config["synth"]
            _emit(bench="synth_full_dataset", seconds=round(time.perf_counter() - wall, 2),
                  main_process_cpu_s=round(time.process_time() - cpu, 2), num_scenes=synth["num_scenes"],
                  duration_s=synth["duration_s"], image_size=synth["image_size"])


if __name__ == "__main__":
    main()
