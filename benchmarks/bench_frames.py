"""Benchmark of the frames stage: frames per second, on a hand-made scene of real nuScenes size.

The scene (uniscene.data.handmade) lasts 20 s: 41 keyframes, about 240 CAM_FRONT frames and 400
LiDAR sweeps, six cameras, `--instances` annotated instances. Timed: loading the tables (once per
process), reading the scene (chains, annotations, file checks), the core (interpolation to every
frame and sweep) and writing frames.zarr. The stage is numpy on the CPU on every machine.
Prints JSON lines: device, what, value, unit.
"""

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from uniscene.sensors import CAMERA_NAMES, LIDAR_NAME
from uniscene.data.handmade import write_handmade_dataset
from uniscene.data.reader import open_dataset, scene_data
from uniscene.frames import scene_frames
from uniscene.store import write_store

VERSION = "v1.0-bench"


def emit(what: str, value: float, unit: str) -> None:
    print(json.dumps({"device": f"cpu ({platform.processor() or platform.machine()})", "what": what,
                      "value": round(value, 4), "unit": unit}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keyframes", type=int, default=41)
    parser.add_argument("--instances", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = write_handmade_dataset(Path(tmp) / "data", version=VERSION, num_keyframes=args.keyframes,
                                      num_instances=args.instances, with_truth=False)
        start = time.perf_counter()
        nusc = open_dataset(root, VERSION)
        emit("frames: load tables (once per process)", time.perf_counter() - start, "s")

        read_s, core_s, write_s = [], [], []
        for repeat in range(args.repeats):
            start = time.perf_counter()
            data = scene_data(nusc, "hand-0000", CAMERA_NAMES + (LIDAR_NAME,))
            read_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            frames = scene_frames(data, 0.25, 0.1)
            core_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            write_store(Path(tmp) / f"frames-{repeat}.zarr", frames, stage="frames", config_subset={}, frame_chunk=4096)
            write_s.append(time.perf_counter() - start)
        num_frames, num_sweeps = frames.sizes["frame"], frames.sizes["sweep"]
        best = lambda values: min(values)  # noqa: E731
        emit(f"frames: scene size ({num_frames} frames, {num_sweeps} sweeps, {frames.sizes['box']} instances)", num_frames, "frames")
        emit("frames: read scene", best(read_s), "s")
        emit("frames: interpolate (core)", best(core_s), "s")
        emit("frames: write store", best(write_s), "s")
        emit("frames: core throughput", num_frames / best(core_s), "frames/s")
        emit("frames: stage throughput (read + core + write)", num_frames / (best(read_s) + best(core_s) + best(write_s)), "frames/s")


if __name__ == "__main__":
    main()
