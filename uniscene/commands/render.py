"""`uniscene render`: per-camera semantic and depth maps of every frame of one scene (docs/stores.md, render.zarr)."""

import time

import numpy as np
import xarray as xr
from tqdm import tqdm

from uniscene.sensors import CAMERA_NAMES
from uniscene.classes import LAYOUT_CHANNEL_NAMES, RENDER_BACKGROUND, RENDER_CLASS_NAMES
from uniscene.config import resolve_device
from uniscene.errors import UserError
from uniscene.grid import OccGrid
from uniscene.render.cameras import scale_intrinsics
from uniscene.render.gaussians import marking_layers
from uniscene.render.occupancy import RenderSettings, render_occupancy, select_backend
from uniscene.viz.render import preview_image, save_png
from uniscene.store import open_store, write_store

STAGE = "render"
HELP = "render occupancy into per-camera semantic and depth maps"


def add_arguments(parser):
    parser.add_argument("--frames", required=True, help="the scene's frames.zarr (cameras)")
    parser.add_argument("--occupancy", required=True, help="occupancy to render: occ_label.zarr or occ_gen.zarr (render.source)")
    parser.add_argument("--layout", help="the scene's layout.zarr, whose road markings are painted on the ground")
    parser.add_argument("--out", required=True, help="render.zarr to write")
    parser.add_argument("--preview", help="PNG of one frame's maps (semantic palette, turbo depth) to write")


def render_size(settings: RenderSettings, image_size_hw: np.ndarray) -> tuple:
    """(H, W) of the maps: render.image_size, or the dataset's first camera's image size."""
    return tuple(int(v) for v in (settings.image_size if settings.image_size is not None else image_size_hw[0]))


def check_frames(path, timestamp_us: np.ndarray, expected_us: np.ndarray) -> None:
    if len(timestamp_us) != len(expected_us) or not np.array_equal(timestamp_us, expected_us):
        raise UserError(f"store {path} holds other frames ({len(timestamp_us)}) than frames.zarr ({len(expected_us)}): rerun the stage that writes it")


def main(args, config):
    grid = OccGrid.from_config(config)
    settings = RenderSettings.from_config(config)
    device = resolve_device(config)
    backend = select_backend(settings, device)
    source = settings.source

    # 1. Inputs: cameras, occupancy, road markings; all on the same frames and grid.
    frames = open_store(args.frames, stage="frames")
    timestamp_us = frames["timestamp_us"].values
    occupancy = open_store(args.occupancy)
    if "semantics" not in occupancy:
        raise UserError(f"store {args.occupancy} has no 'semantics' variable: point --occupancy at an occ_label.zarr or occ_gen.zarr")
    check_frames(args.occupancy, occupancy["timestamp_us"].values, timestamp_us)
    grid.check_store(occupancy, args.occupancy)
    markings, channel_names = None, LAYOUT_CHANNEL_NAMES
    if args.layout:
        layout = open_store(args.layout, stage="layout")
        check_frames(args.layout, layout["timestamp_us"].values, timestamp_us)
        grid.check_store(layout, args.layout)
        markings = layout["layout"]  # [T, C, X, Y], read a frame at a time
        channel_names = layout.attrs.get("channel_names", LAYOUT_CHANNEL_NAMES)
    size_hw = render_size(settings, frames["cam_image_size"].values)
    intrinsics = scale_intrinsics(frames["cam_intrinsics"].values, frames["cam_image_size"].values[None], size_hw)  # [T, V, 3, 3]
    ego_from_cam = frames["ego_from_cam"].values  # [T, V, 4, 4]

    # 2. Render frame by frame, all cameras in one pass.
    num_frames, num_cameras = ego_from_cam.shape[:2]
    semantic = np.empty((num_frames, num_cameras) + size_hw, np.uint8)
    depth = np.empty((num_frames, num_cameras) + size_hw, np.float16)
    alpha = np.empty((num_frames, num_cameras) + size_hw, np.float16)
    start = time.perf_counter()
    for t in tqdm(range(num_frames), desc=f"render {frames.attrs['scene']}", unit="frame"):
        frame_markings = None if markings is None else marking_layers(markings[t].values, channel_names)
        maps = render_occupancy(
            occupancy["semantics"][t].values, grid, ego_from_cam[t], intrinsics[t], size_hw, frame_markings, settings, device, backend,
        ).numpy()
        semantic[t], depth[t], alpha[t] = maps["semantic"], maps["depth"], maps["alpha"]
    seconds = time.perf_counter() - start
    print(f"render {frames.attrs['scene']}: {num_frames} frames x {num_cameras} cameras at {size_hw[0]}x{size_hw[1]} "
          f"from {source} occupancy with {backend} on {device} in {seconds:.1f} s ({num_frames / seconds:.2f} frames/s)")

    # 3. Store and preview.
    dataset = xr.Dataset(
        {
            "semantic": (("frame", "cam", "h", "w"), semantic),
            "depth": (("frame", "cam", "h", "w"), depth),
            "alpha": (("frame", "cam", "h", "w"), alpha),
            "intrinsics": (("frame", "cam", "k_row", "k_col"), intrinsics),
            "timestamp_us": (("frame",), timestamp_us),
        },
        attrs={
            "scene": frames.attrs["scene"],
            "source": source,
            "backend": backend,
            "camera_names": list(CAMERA_NAMES),
            "class_names": list(RENDER_CLASS_NAMES),
            "background": RENDER_BACKGROUND,
            "device": device,
            "render_seconds": round(seconds, 3),
            "frames_per_second": round(num_frames / seconds, 3),
        },
    )
    if args.preview:
        middle = num_frames // 2
        save_png(args.preview, preview_image(semantic[middle], depth[middle].astype(np.float32), alpha[middle], settings.min_alpha))
    inputs = [args.frames, args.occupancy] + ([args.layout] if args.layout else [])
    write_store(args.out, dataset, stage="render", config_subset=config, inputs=inputs)
