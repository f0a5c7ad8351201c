"""Benchmark of the render and occ_label commands store to store: frames/s, the per-step split, peak host memory.

    python benchmarks/bench_stage_io.py --out stage_io.jsonl [--dataroot DIR] [--duration-s 40] [--short-s 10]
                                        [--camera-size 900 1600] [--render-size 450 800] [--kernel-frames 50]

Writes (or reuses, `--dataroot`) a one-scene synthetic dataset of `--duration-s` seconds, runs
`uniscene frames` on it, makes its cameras `--camera-size` pixels large in the frames store (the
intrinsics scaled, same fields of view: the occupancy labels' camera mask then costs what it
costs on nuScenes), and cuts a `--short-s` scene from it (the first frames and the sweeps they
use). Then, first, the kernel-only render figures of `benchmarks/bench_render.py` (its JSON lines,
passed through; on CUDA this also compiles gsplat, once per machine), and for the long scene,
then the short one, each command in a fresh process that times the command's `main` (start-up,
imports and the renderer's warm-up excluded):

- `uniscene occ-label`: frames/s end to end (reading the sweeps, the surface, the frames, the
  store written), the command's own per-step split;
- `uniscene layout` (untimed: the render command paints its road markings);
- `uniscene render` at `--render-size`: frames/s store to store, the split (read, render, cast,
  device to host, compress+write in the writer threads, waiting, closing the store), and two checks
  on the device: the stored maps equal, bit for bit, the unstreamed path for a few frames
  (render_occupancy's float32 maps copied to the host and cast there), and the device's float16
  cast equals numpy's on 2 M random float32 values;
- each process's peak host memory (RSS, the kernel's high-water mark VmHWM) and the RSS when its store
  writer opened and the most above that during the frame loop (sampled every 20 ms).

Prints and appends to `--out` one JSON line per figure: {"device", "scene_s", "what", "value", "unit"}.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SCENE = "synth-0000"
CHECKED_FRAMES = 4  # frames of the render store compared with the unstreamed path


class Figures:
    """JSON lines to stdout and to the --out file."""

    def __init__(self, path: Path, device: str):
        self.path, self.device = path, device

    def emit(self, what: str, value, unit: str, scene_s=None) -> None:
        line = json.dumps({"device": self.device, "scene_s": scene_s, "what": what, "value": value, "unit": unit})
        print(line, flush=True)
        with open(self.path, "a") as handle:
            handle.write(line + "\n")


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"


# ------------------------------------------------------------------------------------------ inputs


def uniscene(*argv) -> None:
    subprocess.run([sys.executable, "-m", "uniscene.cli", *argv], check=True)


def prepare(args, workdir: Path) -> tuple[Path, dict]:
    """The config file and {scene seconds: frames store} of the long and the short scene."""
    import yaml

    from uniscene.config import load_config

    config = load_config(str(REPO / "config.yaml"))
    dataroot = args.dataroot or workdir / "synthetic"
    config["dataset"].update(dataroot=str(dataroot), scenes=[SCENE])
    config["synth"].update(num_scenes=1, duration_s=args.duration_s)
    config["render"].update(image_size=list(args.render_size), backend=args.backend)
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    if not (dataroot / "truth").is_dir():
        uniscene("synth", "--config", str(config_path), "--out", str(dataroot))
    full = workdir / "frames-full.zarr"
    uniscene("frames", "--config", str(config_path), "--scene", SCENE, "--out", str(full))
    long_frames, short_frames = workdir / "frames-long.zarr", workdir / "frames-short.zarr"
    resized = scale_cameras(full, tuple(args.camera_size))
    write_frames(long_frames, resized, full)
    write_frames(short_frames, cut(resized, args.short_s), full)
    return config_path, {args.duration_s: long_frames, args.short_s: short_frames}


def scale_cameras(path: Path, size_hw: tuple):
    """The frames store at `path` with every camera `size_hw` pixels large, same fields of view."""
    from uniscene.store import open_store

    frames = open_store(path, "frames").load()
    height, width = size_hw
    image_size = frames["cam_image_size"].values
    scale = np.array([width, height], np.float64) / image_size[:, ::-1]  # [V, 2] (x, y)
    intrinsics = frames["cam_intrinsics"].values.copy()
    intrinsics[..., :2, :] *= scale[None, :, :, None]
    return frames.assign(cam_intrinsics=(frames["cam_intrinsics"].dims, intrinsics),
                         cam_image_size=(frames["cam_image_size"].dims, np.tile([height, width], (len(image_size), 1))))


def cut(frames, seconds: float):
    """The first `seconds` of a scene: its frames and the sweeps up to half a second past the last one."""
    stamps = frames["timestamp_us"].values
    count = int(np.searchsorted(stamps, stamps[0] + seconds * 1e6, side="right"))
    sweeps = int(np.searchsorted(frames["sweep_timestamp_us"].values, stamps[count - 1] + 500_000, side="right"))
    return frames.isel(frame=slice(0, count), sweep=slice(0, sweeps))


def write_frames(path: Path, frames, source: Path) -> None:
    from uniscene.store import open_store, store_provenance, write_store

    provenance = store_provenance(open_store(source, "frames"))
    frames = frames.copy()
    frames.attrs = {k: v for k, v in frames.attrs.items() if k != "uniscene"}
    write_store(path, frames, stage="frames", config_subset=provenance["config"], inputs=[source], frame_chunk=4096)


# ------------------------------------------------------------------------------------------ one command, in a child


class Memory:
    """Resident set size sampled every 20 ms in a thread; `mark()` notes the RSS at a moment and starts a new peak."""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak_since_mark, self.at_mark, self._stop = 0, None, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * self.page

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak_since_mark = max(self.peak_since_mark, self.rss())

    def mark(self):
        self.at_mark = self.rss()
        self.peak_since_mark = self.at_mark

    @staticmethod
    def peak() -> int:
        """The kernel's high-water mark of this process's RSS (VmHWM; ru_maxrss would carry the parent's over fork and exec)."""
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) * 1024

    def stop(self):
        self._stop.set()
        self._thread.join()
        self.peak_since_mark = max(self.peak_since_mark, self.rss())


def child(args) -> None:
    """Run one command's main in this process, timed; write the figures to args.result as JSON."""
    import torch

    from uniscene import store
    from uniscene.cli import _module, build_parser
    from uniscene.config import load_config
    from uniscene.stage_config import stage_config

    argv = json.loads(args.child_argv)
    command = argv[0]
    parsed = build_parser(command).parse_args(argv)
    module = _module(command)
    config = stage_config(load_config(parsed.config), module.STAGE)
    memory = Memory()
    recorded = []

    class Recorded(module.StepTimes):  # the command's own split
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            recorded.append(self)

    module.StepTimes = Recorded
    enter = store.StoreWriter.__enter__

    def marked_enter(self):
        memory.mark()  # the frame loop starts with the store writer
        return enter(self)

    store.StoreWriter.__enter__ = marked_enter
    if command == "render":
        warm_up(config)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    module.main(parsed, config)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    memory.stop()
    opened = store.open_store(parsed.out)
    result = {"seconds": seconds, "frames": opened.sizes["frame"], "steps": recorded[-1].rounded() if recorded else {},
              "peak_rss": memory.peak(), "rss_at_writer": memory.at_mark,
              "peak_rss_in_loop": memory.peak_since_mark}
    if command == "render":
        result.update(check_render(parsed, config, opened))
    Path(args.result).write_text(json.dumps(result))


def warm_up(config: dict) -> None:
    """One small render on the command's device and backend: CUDA's context and gsplat's kernels (compiled on first use)."""
    from uniscene.config import resolve_device
    from uniscene.grid import OccGrid
    from uniscene.render.occupancy import RenderSettings, render_occupancy, select_backend
    from uniscene.synth.sensors import camera_rig

    device, settings = resolve_device(config), RenderSettings.from_config(config)
    grid = OccGrid.from_config(config)
    semantics = np.full(grid.shape, 17, np.uint8)
    semantics[:, :, 2] = 11
    rig = camera_rig((45, 80))
    render_occupancy(semantics, grid, rig.ego_from_cam, rig.intrinsics, (45, 80), None, settings, device,
                     select_backend(settings, device)).packed().numpy()


def check_render(parsed, config: dict, rendered) -> dict:
    """The stored maps against the unstreamed path for a few frames; the device's float16 cast against numpy's."""
    import torch

    from uniscene.config import resolve_device
    from uniscene.grid import OccGrid
    from uniscene.render.cameras import scale_intrinsics
    from uniscene.render.gaussians import marking_layers
    from uniscene.render.occupancy import RenderSettings, render_occupancy, select_backend
    from uniscene.store import open_store

    device, settings, grid = resolve_device(config), RenderSettings.from_config(config), OccGrid.from_config(config)
    backend = select_backend(settings, device)
    frames, occupancy, layout = open_store(parsed.frames), open_store(parsed.occupancy), open_store(parsed.layout)
    size_hw = tuple(rendered.sizes[d] for d in ("h", "w"))
    intrinsics = scale_intrinsics(frames["cam_intrinsics"].values, frames["cam_image_size"].values[None], size_hw)
    same = True
    for t in np.linspace(0, frames.sizes["frame"] - 1, CHECKED_FRAMES).round().astype(int):
        maps = render_occupancy(occupancy["semantics"][t].values, grid, frames["ego_from_cam"].values[t], intrinsics[t], size_hw,
                                marking_layers(layout["layout"][t].values, layout.attrs["channel_names"]), settings, device,
                                backend).numpy()
        same &= np.array_equal(rendered["semantic"].values[t], maps["semantic"])
        for name in ("depth", "alpha"):
            same &= np.array_equal(rendered[name].values[t].view(np.uint16), maps[name].astype(np.float16).view(np.uint16))
    values = np.random.default_rng(0).integers(0, 2**32, 2_000_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    number = ~np.isnan(values)  # NaN stays NaN; its payload bits are not compared
    on_device = torch.from_numpy(values).to(device).to(torch.float16).cpu().numpy()
    cast_same = bool(np.array_equal(on_device[number].view(np.uint16), values[number].astype(np.float16).view(np.uint16))
                     and np.isnan(on_device[~number]).all())
    return {"store_equals_unstreamed": bool(same), "device_cast_equals_numpy": cast_same, "backend": backend}


def run_child(figures: Figures, workdir: Path, scene_s: float, argv: list) -> dict | None:
    """The figures of one command run in a fresh process (None, and a line saying so, if it failed)."""
    result = workdir / f"{argv[0]}-{scene_s}.json"
    started = time.perf_counter()
    status = subprocess.run([sys.executable, __file__, "--child-argv", json.dumps(argv), "--result", str(result)]).returncode
    figures.emit(f"{argv[0]}: child process wall time (start-up included)", round(time.perf_counter() - started, 1), "s", scene_s)
    if status != 0:
        figures.emit(f"{argv[0]}: FAILED (exit status {status}; its traceback is in the log)", status, "exit status", scene_s)
        return None
    return json.loads(result.read_text())


def report(figures: Figures, name: str, scene_s: float, result: dict | None) -> None:
    if result is None:
        return
    frames = result["frames"]
    figures.emit(f"{name}: frames", frames, "count", scene_s)
    figures.emit(f"{name}: store to store (main, start-up excluded)", round(result["seconds"], 2), "s", scene_s)
    figures.emit(f"{name}: frames/s store to store", round(frames / result["seconds"], 2), "frames/s", scene_s)
    for step, seconds in result["steps"].items():
        figures.emit(f"{name} step: {step}", round(1000 * seconds / frames, 2), "ms/frame", scene_s)
    figures.emit(f"{name}: peak host RSS of the process", round(result["peak_rss"] / 2**30, 3), "GiB", scene_s)
    figures.emit(f"{name}: RSS when the store writer opened", round(result["rss_at_writer"] / 2**30, 3), "GiB", scene_s)
    figures.emit(f"{name}: peak RSS during the frame loop above that", round((result["peak_rss_in_loop"] - result["rss_at_writer"]) / 2**20, 1),
                 "MiB", scene_s)
    for key in ("store_equals_unstreamed", "device_cast_equals_numpy"):
        if key in result:
            figures.emit(f"{name}: {key.replace('_', ' ')}", result[key], "bool", scene_s)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="JSON lines file to append the figures to")
    parser.add_argument("--dataroot", type=Path, help="a synthetic dataset of one scene to reuse (default: generate one in --workdir)")
    parser.add_argument("--workdir", type=Path, help="where the dataset and stores go (default: a temporary folder)")
    parser.add_argument("--duration-s", type=float, default=40.0)
    parser.add_argument("--short-s", type=float, default=10.0)
    parser.add_argument("--camera-size", type=int, nargs=2, default=[900, 1600], metavar=("H", "W"))
    parser.add_argument("--render-size", type=int, nargs=2, default=[450, 800], metavar=("H", "W"))
    parser.add_argument("--backend", default="auto", help="render.backend: auto (gsplat on CUDA) | gsplat | torch")
    parser.add_argument("--kernel-frames", type=int, default=50, help="frames of bench_render.py (0: skip the kernel figures)")
    parser.add_argument("--child-argv", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_argv:
        return child(args)
    if args.out is None:
        parser.error("--out is required")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        figures = Figures(args.out, device_name())
        started = time.perf_counter()
        config_path, scenes = prepare(args, workdir)
        figures.emit("preparing the dataset and frames stores", round(time.perf_counter() - started, 1), "s")
        if args.kernel_frames:
            kernel = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_render.py"), "--frames", str(args.kernel_frames),
                                     "--size", *map(str, args.render_size)], stdout=subprocess.PIPE, text=True)
            if kernel.returncode != 0:
                figures.emit("bench_render: FAILED (its traceback is in the log)", kernel.returncode, "exit status")
            for line in kernel.stdout.splitlines():
                if line.startswith("{"):
                    record = json.loads(line)
                    figures.emit(f"bench_render: {record['what']}", record["value"], record["unit"])
        for scene_s, frames in sorted(scenes.items(), reverse=True):
            stores = {name: workdir / f"{name}-{scene_s:g}s.zarr" for name in ("occ_label", "layout", "render")}
            common = ["--config", str(config_path), "--frames", str(frames)]
            report(figures, "occ_label", scene_s, run_child(figures, workdir, scene_s, ["occ-label", *common, "--out", str(stores["occ_label"])]))
            if not stores["occ_label"].exists():
                continue
            uniscene("layout", *common, "--out", str(stores["layout"]))
            report(figures, "render", scene_s, run_child(figures, workdir, scene_s, [
                "render", *common, "--occupancy", str(stores["occ_label"]), "--layout", str(stores["layout"]), "--out", str(stores["render"])]))
            if stores["render"].exists():
                size = sum(p.stat().st_size for p in stores["render"].rglob("*") if p.is_file())
                figures.emit("render store size", round(size / 2**20, 1), "MiB", scene_s)
        figures.emit("whole benchmark", round(time.perf_counter() - started, 1), "s")


if __name__ == "__main__":
    main()
