"""`uniscene lidar`: LiDAR sweeps of one scene from occupancy (docs/stores.md, lidar.zarr).

Reads the scene's frames.zarr (sensor poses) and an occupancy store (occ_label.zarr, or a
generated chain's occ_gen.zarr), runs the trained LidarPipeline and writes lidar.zarr;
with --export, also every sweep as a nuScenes `.pcd.bin` (5 float32 per point) into a folder.
`--method raycast` writes the no-learning baseline instead (the ray-cast of the occupancy, the
model's class intensities): the `lidar_raycast` rule's lidar_raycast.zarr, which the metrics
compare the learned sweeps with.
"""

import time
from pathlib import Path

import numpy as np
import xarray as xr

from uniscene.config import resolve_device
from uniscene.data.files import SWEEP_COLUMNS, write_sweep
from uniscene.grid import OccGrid
from uniscene.models.lidar.beams import beam_pattern
from uniscene.models.lidar.inputs import load_scene_inputs
from uniscene.models.lidar.pipeline import METHODS, LidarPipeline, sweeps_from_range_images
from uniscene.models.lidar.settings import LidarCasting, LidarSampling
from uniscene.store import atomic_directory, open_store, write_store

STAGE = "lidar"
HELP = "generate LiDAR sweeps of one scene from occupancy"
SOURCE_OF_STAGE = {"occ_label": "label", "occ_gen": "generated"}


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="trained model folder (results/models/lidar)")
    parser.add_argument("--frames", required=True, help="the scene's frames.zarr")
    parser.add_argument("--occupancy", required=True, help="the scene's occ_label.zarr or occ_gen.zarr")
    parser.add_argument("--out", required=True, help="lidar.zarr to write")
    parser.add_argument("--export", help="folder to write the sweeps into as nuScenes .pcd.bin files")
    parser.add_argument("--method", choices=METHODS, default="learned",
                        help="learned (the trained network) or raycast (the baseline: the occupancy ray-cast alone)")


def lidar_dataset(points, frame_offsets, timestamp_us, ego_from_sensor, attrs: dict) -> xr.Dataset:
    """points [N, 5] float32, frame_offsets [T + 1], timestamp_us [T], ego_from_sensor [T, 4, 4]."""
    return xr.Dataset(
        {
            "points": (("point", "channel"), points.astype(np.float32)),
            "frame_offsets": ("frame_edge", frame_offsets.astype(np.int64)),
            "timestamp_us": ("frame", timestamp_us.astype(np.int64)),
            "ego_from_sensor": (("frame", "row", "col"), ego_from_sensor.astype(np.float64)),
        },
        coords={"channel": np.array(SWEEP_COLUMNS, dtype=object)},  # variable-length strings (zarr v3)
        attrs=attrs,
    )


def export_sweeps(folder, scene: str, points, frame_offsets, timestamp_us) -> None:
    """`<folder>/<scene>__LIDAR_TOP__<timestamp_us>.pcd.bin` per frame, written aside and moved into place."""
    with atomic_directory(folder) as tmp:
        for t, stamp in enumerate(timestamp_us):
            write_sweep(tmp / f"{scene}__LIDAR_TOP__{int(stamp)}.pcd.bin", points[frame_offsets[t]:frame_offsets[t + 1]])


def config_stage(args) -> str:
    """The ray-cast baseline draws nothing: its subset leaves out lidar.ray_drop and the seed, so that
    editing them regenerates the learned sweeps alone."""
    return "lidar_raycast" if args.method == "raycast" else STAGE


def main(args, config):
    learned = args.method == "learned"
    cast_batch = LidarCasting.from_config(config).cast_batch
    ray_drop = LidarSampling.from_config(config).ray_drop if learned else None
    seed = int(config["seed"]) if learned else None  # the baseline's stage holds no seed: its store records none
    grid, pattern, device = OccGrid.from_config(config), beam_pattern(config), resolve_device(config)
    pipeline = LidarPipeline.from_pretrained(args.model, grid, pattern, device)
    inputs = load_scene_inputs(args.frames, args.occupancy, grid)
    scene = open_store(args.frames, "frames").attrs["scene"]
    source = SOURCE_OF_STAGE[open_store(args.occupancy).attrs["uniscene"]["stage"]]

    start = time.perf_counter()
    output = pipeline(inputs.semantics, inputs.ego_from_sensor, method=args.method, ray_drop=ray_drop,
                      batch_frames=cast_batch, seed=seed if learned else 0, device=device, progress=f"lidar {scene}")
    seconds = time.perf_counter() - start
    points, offsets = sweeps_from_range_images(output.range_images(), pattern)
    frames = len(inputs.timestamp_us)
    print(f"lidar {scene}: {frames} {args.method} sweeps from {source} occupancy on {device} in {seconds:.2f} s "
          f"({1000 * seconds / max(frames, 1):.1f} ms per sweep), {len(points) / max(frames, 1):.0f} points per sweep")

    attrs = {"scene": scene, "source": source, "method": args.method, "sensor": "LIDAR_TOP"}
    if args.export:
        export_sweeps(args.export, scene, points, offsets, inputs.timestamp_us)
    write_store(args.out, lidar_dataset(points, offsets, inputs.timestamp_us, inputs.ego_from_sensor, attrs), stage="lidar",
                config_subset=config, inputs=[args.model, args.frames, args.occupancy], seed=seed)
