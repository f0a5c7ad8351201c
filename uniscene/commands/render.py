"""`uniscene render`: per-camera semantic and depth maps of every frame of one scene (docs/stores.md, render.zarr)."""

import time
from contextlib import closing

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
from uniscene.render.occupancy import HostMaps, RenderSettings, render_occupancy, select_backend
from uniscene.timing import StepTimes
from uniscene.viz.render import preview_image, save_png
from uniscene.store import StoreWriter, open_store, read_ahead

STAGE = "render"
HELP = "render occupancy into per-camera semantic and depth maps"
MAP_DIMS = ("frame", "cam", "h", "w")
READ_AHEAD_FRAMES = 16  # occupancy and layout frames read ahead of the renderer (~1.4 MB each at 200 x 200 x 16)


def add_arguments(parser):
    parser.add_argument("--frames", required=True, help="the scene's frames.zarr (cameras)")
    parser.add_argument("--occupancy", required=True, help="occupancy to render: occ_label.zarr, or a generated chain's occ_gen.zarr")
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
    began = time.perf_counter()
    grid = OccGrid.from_config(config)
    settings = RenderSettings.from_config(config)
    device = resolve_device(config)
    backend = select_backend(settings, device)

    # 1. Inputs: cameras, occupancy, road markings; all on the same frames and grid.
    frames = open_store(args.frames, stage="frames")
    timestamp_us = frames["timestamp_us"].values
    occupancy = open_store(args.occupancy)
    if "semantics" not in occupancy:
        raise UserError(f"store {args.occupancy} has no 'semantics' variable: point --occupancy at an occ_label.zarr or occ_gen.zarr")
    source = "generated" if occupancy.attrs["uniscene"]["stage"] == "occ_gen" else "label"
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

    # 2. Render frame by frame, all cameras in one pass: the next frames' inputs are read ahead in a thread,
    # the maps cast on the device and copied into pinned buffers, and written by the store's threads meanwhile.
    num_frames, num_cameras = ego_from_cam.shape[:2]
    maps_shape = (0, num_cameras) + size_hw
    template = xr.Dataset(
        {
            "semantic": (MAP_DIMS, np.empty(maps_shape, np.uint8)),
            "depth": (MAP_DIMS, np.empty(maps_shape, np.float16)),
            "alpha": (MAP_DIMS, np.empty(maps_shape, np.float16)),
            "intrinsics": (("frame", "cam", "k_row", "k_col"), intrinsics[:0]),
            "timestamp_us": (("frame",), timestamp_us[:0]),
        },
        attrs={"scene": frames.attrs["scene"], "source": source, "backend": backend, "camera_names": list(CAMERA_NAMES),
               "class_names": list(RENDER_CLASS_NAMES), "background": RENDER_BACKGROUND, "device": device},
    )
    inputs = [args.frames, args.occupancy] + ([args.layout] if args.layout else [])
    times, host, middle, preview = StepTimes(device), HostMaps(), num_frames // 2, None
    reads = read_ahead(frame_inputs(occupancy["semantics"], markings, channel_names, times), depth=READ_AHEAD_FRAMES)
    with closing(reads), StoreWriter(args.out, template, stage=STAGE, config_subset=config, inputs=inputs,
                                     num_frames=num_frames) as writer:
        start = time.perf_counter()
        for t in tqdm(range(num_frames), desc=f"render {frames.attrs['scene']}", unit="frame"):
            with times.step("waiting for reads"):
                semantics, frame_markings = next(reads)
            with times.step("render"):
                maps = render_occupancy(semantics, grid, ego_from_cam[t], intrinsics[t], size_hw, frame_markings, settings, device, backend)
            with times.step("cast"):
                maps = maps.packed()
            with times.step("device to host"):
                arrays = host.to_host(maps)
            if t == middle and args.preview:
                preview = {name: values.copy() for name, values in arrays.items()}
            host.hold(writer.append({**{name: values[None] for name, values in arrays.items()},
                                     "intrinsics": intrinsics[t:t + 1], "timestamp_us": timestamp_us[t:t + 1]}))
        seconds = time.perf_counter() - start
        writer.attrs.update(render_seconds=round(seconds, 3), frames_per_second=round(num_frames / seconds, 3))
    times.add("waiting for the writer", writer.timing["wait_s"])
    times.add("compress+write (writer threads)", writer.timing["write_s"])
    times.add("closing the store", writer.timing["close_s"])
    total = time.perf_counter() - began
    print(f"render {frames.attrs['scene']}: {num_frames} frames x {num_cameras} cameras at {size_hw[0]}x{size_hw[1]} "
          f"from {source} occupancy with {backend} on {device}: render loop {seconds:.1f} s ({num_frames / seconds:.2f} frames/s), "
          f"store to store {total:.1f} s ({num_frames / total:.2f} frames/s); steps: {times}")

    # 3. Preview.
    if args.preview:
        save_png(args.preview, preview_image(preview["semantic"], preview["depth"].astype(np.float32), preview["alpha"], settings.min_alpha))


def frame_inputs(semantics, markings, channel_names, times: StepTimes, block: int = 8):
    """(occupancy [X, Y, Z], marking layers [M, X, Y] or None) of each frame, read `block` frames at a time."""
    for start in range(0, semantics.sizes["frame"], block):
        began = time.perf_counter()
        occupancy = semantics[start:start + block].values
        layers = None if markings is None else markings[start:start + block].values
        times.add("read (read-ahead thread)", time.perf_counter() - began)
        for i in range(len(occupancy)):
            yield occupancy[i], None if layers is None else marking_layers(layers[i], channel_names)
