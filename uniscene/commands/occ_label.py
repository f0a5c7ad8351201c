"""`uniscene occ-label`: semantic occupancy labels of one scene from its aggregated LiDAR."""

import time

import numpy as np
import torch
import xarray as xr
from tqdm import tqdm

from uniscene.config import resolve_device
from uniscene.grid import OccGrid
from uniscene.occ_label.inputs import load_scene
from uniscene.occ_label.label import FrameLabels, LabelOptions, build_surface, label_frames
from uniscene.viz.bev import preview_frames, save_occupancy_preview
from uniscene.store import open_store, write_store

HELP = "semantic occupancy labels of one scene from aggregated LiDAR"
STAGE = "occ_label"
PREVIEW_FRAMES = 4


def add_arguments(parser):
    parser.add_argument("--frames", required=True, help="the scene's frames.zarr (stage frames)")
    parser.add_argument("--out", required=True, help="occ_label.zarr to write")
    parser.add_argument("--preview", help="PNG preview of a few frames to write (the labels seen from above, all and inside mask_camera)")


def main(args, config):
    grid = OccGrid.from_config(config)
    options = LabelOptions.from_config(config)
    device = resolve_device(config)
    start = time.perf_counter()
    scene = load_scene(args.frames, options, grid)
    surface = build_surface(scene, grid, options, device)
    batches = label_frames(surface, scene, grid, options)
    progress = tqdm(total=len(scene.frame_timestamp_us), desc="occ_label frames", unit="frame")

    def datasets():
        for batch in batches:
            progress.update(len(batch.frames))
            yield _dataset(batch, scene.frame_timestamp_us)

    parts = datasets()
    first = next(parts)
    first.attrs.update(
        scene=scene.name,
        **grid.to_attrs(), backend=options.backend, device=device,
        camera_ray_stride_px=options.camera_stride_px(scene.cam_intrinsics, grid), map_areas=scene.map_areas is not None,
    )
    write_store(args.out, first, stage="occ_label", config_subset=config,
                inputs=[args.frames] + ([scene.map_areas.source] if scene.map_areas else []), more_frames=parts)
    progress.close()
    seconds = time.perf_counter() - start
    if args.preview:
        store = open_store(args.out, stage="occ_label")
        indices = preview_frames(store.sizes["frame"], PREVIEW_FRAMES)
        timestamp_us = store["timestamp_us"].values
        titles = [f"{scene.name} frame {i} (t={(timestamp_us[i] - timestamp_us[0]) / 1e6:.1f} s)" for i in indices]
        chosen = store.isel(frame=indices)
        save_occupancy_preview(args.preview, chosen["semantics"].values, chosen["mask_camera"].values, grid, range(len(indices)), titles)
    frames = len(scene.frame_timestamp_us)
    print(f"occ_label: {frames} frames in {seconds:.1f} s ({frames / seconds:.2f} frames/s) on {device}, backend {options.backend}")
    if device == "cuda":
        print(f"occ_label: peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


def _dataset(batch: FrameLabels, timestamp_us: np.ndarray) -> xr.Dataset:
    dims = ("frame", "x", "y", "z")
    return xr.Dataset({
        "semantics": (dims, batch.semantics),
        "mask_lidar": (dims, batch.mask_lidar),
        "mask_camera": (dims, batch.mask_camera),
        "timestamp_us": (("frame",), timestamp_us[batch.frames]),
    })
