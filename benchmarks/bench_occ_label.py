"""Benchmark of the occ_label stage: frames per second for a whole scene, per backend and device, memory, and
the labelling backends' quality side by side.

    python benchmarks/bench_occ_label.py [--duration-s 40] [--poisson-frames 8] [--devices cuda cpu] [--camera-size 900 1600]
                                         [--compare-backends poisson nksr] [--compare-frames 12]

Writes a synthetic scene of `--duration-s` seconds (the repository config with a longer
`synth.duration_s`, one scene, in a temporary folder unless `--dataroot` names one), runs
`uniscene frames` on it, then times the labeller (`build_surface` + `label_frames`; the sweeps
are read by the aggregation, a chunk at a time, so their reading counts in the surface build)
for the whole scene with the default backend on each device, and the Poisson backend on `--poisson-frames` frames (its per-scene surface build counted in full:
frames/s = frames / (surface + those frames)).
Then the comparison of backends: the config's backend and each of `--compare-backends` label
the same `--compare-frames` evenly spaced frames (the scene's own cameras), scored against the
synthetic truth as `uniscene metrics occ_label` scores the stored labels (mIoU and geometric
IoU inside the truth's mask_camera); a backend that cannot run here (NKSR without its package
or a GPU) is reported as skipped with the reason.
Prints one JSON line per figure: {"device", "what", "value", "unit"}, including peak host RSS and
peak GPU memory.
"""

import argparse
import copy
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from uniscene.config import load_config  # noqa: E402
from uniscene.errors import UserError  # noqa: E402
from uniscene.grid import OccGrid  # noqa: E402
from uniscene.metrics.occ_label import NUM_LABELS, confusion, scores, truth_of, truth_rows  # noqa: E402
from uniscene.occ_label.inputs import load_scene  # noqa: E402
from uniscene.occ_label.label import LabelOptions, build_surface, label_frames  # noqa: E402

SCENE = "synth-0000"


def emit(device: str, what: str, value, unit: str) -> None:
    print(json.dumps({"device": device, "what": what, "value": value, "unit": unit}), flush=True)


def prepare(workdir: Path, duration_s: float, dataroot: Path | None) -> tuple[dict, Path]:
    config = load_config(str(REPO / "config.yaml"))  # defaults filled in
    root = dataroot or workdir / "synthetic"
    config["dataset"].update(dataroot=str(root), scenes=[SCENE])
    config["synth"].update(num_scenes=1, duration_s=duration_s)
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    frames = workdir / "frames.zarr"
    if not (root / "truth").is_dir():
        subprocess.run([sys.executable, "-m", "uniscene.cli", "synth", "--config", str(config_path), "--out", str(root)], check=True)
    subprocess.run([sys.executable, "-m", "uniscene.cli", "frames", "--config", str(config_path), "--scene", SCENE, "--out", str(frames)], check=True)
    return config, frames


def run(scene, grid, options, device, frames=None) -> tuple[float, float, int]:
    """Seconds of the surface build, seconds of the frames, number of frames."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    surface = build_surface(scene, grid, options, device)
    if device == "cuda":
        torch.cuda.synchronize()
    built = time.perf_counter()
    count = sum(len(batch.frames) for batch in label_frames(surface, scene, grid, options, frames))
    if device == "cuda":
        torch.cuda.synchronize()
    return built - start, time.perf_counter() - built, count


def scale_cameras(scene, size_hw) -> None:
    """Make the scene's cameras `size_hw` pixels large, same fields of view (the intrinsics scaled per axis)."""
    height, width = size_hw
    scale = np.array([width, height], np.float64) / scene.cam_image_size[:, ::-1]  # [V, 2] (x, y)
    scene.cam_intrinsics = scene.cam_intrinsics.copy()
    scene.cam_intrinsics[..., :2, :] *= scale[None, :, :, None]
    scene.cam_image_size = np.tile([height, width], (len(scene.cam_image_size), 1))


PHASES = ("aggregate_sweeps", "nearest_labels", "range_images", "seen_through", "densify", "carve_objects", "fill_ground", "tangent_patches",
          "_voxelize_batch", "voxelize_frames", "mask_camera", "_lidar_rays", "mask_lidar")


def profile_phases(scene, grid, options, device, frames) -> dict:
    """Seconds per labeller step (build_surface + label_frames on `frames`), each step synchronised."""
    import uniscene.occ_label.label as label

    seconds = dict.fromkeys(PHASES, 0.0)
    originals = {name: getattr(label, name) for name in PHASES}

    def timed(name, function):
        def call(*args, **kwargs):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            result = function(*args, **kwargs)
            if device == "cuda":
                torch.cuda.synchronize()
            seconds[name] += time.perf_counter() - start
            return result
        return call

    for name, function in originals.items():
        setattr(label, name, timed(name, function))
    try:
        run(scene, grid, options, device, frames)
    finally:
        for name, function in originals.items():
            setattr(label, name, function)
    return {name: round(value, 3) for name, value in seconds.items()}


def compare_backends(config, scene, grid, dataroot, backends, frames, device) -> None:
    """Each backend labels `frames` of the scene; its labels scored against the truth inside the truth's mask_camera."""
    truth = truth_of(dataroot, SCENE, grid)
    rows = truth_rows(truth, scene.frame_timestamp_us)
    for backend in backends:
        options = LabelOptions.from_config({**config, "occ_label": {**config["occ_label"], "backend": backend}})
        matrix = np.zeros((NUM_LABELS, NUM_LABELS), np.int64)
        start = time.perf_counter()
        try:
            surface = build_surface(scene, grid, options, device)
            for batch in label_frames(surface, scene, grid, options, frames):
                for f, semantics in zip(batch.frames, batch.semantics):
                    matrix += confusion(truth["semantics"][rows[f]].values, semantics, truth["mask_camera"][rows[f]].values)
        except UserError as error:
            emit(device, f"{backend} labels vs truth", f"skipped: {error}", "")
            continue
        emit(device, f"{backend} labels vs truth ({len(frames)} frames, inside truth mask_camera)", scores(matrix), "%")
        emit(device, f"{backend} seconds for those frames (surface build and scoring included)", round(time.perf_counter() - start, 2), "s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=40.0)
    parser.add_argument("--poisson-frames", type=int, default=8)
    parser.add_argument("--poisson-devices", nargs="+", default=["cpu"], help="where the Poisson backend labels its frames (its meshing is Open3D's, on the CPU)")
    parser.add_argument("--devices", nargs="+", default=["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"])
    parser.add_argument("--cpu-frames", type=int, default=48, help="frames timed on the CPU (0 = all)")
    parser.add_argument("--dataroot", type=Path, help="an existing synthetic dataset of one scene (skips `uniscene synth`)")
    parser.add_argument("--voxel-size-m", type=float, help="label on the config's grid range at this voxel size (e.g. 0.1: 800 x 800 x 64); the dataset keeps the config's grid")
    parser.add_argument("--profile-frames", type=int, default=0, help="also time each labeller step on this many frames per device")
    parser.add_argument("--camera-size", type=int, nargs=2, metavar=("H", "W"), default=[900, 1600],
                        help="label as if the cameras were this large (their intrinsics scaled from the synthetic images): "
                             "mask_camera's cost grows with the pixels; default nuScenes' 900 x 1600")
    parser.add_argument("--compare-backends", nargs="*", default=["poisson", "nksr"], choices=["splat", "poisson", "nksr"],
                        help="backends whose labels are scored beside the config's backend's on the same frames (none: skip)")
    parser.add_argument("--compare-frames", type=int, default=12, help="evenly spaced frames the compared backends label (0 = all)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config, frames_path = prepare(Path(tmp), args.duration_s, args.dataroot)
        grid = OccGrid.from_config(config)
        if args.voxel_size_m:
            grid = OccGrid(grid.range_m, args.voxel_size_m)
        options = LabelOptions.from_config(config)
        scene = load_scene(frames_path, options, grid)
        own_cameras = copy.copy(scene)  # the comparison labels as the stage does, with the dataset's cameras
        scale_cameras(scene, args.camera_size)
        total = len(scene.frame_timestamp_us)
        stride = options.camera_stride_px(scene.cam_intrinsics, grid)
        emit("-", "scene", {"frames": total, "sweeps": len(scene.sweep_timestamp_us), "points": scene.sweeps.num_points,
                            "duration_s": args.duration_s, "grid": list(grid.shape), "voxel_size_m": grid.voxel_size_m,
                            "camera_size": list(args.camera_size), "camera_ray_stride_px": stride}, "")
        default_fps = {}
        for device in args.devices:
            frames = None if device == "cuda" or args.cpu_frames == 0 else np.arange(min(args.cpu_frames, total))
            if device == "cuda":
                run(scene, grid, options, device, np.arange(min(16, total)))  # warm-up: kernels, allocator
                torch.cuda.reset_peak_memory_stats()
            surface_s, frames_s, count = run(scene, grid, options, device, frames)
            # The surface is built once per scene: a partial run counts it at its share of the scene.
            fps = count / (surface_s * count / total + frames_s)
            default_fps[device] = fps
            emit(device, f"{options.backend} surface build (whole scene)", round(surface_s, 3), "s")
            emit(device, f"{options.backend} frames ({count} of {total})", round(frames_s, 3), "s")
            emit(device, f"{options.backend} frames per second, whole scene", round(fps, 2), "frames/s")
            if device == "cuda":
                emit(device, "peak GPU memory", round(torch.cuda.max_memory_allocated() / 2**30, 3), "GiB")
            if args.profile_frames:
                subset = np.arange(min(args.profile_frames, total))
                emit(device, f"seconds per step ({len(subset)} frames, surface whole)", profile_phases(scene, grid, options, device, subset), "s")
        emit("-", f"peak host memory (RSS) after the {options.backend} runs", round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3), "GiB")
        if args.poisson_frames:
            poisson = LabelOptions.from_config({**config, "occ_label": {**config["occ_label"], "backend": "poisson"}})
            subset = np.linspace(0, total - 1, min(args.poisson_frames, total)).round().astype(int)
            for poisson_device in args.poisson_devices:  # Open3D meshes on the CPU; the frames are labelled on this device
                surface_s, frames_s, count = run(scene, grid, poisson, poisson_device, subset)
                poisson_fps = count / (surface_s * count / total + frames_s)
                emit(poisson_device, "poisson surface build (whole scene)", round(surface_s, 3), "s")
                emit(poisson_device, f"poisson frames per second ({count} frames, surface at its share)", round(poisson_fps, 4), "frames/s")
                for device, fps in default_fps.items():
                    emit(device, f"{options.backend} ({device}) over poisson (frames on {poisson_device}) speed ratio", round(fps / poisson_fps, 1), "x")
            emit("-", "peak host memory (RSS)", round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3), "GiB")
        if args.compare_backends and args.voxel_size_m:
            emit("-", "backends vs truth", "skipped: the truth is on the config's grid, not --voxel-size-m", "")
        elif args.compare_backends:
            count = total if args.compare_frames == 0 else min(args.compare_frames, total)
            frames = np.unique(np.linspace(0, total - 1, count).round().astype(int))
            backends = list(dict.fromkeys([options.backend, *args.compare_backends]))
            compare_backends(config, own_cameras, grid, config["dataset"]["dataroot"], backends, frames, args.devices[0])


if __name__ == "__main__":
    main()
