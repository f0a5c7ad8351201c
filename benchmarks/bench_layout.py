"""Layout throughput: frames per second of `rasterise_layout` on the CPU and (where present) the GPU.

A hand-made town (a 1 km road grid with walkways, crossings, dividers) and a 20 s drive at
12 Hz with 60 boxes around the ego, on the default 200 x 200 x 0.4 m grid. The map raster is
made once per scene (timed on its own); frames/s is the per-frame part (map resampling and
box footprints), best of 3. Prints JSON lines: device, what, value, unit.
Run: python benchmarks/bench_layout.py [--frames 240] [--boxes 60]
"""

import argparse
import datetime
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


from uniscene.data.handmade import write_map_expansion

from uniscene.geometry import make_transform, yaw_to_quaternion
from uniscene.grid import OccGrid
from uniscene.data.maps import load_map, rasterise_map, scene_region_m
from uniscene.layout.raster import LayoutSettings, rasterise_layout
from uniscene.settings import default_settings

MAP_NAME = "boston-seaport"


def road_grid(spacing_m=100.0, count=10, width_m=10.0):
    polygons = {"drivable_area": [], "walkway": [], "ped_crossing": []}
    lines = {"lane_divider": [], "road_divider": []}
    extent = spacing_m * count
    for k in range(count + 1):
        c = k * spacing_m
        polygons["drivable_area"] += [[(0, c - width_m / 2), (extent, c - width_m / 2), (extent, c + width_m / 2), (0, c + width_m / 2)],
                                      [(c - width_m / 2, 0), (c + width_m / 2, 0), (c + width_m / 2, extent), (c - width_m / 2, extent)]]
        polygons["walkway"] += [[(0, c + width_m / 2), (extent, c + width_m / 2), (extent, c + width_m / 2 + 3), (0, c + width_m / 2 + 3)]]
        lines["lane_divider"] += [[(0, c), (extent, c)], [(c, 0), (c, extent)]]
        polygons["ped_crossing"] += [[(c + 8, c - 5), (c + 12, c - 5), (c + 12, c + 5), (c + 8, c + 5)]]
    return polygons, lines


def scene(num_frames, num_boxes, rng):
    time_s = np.arange(num_frames) / 12.0
    yaw = 0.3 * np.sin(time_s / 4)
    position = np.stack([150 + 10 * time_s, 300 + 5 * np.sin(time_s / 3), np.zeros(num_frames)], 1)
    world_from_ego = make_transform(yaw_to_quaternion(yaw), position)
    offset = rng.uniform(-45, 45, (1, num_boxes, 2)) + rng.normal(0, 0.05, (num_frames, num_boxes, 2)).cumsum(0)
    center = np.concatenate([position[:, None, :2] + offset, np.ones((num_frames, num_boxes, 1))], -1)
    size = np.broadcast_to(rng.uniform(0.5, 8, (1, num_boxes, 3)), (num_frames, num_boxes, 3)).astype(np.float32)
    rotation = yaw_to_quaternion(np.broadcast_to(rng.uniform(-np.pi, np.pi, (1, num_boxes)), (num_frames, num_boxes)))
    return world_from_ego, center, size, rotation, np.ones((num_frames, num_boxes), bool), rng.integers(0, 10, num_boxes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--boxes", type=int, default=60)
    args = parser.parse_args()
    grid = OccGrid((-40.0, -40.0, -1.0, 40.0, 40.0, 5.4), 0.4)
    settings = default_settings(LayoutSettings)
    rng = np.random.default_rng(0)
    world_from_ego, *boxes = scene(args.frames, args.boxes, rng)
    date = datetime.date.today().isoformat()

    def emit(device, what, value, unit):
        print(json.dumps({"device": device, "what": what, "value": round(value, 3), "unit": unit, "date": date,
                          "frames": args.frames, "boxes": args.boxes}), flush=True)

    with tempfile.TemporaryDirectory() as root:
        write_map_expansion(Path(root), MAP_NAME, *road_grid())
        nusc_map = load_map(root, MAP_NAME)
        start = time.perf_counter()
        raster = rasterise_map(nusc_map, scene_region_m(world_from_ego, grid, settings.map_margin_m), settings.map_resolution_m)
        emit("cpu", f"map raster once per scene ({raster.masks.shape[1]} x {raster.masks.shape[2]} px)", time.perf_counter() - start, "s")

    devices = ["cpu"] + ([f"cuda:{torch.cuda.current_device()}"] if torch.cuda.is_available() else [])
    for device in devices:
        name = torch.cuda.get_device_name() if device.startswith("cuda") else f"cpu ({torch.get_num_threads()} threads)"
        rasterise_layout(raster, world_from_ego[:8], *(b[:8] for b in boxes[:-1]), boxes[-1], grid, settings, device)  # warm-up
        best = float("inf")
        for _ in range(3):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            rasterise_layout(raster, world_from_ego, *boxes, grid, settings, device)
            best = min(best, time.perf_counter() - start)
        emit(name, "layout frames per second (map resampling + box footprints, result on the host)", args.frames / best, "frames/s")


if __name__ == "__main__":
    main()
