"""`uniscene occ-label`: semantic occupancy labels of one scene from its aggregated LiDAR."""

import time

import numpy as np
import torch
import xarray as xr
from tqdm import tqdm

from uniscene.config import resolve_device
from uniscene.grid import OccGrid
from uniscene.occ_label.inputs import load_scene
from uniscene.occ_label.label import LabelOptions, build_surface, label_frames
from uniscene.timing import StepTimes
from uniscene.viz.bev import preview_frames, save_occupancy_preview
from uniscene.store import StoreWriter, open_store

HELP = "semantic occupancy labels of one scene from aggregated LiDAR"
STAGE = "occ_label"
PREVIEW_FRAMES = 4
VOXEL_DIMS = ("frame", "x", "y", "z")
VOXEL_DTYPES = {"semantics": np.uint8, "mask_lidar": bool, "mask_camera": bool}


def add_arguments(parser):
    parser.add_argument("--frames", required=True, help="the scene's frames.zarr (stage frames)")
    parser.add_argument("--out", required=True, help="occ_label.zarr to write")
    parser.add_argument("--preview", help="PNG preview of a few frames to write (the labels seen from above, all and inside mask_camera)")


def main(args, config):
    grid = OccGrid.from_config(config)
    options = LabelOptions.from_config(config)
    device = resolve_device(config)
    times = StepTimes(device)
    start = time.perf_counter()
    with times.step("read frames and map"):  # the sweeps' sizes too; their points are read by the surface's aggregation
        scene = load_scene(args.frames, options, grid)
    with times.step("surface"):  # reading the sweeps included, a chunk at a time beside the aggregation
        surface = build_surface(scene, grid, options, device)
    num_frames = len(scene.frame_timestamp_us)
    template = xr.Dataset({name: (VOXEL_DIMS, np.empty((0, *grid.shape), dtype)) for name, dtype in VOXEL_DTYPES.items()}
                          | {"timestamp_us": (("frame",), scene.frame_timestamp_us[:0])},
                          attrs={"scene": scene.name, **grid.to_attrs(), "backend": options.backend, "device": device,
                                 "camera_ray_stride_px": options.camera_stride_px(scene.cam_intrinsics, grid),
                                 "map_areas": scene.map_areas is not None})
    inputs = [args.frames] + ([scene.map_areas.source] if scene.map_areas else [])
    # Each batch is compressed and written by the store's threads while the next one is labelled.
    with StoreWriter(args.out, template, stage=STAGE, config_subset=config, inputs=inputs, num_frames=num_frames) as writer:
        batches, progress = label_frames(surface, scene, grid, options), tqdm(total=num_frames, desc="occ_label frames", unit="frame")
        while True:
            with times.step("label frames"):
                batch = next(batches, None)
            if batch is None:
                break
            writer.append({"semantics": batch.semantics, "mask_lidar": batch.mask_lidar, "mask_camera": batch.mask_camera,
                           "timestamp_us": scene.frame_timestamp_us[batch.frames]})
            progress.update(len(batch.frames))
        progress.close()
    times.add("waiting for the writer", writer.timing["wait_s"])
    times.add("compress+write (writer threads)", writer.timing["write_s"])
    times.add("closing the store", writer.timing["close_s"])
    seconds = time.perf_counter() - start
    if args.preview:
        store = open_store(args.out, stage="occ_label")
        indices = preview_frames(store.sizes["frame"], PREVIEW_FRAMES)
        timestamp_us = store["timestamp_us"].values
        titles = [f"{scene.name} frame {i} (t={(timestamp_us[i] - timestamp_us[0]) / 1e6:.1f} s)" for i in indices]
        chosen = store.isel(frame=indices)
        save_occupancy_preview(args.preview, chosen["semantics"].values, chosen["mask_camera"].values, grid, range(len(indices)), titles)
    print(f"occ_label: {num_frames} frames in {seconds:.1f} s ({num_frames / seconds:.2f} frames/s) on {device}, backend {options.backend}; "
          f"steps: {times}")
    if device == "cuda":
        print(f"occ_label: peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
