"""Benchmark of store codecs: size and write speed per array kind, to choose each variable's codec.

    python benchmarks/bench_store.py [--dataroot DIR] [--frames 6] [--size 450 800] [--markdown table.md]
                                     [--stream-frames 120 480]

Realistic arrays of each kind a store holds, from the synthetic dataset (`--dataroot`, or a
one-scene 2 s dataset generated into a temporary folder by `uniscene.synth.generate`):

- occupancy: the truth store's `semantics` [T, X, Y, Z] uint8 and `mask_camera` bool (what
  occ_label.zarr and occ_gen.zarr hold, one frame per chunk);
- render maps: that occupancy rendered by the stage's core (`render_occupancy`, gsplat on CUDA,
  the PyTorch renderer elsewhere) into the six cameras at `--size`, cast as render.zarr stores
  them: `semantic` uint8, `depth` and `alpha` float16 (one frame of six cameras per chunk);
- point clouds: the dataset's LIDAR_TOP sweeps, [N, 5] float32 as lidar.zarr stores them
  (chunks of 2^20 points);
- video: the dataset's camera images decoded, [V, H, W, 3] uint8 per frame.

Each kind is compressed with every candidate (Blosc zstd at levels 1, 3 and 5, lz4, lz4hc, each
with byte shuffle and bit shuffle) one chunk at a time on one thread, as a writer thread does
(numcodecs' Blosc off the main thread runs single-threaded). Prints one JSON line per kind and
codec: raw and stored MB, ratio, encode and decode MB/s (raw MB per second of one thread), and
`to_disk_s_per_gb`: seconds per GB of raw frames from memory to files on disk (encode, crc32c,
write; the writing thread's CPU seconds, median of `--repeats`). Then one line per kind with the choice:
the fastest to disk among the codecs of a reasonable size (within `--size-slack` of the smallest, or
under 1 % of the raw bytes). `--markdown` writes the
table that docs/stores.md shows.

Then the write path's host memory: render.zarr stores of `--stream-frames` frames each (the rendered
maps repeated), each written in a fresh process two ways: streamed a frame at a time through
`StoreWriter` (the render command now), and every frame held in host arrays then written by one
`write_store` (the render command before). One JSON line per way and frame count: peak RSS
(the kernel's high-water mark), RSS before writing, wall seconds, frames/s.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import google_crc32c  # noqa: E402  (zarr's Crc32cCodec uses it)
import numcodecs  # noqa: E402
import torch  # noqa: E402

from uniscene.config import load_config, resolve_device  # noqa: E402
from uniscene.data.files import read_sweep  # noqa: E402
from uniscene.grid import OccGrid  # noqa: E402
from uniscene.render.cameras import scale_intrinsics  # noqa: E402
from uniscene.render.occupancy import RenderSettings, render_occupancy, select_backend  # noqa: E402
from uniscene.sensors import CAMERA_NAMES  # noqa: E402
from uniscene.settings import default_settings  # noqa: E402
from uniscene.store import open_store  # noqa: E402
from uniscene.store_layouts import Codec  # noqa: E402
from uniscene.synth.sensors import FULL_SIZE_HW, camera_rig  # noqa: E402

CANDIDATES = [Codec(cname, level, shuffle) for cname, level in (("zstd", 1), ("zstd", 3), ("zstd", 5), ("lz4", 5), ("lz4hc", 5))
              for shuffle in ("shuffle", "bitshuffle")]
POINT_CHUNK = 1 << 20  # points per chunk of lidar.zarr (store_layouts)


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def dataset(dataroot: Path | None, workdir: Path) -> tuple[dict, Path]:
    """The config and dataroot of the synthetic dataset to read (generated when none is given)."""
    config = load_config(str(REPO / "config.yaml"))
    if dataroot is not None:
        config["dataset"]["dataroot"] = str(dataroot)
        return config, dataroot
    from uniscene.synth.generate import generate_dataset

    root = workdir / "synthetic"
    config["dataset"]["dataroot"] = str(root)
    config["synth"].update(num_scenes=1, duration_s=2.0)
    generate_dataset(config, root, progress=False)
    return config, root


def arrays(config: dict, dataroot: Path, frames: int, size_hw: tuple, device: str) -> dict:
    """kind -> (chunks: list of arrays as a store chunks them, what they are)."""
    truth = open_store(sorted((dataroot / "truth").glob("*.zarr"))[0], "synth_truth")
    picks = np.linspace(0, truth.sizes["frame"] - 1, frames).round().astype(int)
    semantics = truth["semantics"].values[picks]  # [F, X, Y, Z]
    grid = OccGrid.from_attrs(truth.attrs, "the truth store")
    settings = default_settings(RenderSettings)
    backend = select_backend(settings, device)
    rig = camera_rig(FULL_SIZE_HW)
    intrinsics = scale_intrinsics(rig.intrinsics, FULL_SIZE_HW, size_hw)
    maps = [render_occupancy(s, grid, rig.ego_from_cam, intrinsics, size_hw, None, settings, device, backend).packed().numpy()
            for s in semantics]
    sweeps = sorted((dataroot / "sweeps" / "LIDAR_TOP").glob("*.pcd.bin")) + sorted((dataroot / "samples" / "LIDAR_TOP").glob("*.pcd.bin"))
    points = np.concatenate([read_sweep(path) for path in sweeps[: max(frames, 8) * 4]])
    from PIL import Image

    cameras = [sorted((dataroot / "samples" / name).glob("*.jpg"))[:frames] for name in CAMERA_NAMES]
    rgb = np.stack([[np.asarray(Image.open(path).convert("RGB")) for path in images] for images in cameras], 1)  # [F, V, H, W, 3]
    scene = f"{truth.attrs.get('scene', 'scene')}, {frames} frames"
    return {
        "class maps (render semantic, uint8)": ([m["semantic"] for m in maps], f"{scene}, 6 x {size_hw[0]} x {size_hw[1]}, {backend}"),
        "depth (render depth, float16)": ([m["depth"] for m in maps], "the same maps"),
        "alpha (render alpha, float16)": ([m["alpha"] for m in maps], "the same maps"),
        "occupancy (semantics, uint8)": (list(semantics), f"{scene}, {'x'.join(map(str, grid.shape))} truth"),
        "occupancy masks (bool)": (list(truth["mask_camera"].values[picks]), "the truth's mask_camera"),
        "point clouds (float32)": ([points[i:i + POINT_CHUNK] for i in range(0, len(points), POINT_CHUNK)],
                                   f"{len(points):,} points of {min(len(sweeps), max(frames, 8) * 4)} sweeps"),
        "video (rgb, uint8)": (list(rgb), f"camera JPEGs decoded, 6 x {rgb.shape[2]} x {rgb.shape[3]}"),
    }


def blosc(codec: Codec, itemsize: int):
    shuffle = {"noshuffle": numcodecs.Blosc.NOSHUFFLE, "shuffle": numcodecs.Blosc.SHUFFLE, "bitshuffle": numcodecs.Blosc.BITSHUFFLE}
    return numcodecs.Blosc(cname=codec.cname, clevel=codec.clevel, shuffle=shuffle[codec.shuffle], typesize=itemsize)


def measure(chunks: list, codec: Codec, folder: Path, repeats: int) -> dict:
    """Size, one-thread encode/decode speed and time to disk of `chunks` with `codec` (in a worker thread, as the writer).

    Times are the CPU seconds of that thread (user + system: compressing, checksumming, copying into the page cache):
    on a shared machine wall times vary several-fold with the load, a thread's CPU time much less.
    """
    compressor = blosc(codec, chunks[0].dtype.itemsize)
    raw = sum(c.nbytes for c in chunks)

    def run():
        encode_s, disk_s, decode_s, stored = [], [], [], 0
        for _ in range(repeats):
            start = time.thread_time()
            encoded = [compressor.encode(np.ascontiguousarray(c)) for c in chunks]
            encoded_at = time.thread_time()
            for i, data in enumerate(encoded):  # as zarr's crc32c codec and LocalStore do
                with open(folder / f"c{i}", "wb") as handle:
                    handle.write(data)
                    handle.write(google_crc32c.value(data).to_bytes(4, "little"))
            written = time.thread_time()
            for data, c in zip(encoded, chunks):
                np.frombuffer(compressor.decode(data), c.dtype)
            decode_s.append(time.thread_time() - written)
            encode_s.append(encoded_at - start)
            disk_s.append(written - start)
            stored = sum(len(e) + 4 for e in encoded)
        return statistics.median(encode_s), statistics.median(decode_s), statistics.median(disk_s), stored

    with ThreadPoolExecutor(1) as thread:  # off the main thread, blosc runs on one core
        encode_s, decode_s, disk_s, stored = thread.submit(run).result()
    return {"raw_mb": round(raw / 1e6, 2), "stored_mb": round(stored / 1e6, 4), "ratio": round(raw / stored, 2),
            "encode_mb_s": round(raw / 1e6 / encode_s, 1), "decode_mb_s": round(raw / 1e6 / decode_s, 1),
            "to_disk_s_per_gb": round(disk_s / (raw / 1e9), 2)}


def choose(results: dict, slack: float, negligible: float = 0.01) -> str:
    """The codec fastest to disk among those of a reasonable size: at most `slack` more than the smallest, or under
    `negligible` of the raw bytes (for arrays that every codec shrinks a hundredfold, size does not matter)."""
    smallest = min(r["stored_mb"] for r in results.values())
    fine = {name: r for name, r in results.items() if r["stored_mb"] <= max(smallest * (1 + slack), negligible * r["raw_mb"])}
    return min(fine, key=lambda name: fine[name]["to_disk_s_per_gb"])


def markdown(table: dict, choices: dict, device: str) -> str:
    rows = [f"Measured by `benchmarks/bench_store.py` on {device}: the CPU time of one thread, medians; ratio = raw / stored; "
            f"to disk = encode + crc32c + write into the page cache, s per GB of raw frames. **Bold**: the codec chosen.", "",
            "| kind | codec | ratio | encode MB/s | decode MB/s | to disk s/GB |", "| --- | --- | --- | --- | --- | --- |"]
    for kind, results in table.items():
        for name, r in results.items():
            mark = "**" if choices[kind] == name else ""
            rows.append(f"| {kind} | {mark}{name}{mark} | {r['ratio']} | {r['encode_mb_s']} | {r['decode_mb_s']} | {r['to_disk_s_per_gb']} |")
    return "\n".join(rows) + "\n"


def write_maps(maps_file: Path, frames: int, way: str, out: Path) -> dict:
    """Write a render store of `frames` frames (the maps of `maps_file` repeated) the `way` given; RSS and seconds."""
    import xarray as xr

    from uniscene.store import StoreWriter, write_store

    with np.load(maps_file) as loaded:
        maps = {name: loaded[name] for name in ("semantic", "depth", "alpha")}  # [F0, V, H, W] each
    kept = len(maps["semantic"])
    dims = ("frame", "cam", "h", "w")
    intrinsics = np.broadcast_to(np.eye(3), (frames, maps["semantic"].shape[1], 3, 3)).copy()
    stamps = np.arange(frames, dtype=np.int64) * 83_333

    def dataset(arrays, count):
        return xr.Dataset({**{name: (dims, values) for name, values in arrays.items()},
                           "intrinsics": (("frame", "cam", "k_row", "k_col"), intrinsics[:count]),
                           "timestamp_us": (("frame",), stamps[:count])}, attrs={"scene": "bench", "source": "label"})

    before = memory_kib("VmRSS") * 1024
    start = time.perf_counter()
    if way == "streamed":
        template = dataset({name: values[:0] for name, values in maps.items()}, 0)
        with StoreWriter(out, template, stage="render", config_subset={}, num_frames=frames) as writer:
            for t in range(frames):
                writer.append({**{name: values[t % kept][None] for name, values in maps.items()},
                               "intrinsics": intrinsics[t:t + 1], "timestamp_us": stamps[t:t + 1]})
    else:  # every frame in host arrays, then one write
        held = {name: np.empty((frames,) + values.shape[1:], values.dtype) for name, values in maps.items()}
        for t in range(frames):
            for name, values in maps.items():
                held[name][t] = values[t % kept]
        write_store(out, dataset(held, frames), stage="render", config_subset={})
    seconds = time.perf_counter() - start
    return {"frames": frames, "way": way, "seconds": round(seconds, 2), "frames_per_s": round(frames / seconds, 2),
            "rss_before_gib": round(before / 2**30, 3), "peak_rss_gib": round(memory_kib("VmHWM") / 2**20, 3)}


def memory_kib(field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of this process, KiB. (ru_maxrss would carry the parent's peak over fork and exec.)"""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataroot", type=Path, help="a synthetic dataset (default: generate a 2 s one-scene dataset)")
    parser.add_argument("--frames", type=int, default=6, help="frames of each kind")
    parser.add_argument("--size", type=int, nargs=2, default=(450, 800), metavar=("H", "W"), help="render size")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size-slack", type=float, default=0.25, help="a codec may store this much more than the smallest")
    parser.add_argument("--markdown", type=Path, help="write the table (docs/stores.md) here")
    parser.add_argument("--no-codecs", dest="codecs", action="store_false", help="skip the codec table")
    parser.add_argument("--stream-frames", type=int, nargs="*", default=[120, 480],
                        help="frame counts of the memory comparison (none: skip it)")
    parser.add_argument("--write-child", nargs=4, help=argparse.SUPPRESS)  # MAPS FRAMES WAY OUT: one write, in this process
    args = parser.parse_args()
    if args.write_child:
        maps_file, frames, way, out = args.write_child
        print(json.dumps(write_maps(Path(maps_file), int(frames), way, Path(out))))
        return
    device = resolve_device({"device": "auto"})
    device_name = f"{torch.cuda.get_device_name()} host" if device == "cuda" else f"a {os.cpu_count()}-core CPU"
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        config, dataroot = dataset(args.dataroot, Path(tmp))
        kinds = arrays(config, dataroot, args.frames, tuple(args.size), device)
        folder = Path(tmp) / "chunks"
        folder.mkdir()
        table, choices = {}, {}
        for kind, (chunks, what) in kinds.items() if args.codecs else ():
            table[kind] = {}
            for codec in CANDIDATES:
                result = measure(chunks, codec, folder, args.repeats)
                table[kind][str(codec)] = result
                emit({"device": device_name, "kind": kind, "data": what, "codec": str(codec), **result})
            choices[kind] = choose(table[kind], args.size_slack)
            emit({"device": device_name, "kind": kind, "choice": choices[kind], **table[kind][choices[kind]]})
        maps_file = Path(tmp) / "maps.npz"
        np.savez(maps_file, **{name: np.stack(kinds[kind][0]) for name, kind in (
            ("semantic", "class maps (render semantic, uint8)"), ("depth", "depth (render depth, float16)"),
            ("alpha", "alpha (render alpha, float16)"))})
        for frames in args.stream_frames:
            for way in ("streamed", "held"):
                out = Path(tmp) / f"render-{way}-{frames}.zarr"
                child = subprocess.run([sys.executable, __file__, "--write-child", str(maps_file), str(frames), way, str(out)],
                                       capture_output=True, text=True, check=True)
                emit({"device": device_name, "what": "render store write, host memory", "size": list(args.size),
                      **json.loads(child.stdout.strip().splitlines()[-1])})
                shutil.rmtree(out)
    if args.markdown and table:
        args.markdown.write_text(markdown(table, choices, device_name))


if __name__ == "__main__":
    main()
