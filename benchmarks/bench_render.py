"""Benchmark of the render stage: frames per second, six cameras at 450 x 800, a 200 x 200 x 16 grid.

A procedural street scene on the default grid (ground slab of road, sidewalk and terrain with
painted markings, building blocks, cars, trees; about 85k occupied voxels) is rendered into
the six nuScenes-like cameras, frame after frame (the Gaussians rebuilt each frame, as the
stage does). Prints JSON lines {device, what, value, unit}:

- on CUDA with gsplat: end-to-end frames/s (occupancy -> Gaussians -> gsplat -> semantic arg-max,
  maps left on the GPU), the same with the copy of the maps to the host, the split of a
  frame's time (Gaussians / rasterisation / arg-max) that says what bounds it, peak GPU memory;
  then the PyTorch renderer on the same GPU and scene: frames/s, and its max / mean difference
  from gsplat (alpha, class features, depth where alpha >= 0.5, semantic agreement);
- elsewhere: the PyTorch renderer's frames/s on the CPU (fewer frames; `--size` to change it).

    python benchmarks/bench_render.py [--frames 50] [--size 450 800]
"""

import argparse
import json
import time

import numpy as np
import torch

from uniscene.classes import FREE, LAYOUT_CHANNEL_NAMES, OCC_CLASS_ID, RENDER_BACKGROUND
from uniscene.config import resolve_device
from uniscene.grid import OccGrid
from uniscene.render import gsplat_renderer, torch_renderer
from uniscene.render.cameras import scale_intrinsics, viewmats_from_cameras
from uniscene.render.gaussians import marking_layers, occupancy_gaussians
from uniscene.render.occupancy import RenderSettings, rasterizer, render_occupancy
from uniscene.settings import default_settings
from uniscene.synth.sensors import FULL_SIZE_HW, camera_rig

GRID = OccGrid((-40.0, -40.0, -1.0, 40.0, 40.0, 5.4), 0.4)  # 200 x 200 x 16


def street_scene(seed: int = 0):
    """Occupancy [200, 200, 16] uint8 and road markings [3, 200, 200] of a crossroads street scene."""
    rng = np.random.default_rng(seed)
    c = OCC_CLASS_ID
    semantics = np.full(GRID.shape, FREE, np.uint8)
    ground = np.full(GRID.shape[:2], c["terrain"], np.uint8)
    x, y = np.meshgrid(np.arange(200), np.arange(200), indexing="ij")
    road = (np.abs(y - 100) < 18) | (np.abs(x - 100) < 18)
    sidewalk = ~road & ((np.abs(y - 100) < 26) | (np.abs(x - 100) < 26))
    ground[road], ground[sidewalk] = c["driveable_surface"], c["sidewalk"]
    semantics[:, :, 2] = ground  # z in [-0.2, 0.2]
    for _ in range(40):  # building blocks off the roads
        i, j = rng.integers(0, 190, 2)
        block = (slice(i, i + rng.integers(8, 25)), slice(j, j + rng.integers(8, 25)))
        if not (road[block] | sidewalk[block]).any():
            semantics[block[0], block[1], 3:rng.integers(8, 16)] = c["manmade"]
    for _ in range(60):  # trees and cars
        i, j = rng.integers(5, 190, 2)
        if road[i, j]:
            semantics[i:i + 11, j:j + 5, 3:7] = c["car"]
        elif not sidewalk[i, j]:
            semantics[i:i + 4, j:j + 4, 5:12] = c["vegetation"]
    layout = np.zeros((len(LAYOUT_CHANNEL_NAMES),) + GRID.shape[:2], bool)
    layout[LAYOUT_CHANNEL_NAMES.index("ped_crossing")] = road & (((x > 74) & (x < 82)) | ((x > 118) & (x < 126)))
    layout[LAYOUT_CHANNEL_NAMES.index("lane_divider")] = road & (np.abs(y - 100) < 1) & (x % 10 < 5)
    return semantics, marking_layers(layout)


def emit(device: str, what: str, value, unit: str) -> None:
    print(json.dumps({"device": device, "what": what, "value": value, "unit": unit}), flush=True)


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_frames(render_frame, frames: int, device: str) -> float:
    """Seconds per frame of `render_frame()` over `frames` frames after one warm-up frame."""
    render_frame()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(frames):
        render_frame()
    synchronize(device)
    return (time.perf_counter() - start) / frames


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=None, help="frames to time (default 50 on CUDA, 2 on the CPU)")
    parser.add_argument("--size", type=int, nargs=2, default=(450, 800), metavar=("H", "W"))
    args = parser.parse_args()
    device = resolve_device({"device": "auto"})
    device_name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    frames = args.frames or (50 if device == "cuda" else 2)
    size_hw = tuple(args.size)

    semantics, markings = street_scene()
    rig = camera_rig(FULL_SIZE_HW)
    intrinsics = scale_intrinsics(rig.intrinsics, FULL_SIZE_HW, size_hw)  # [6, 3, 3]
    settings = default_settings(RenderSettings)
    gaussians = occupancy_gaussians(semantics, GRID, markings, settings.scale_voxels, device)
    viewmats = torch.as_tensor(viewmats_from_cameras(rig.ego_from_cam), device=device)
    ks = torch.as_tensor(intrinsics, dtype=torch.float32, device=device)
    raster_args = (gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities, gaussians.features, viewmats, ks, size_hw[1], size_hw[0])
    emit(device_name, "gaussians", int(gaussians.means.shape[0]), "count")
    emit(device_name, "image_size", f"6 x {size_hw[0]} x {size_hw[1]}", "cameras x pixels")

    backends = ["gsplat", "torch"] if gsplat_renderer.gsplat_available() else ["torch"]
    for backend in backends:
        n = frames if backend == "gsplat" or device == "cpu" else max(1, frames // 10)

        def end_to_end():
            return render_occupancy(semantics, GRID, rig.ego_from_cam, intrinsics, size_hw, markings, settings, device, backend)

        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        seconds = time_frames(end_to_end, n, device)
        emit(device_name, f"{backend}: frames/s, occupancy to semantic+depth+alpha maps on the device", round(1 / seconds, 2), "frames/s")
        emit(device_name, f"{backend}: images/s", round(6 / seconds, 1), "images/s")
        if device == "cuda":
            emit(device_name, f"{backend}: peak GPU memory", round(torch.cuda.max_memory_allocated() / 2**30, 3), "GiB")
        with_copy = time_frames(lambda: end_to_end().numpy(), max(1, n // 2), device)
        emit(device_name, f"{backend}: frames/s with the maps copied to host numpy", round(1 / with_copy, 2), "frames/s")
        # What bounds a frame: its parts timed one after the other in the same frames.
        parts = {"occupancy to Gaussians (upload, marking paint, voxel to Gaussian tensors)": 0.0,
                 "rasterisation of 6 cameras (projection, binning, compositing)": 0.0, "semantic arg-max and alpha test": 0.0}
        names = list(parts)
        for _ in range(n):
            synchronize(device)
            start = time.perf_counter()
            frame_gaussians = occupancy_gaussians(semantics, GRID, markings, settings.scale_voxels, device)
            synchronize(device)
            split = time.perf_counter()
            colors, alphas, _ = rasterizer(backend)(
                frame_gaussians.means, frame_gaussians.quats, frame_gaussians.scales, frame_gaussians.opacities,
                frame_gaussians.features, viewmats, ks, size_hw[1], size_hw[0], near_plane=settings.near_plane_m, render_mode="RGB+ED",
            )
            synchronize(device)
            done = time.perf_counter()
            torch.where(alphas[..., 0] >= settings.min_alpha, colors[..., :-1].argmax(-1), RENDER_BACKGROUND).to(torch.uint8)
            synchronize(device)
            parts[names[0]] += split - start
            parts[names[1]] += done - split
            parts[names[2]] += time.perf_counter() - done
        total = sum(parts.values())
        for name, seconds_sum in parts.items():
            emit(device_name, f"{backend}: {name}", round(seconds_sum / n * 1e3, 2), "ms/frame")
            emit(device_name, f"{backend}: share of the frame in {name.split(' (')[0]}", round(seconds_sum / total, 3), "fraction")

    if backends == ["gsplat", "torch"]:  # the two renderers on the same scene
        ours, our_alphas, meta = torch_renderer.rasterization(*raster_args, near_plane=settings.near_plane_m, render_mode="RGB+ED")
        theirs, their_alphas, _ = gsplat_renderer.rasterization(*raster_args, near_plane=settings.near_plane_m, render_mode="RGB+ED")
        covered = (their_alphas[..., 0] >= 0.5) & (our_alphas[..., 0] >= 0.5)
        differences = {
            "alpha": (our_alphas - their_alphas).abs(),
            "class features": (ours[..., :-1] - theirs[..., :-1]).abs(),
            "depth (m, alpha >= 0.5)": (ours[..., -1] - theirs[..., -1]).abs()[covered],
        }
        for name, diff in differences.items():
            emit(device_name, f"gsplat vs torch max |difference| of {name}", float(diff.max()), "abs")
            emit(device_name, f"gsplat vs torch mean |difference| of {name}", float(diff.mean()), "abs")
        same = (ours[..., :-1].argmax(-1) == theirs[..., :-1].argmax(-1))[covered].float().mean()
        emit(device_name, "gsplat vs torch semantic agreement (alpha >= 0.5)", float(same), "fraction")
        emit(device_name, "tile intersections", int(meta["n_intersections"]), "count")


if __name__ == "__main__":
    main()
