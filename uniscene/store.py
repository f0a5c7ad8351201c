"""Zarr v3 stores: atomic writes with provenance, and checked reads; the atomic file helpers.

Every stage output is an `xarray.Dataset` written here, checked against its stage's layout
(uniscene/store_layouts.py). Writes go to a temporary sibling that is renamed into place at the
end, so a killed job never leaves a store that looks complete. Every chunk ends with a crc32c
checksum (zarr's `crc32c` codec), so a corrupt chunk is found when it is read; the root attribute
`uniscene` carries the provenance (stage, version, config subset and hash, input fingerprints,
seed, time) and a manifest of the chunks (per variable: count and a digest of their checksums),
so that `open_store` finds a missing chunk file by listing the folder. Metadata is consolidated.
docs/reliability.md lists the faults this catches.
"""

import datetime as _dt
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from queue import Full, Queue

import numpy as np
import xarray as xr
import zarr
from zarr.abc.codec import BytesBytesCodec
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.chunk_grids import RegularChunkGrid

from uniscene import __version__
from uniscene.errors import UserError
from uniscene.store_layouts import DEFAULT_CODEC, LayoutError, layout_of

STORE_FORMAT = 2  # bump when a store layout changes incompatibly (2: crc32c chunks, chunk manifest, consolidated)
PROVENANCE_KEY = "uniscene"
MANIFEST_KEY = "chunks"  # in the provenance: {array: {"count": chunk files, "crc32c": digest of their checksums}}
CHECKSUM_MISMATCH = "Stored and computed checksum do not match"  # zarr's Crc32cCodec error text


def config_hash(config_subset: dict) -> str:
    """Stable short hash of a JSON-serialisable config subset."""
    text = json.dumps(config_subset, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprint(path) -> str:
    """Short fingerprint of an input: what it holds, not when it was written.

    A uniscene store: its stage, config hash, array metadata and chunk checksums (the manifest);
    its creation time and timing attributes do not count, so identical reruns give identical
    fingerprints downstream. Another file: its bytes. A folder: its JSON tables' names and sizes.
    """
    path = Path(path)
    digest = hashlib.sha256()
    if (path / "zarr.json").is_file():
        root = _read_json(path / "zarr.json")
        meta = (root or {}).get("attributes", {}).get(PROVENANCE_KEY)
        if isinstance(meta, dict) and MANIFEST_KEY in meta:
            arrays = ((root.get("consolidated_metadata") or {}).get("metadata") or {})
            what = {key: meta.get(key) for key in ("stage", "format", "config_hash", MANIFEST_KEY)}
            digest.update(json.dumps({**what, "arrays": arrays}, sort_keys=True).encode())
        else:
            digest.update((path / "zarr.json").read_bytes())
    elif path.is_file():
        digest.update(path.read_bytes())
    elif path.is_dir():
        for table in sorted(path.rglob("*.json")):
            stat = table.stat()
            digest.update(f"{table.relative_to(path)}:{stat.st_size}".encode())
    else:
        return "missing"
    return digest.hexdigest()[:16]


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def provenance(stage: str, config_subset: dict, inputs=(), seed=None) -> dict:
    return {
        "stage": stage,
        "format": STORE_FORMAT,
        "version": __version__,
        "git_commit": _git_commit(),
        "config": config_subset,
        "config_hash": config_hash(config_subset),
        "inputs": {str(p): fingerprint(p) for p in inputs},
        "seed": seed,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _encoding(dataset: xr.Dataset, layout, frame_chunk: int) -> dict:
    """Chunked along `frame` (`frame_chunk` frames, other dims whole), each variable's Blosc codec from its layout,
    a crc32c checksum ending every chunk."""
    encoding = {}
    for name, var in dataset.variables.items():
        if var.dtype.kind in "OUT":
            encoding[name] = {"compressors": (Crc32cCodec(),)}  # after zarr's own variable-length string codec
            continue
        declared = layout.variables.get(name)
        codec = declared.codec if declared is not None else DEFAULT_CODEC
        encoding[name] = {"compressors": (BloscCodec(cname=codec.cname, clevel=codec.clevel, shuffle=codec.shuffle), Crc32cCodec())}
        sizes = declared.chunk_sizes if declared is not None else {}
        chunks = tuple(max(frame_chunk, 1) if dim == "frame" and n == 0 else min(frame_chunk, n) if dim == "frame" else
                       min(sizes.get(dim, n), n) for dim, n in zip(var.dims, var.shape))
        if all(c > 0 for c in chunks):
            encoding[name]["chunks"] = chunks
    return encoding


WRITE_BYTES = 1 << 20  # StoreWriter hands a variable's frames to its threads in units of about this much or more

FILE_MODE = 0o644  # what the atomic helpers give files and folders (less the umask): readable by the group and others
DIR_MODE = 0o755


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tmp_sibling(path: Path, suffix: str = "") -> Path:
    """`.<name>.tmp-<pid><suffix>` beside `path`: hidden, never mistaken for the output."""
    return path.parent / f".{path.name}.tmp-{os.getpid()}{suffix}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def remove_stale_temporaries(path) -> list:
    """Remove the temporary siblings of `path` that killed writers left (`.<name>.tmp-<pid>*` whose pid is gone).

    Called by every atomic write of `path`, so a killed job's leftovers last only until the next write
    of that output. A sibling whose process still runs on this host is kept (it is being written).
    Returns the removed paths.
    """
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    prefix = f".{path.name}.tmp-"
    for sibling in path.parent.iterdir():
        if not sibling.name.startswith(prefix):
            continue
        pid = sibling.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and (int(pid) == os.getpid() or _pid_alive(int(pid))):
            continue
        if sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            sibling.unlink(missing_ok=True)
        removed.append(sibling)
    return removed


def _make_readable(path: Path) -> None:
    """Give `path` (and everything under a folder) mode 0644 / 0755 less the umask.

    Some writers create files 0600 (temporary-file APIs, safetensors); outputs on a shared
    filesystem must be readable by the others who run the pipeline. Executables get 0755.
    """
    mask = _umask()

    def file_mode(file) -> int:  # an executable keeps its x bits
        return (DIR_MODE if os.stat(file).st_mode & 0o100 else FILE_MODE) & ~mask

    if path.is_dir():
        for root, dirs, files in os.walk(path):
            os.chmod(root, DIR_MODE & ~mask)
            for name in files:
                os.chmod(os.path.join(root, name), file_mode(os.path.join(root, name)))
    else:
        os.chmod(path, file_mode(path))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_directory(path):
    """Yield a temporary sibling folder of `path` to fill; on success it replaces `path`, on failure it is removed.

    A killed or failed writer therefore never leaves a folder at `path` that looks complete:
        with atomic_directory("results/models/lidar") as tmp:
            network.save_pretrained(tmp)
    The folder (`.<name>.tmp-<pid>`) exists and is empty when the block starts; stale ones of killed
    writers are removed first. Files get mode 0644 and folders 0755 (less the umask) before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = _tmp_sibling(path)
    _remove(tmp)
    tmp.mkdir()
    try:
        yield tmp
        _make_readable(tmp)
        if path.exists() or path.is_symlink():
            _remove(path)  # os.replace cannot replace a non-empty folder
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(path):
    """Yield a temporary sibling path of file `path` to write; on success it replaces `path` (one rename).

        with atomic_file("render.png") as tmp:
            image.save(tmp)
    The temporary name keeps the suffix (`.render.png.tmp-<pid>.png`) so that writers choosing a
    format by extension work. Nothing exists at it when the block starts. The file gets mode 0644
    (less the umask); on failure it is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = _tmp_sibling(path, path.suffix)
    _remove(tmp)
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"atomic_file: the block wrote nothing at {tmp}")
        _make_readable(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_writable(path) -> None:
    """UserError naming `path` unless an atomic write of it can succeed: its nearest existing folder
    must let us create (and remove) a sibling. Called before the compute, so a bad --out costs nothing."""
    path = Path(path)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"cannot write {path}: {folder} is a file, not a folder: choose another output path")
    probe = folder / f".{path.name}.tmp-{os.getpid()}.probe"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as error:
        raise UserError(
            f"cannot write {path}: folder {folder} is not writable ({error.strerror}): fix its permissions or choose another output path"
        ) from None


def write_store(path, dataset: xr.Dataset, *, stage: str, config_subset: dict, inputs=(), seed=None,
                frame_chunk: int = 1, more_frames=()) -> Path:
    """Write `dataset` to the Zarr v3 store `path` atomically, with provenance attributes.

    `dataset` must match the layout of `stage` (uniscene/store_layouts.py; LayoutError if not).
    `more_frames`: an iterable of datasets holding only `frame` variables, appended along `frame`
    after `dataset` (a stage too big for memory writes its frames batch by batch); compression and
    writing run in background threads while the iterable computes its next part. A stage that
    makes its frames itself uses `StoreWriter` directly.
    """
    num_frames = None  # a generator's count is known only at its end: the arrays grow
    if isinstance(more_frames, (tuple, list)):
        num_frames = dataset.sizes.get("frame", 0) + sum(part.sizes.get("frame", 0) for part in more_frames)
    with StoreWriter(path, dataset, stage=stage, config_subset=config_subset, inputs=inputs, seed=seed,
                     frame_chunk=frame_chunk, num_frames=num_frames) as writer:
        for part in more_frames:
            writer.append(part)
    return Path(path)


class StoreWriter:
    """Write a store frame batch by frame batch: compression and writing run in background threads.

        with StoreWriter(path, template, stage="render", config_subset=config, num_frames=T) as writer:
            for t in range(T):
                writer.append({"semantic": semantic[None], ...})  # every `frame` variable, [F, ...] each
            writer.attrs["render_seconds"] = seconds  # root attributes known only at the end

    `template` is a dataset of the stage's layout (LayoutError if not) holding every variable and
    attribute; its `frame` variables hold the first frames (often none: `template.isel(frame=slice(0, 0))`
    or arrays of shape [0, ...]). Each `append` hands a batch of frames to a pool of threads that
    compress and write them as zarr region writes into arrays sized for `num_frames` (grown as frames
    come when it is None), while the caller computes the next batch; at most `max_pending` batch
    writes wait, so memory stays flat (`append` blocks until one finishes). The arrays of a batch
    must not change until the future `append` returns is done (a caller reusing buffers waits on it).
    Variables without a frame dim are written at the start; string and empty `frame` variables are
    gathered and written at the end. On leaving the block the chunk manifest and the provenance are
    written and the metadata consolidated, then the folder is renamed into place; an exception
    (in the block or in a writer thread) removes it, so the output appears complete or not at all.
    Chunks: `frame_chunk` frames along `frame`, the other dims whole (or as the layout says); codecs per
    variable from the layout. Batches are re-cut per variable into units of whole chunks of about
    WRITE_BYTES or more, each one region write: no two threads write one chunk, and small arrays
    (timestamps) are written many frames per call.
    `timing` after the block: seconds the threads spent compressing and writing (`write_s`), the
    caller waited on them (`wait_s`), and closing took (`close_s`).
    """

    def __init__(self, path, template: xr.Dataset, *, stage: str, config_subset: dict, inputs=(), seed=None,
                 frame_chunk: int = 1, num_frames: int | None = None, workers: int | None = None, max_pending: int | None = None):
        self.path, self.stage, self.frame_chunk = Path(path), stage, int(frame_chunk)
        self.layout = layout_of(stage)
        self.layout.check(template, f"the dataset written to {self.path}")
        template = _vlen_strings(template)
        for name, var in template.variables.items():
            if "frame" in var.dims and var.dims[0] != "frame":
                raise LayoutError(f"variable '{name}' of the '{stage}' layout has 'frame' as dim {var.dims.index('frame')}: "
                                  f"StoreWriter writes frames along the first dim")
        self._meta = json.loads(json.dumps(provenance(stage, config_subset, inputs, seed), default=_json_default))
        self.attrs = {}  # root attributes to add at the end
        self._frame_vars = {name: var for name, var in template.data_vars.items() if "frame" in var.dims}
        self._streamed = [name for name, var in self._frame_vars.items() if var.dtype.kind not in "OUT" and all(var.shape[1:])]
        self._gathered = {name: [] for name in self._frame_vars if name not in self._streamed}
        self._num_frames = num_frames
        self._capacity = num_frames if num_frames is not None else self.frame_chunk
        self.frame_chunk = max(1, min(self.frame_chunk, self._capacity))  # a store shorter than a chunk is one chunk
        self._count = 0  # frames appended
        # Each variable is written a unit of whole chunks at a time, ~WRITE_BYTES or more: a frame of maps at once, the
        # timestamps of many frames in one call. Frames short of a unit wait in `_held`; `_written` counts those handed over.
        self._unit = {name: self.frame_chunk * max(1, WRITE_BYTES // max(1, self.frame_chunk * _frame_bytes(self._frame_vars[name])))
                      for name in self._streamed}
        self._held = {name: [] for name in self._streamed}
        self._held_frames = dict.fromkeys(self._streamed, 0)
        self._written = dict.fromkeys(self._streamed, 0)
        self._template = template
        self._workers = workers or min(16, os.cpu_count() or 1)
        self._slots = threading.BoundedSemaphore(max_pending or 2 * self._workers)
        self._error = None
        self.timing = {"write_s": 0.0, "wait_s": 0.0, "close_s": 0.0}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ set-up and finish
    def __enter__(self):
        self._stack = ExitStack()
        self._tmp = self._stack.enter_context(atomic_directory(self.path))
        try:
            self._create()
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix=f"write-{self.path.name}")
            self._stack.callback(self._pool.shutdown, wait=True, cancel_futures=True)  # before the folder goes
            first = {name: self._template[name].values for name in self._frame_vars}
            if self._template.sizes.get("frame", 0):
                self.append(first)
        except BaseException:
            self._stack.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, kind, error, traceback):
        try:
            if kind is None:
                self._close()
        except BaseException:
            if not self._stack.__exit__(*sys.exc_info()):
                raise
            return False
        return self._stack.__exit__(kind, error, traceback)

    def _create(self) -> None:
        """Every array of the store: those without `frame` with their values, the streamed ones empty (sized later)."""
        empty = self._template.isel(frame=slice(0, 0)) if "frame" in self._template.dims else self._template
        empty = empty.drop_vars(list(self._gathered))
        encoding = _encoding(empty, self.layout, self.frame_chunk)
        with _no_consolidation_warning():
            empty.to_zarr(self._tmp, mode="w", zarr_format=3, consolidated=False, write_empty_chunks=True, encoding=encoding)
        group = zarr.open_group(self._tmp, mode="r+", zarr_format=3)
        self._arrays = {name: group[name].with_config({"write_empty_chunks": True}) for name in self._streamed}
        self._chunk_files = {name: ChunkFiles.of(self._arrays[name], self._tmp / name) for name in self._streamed}
        self._resize(self._capacity)

    def _resize(self, frames: int) -> None:
        for name, array in self._arrays.items():
            array.resize((frames,) + array.shape[1:])

    def _close(self) -> None:
        start = time.perf_counter()
        for name in self._streamed:  # the last frames, fewer than a unit
            self._flush(name, final=True)
        self._pool.shutdown(wait=True)
        self._raise_error()
        if self._num_frames is not None and self._count != self._num_frames:
            raise LayoutError(f"{self._count} frames were appended to {self.path}, {self._num_frames} announced")
        if self._capacity != self._count:
            self._resize(self._count)
        if self._gathered:
            gathered = xr.Dataset({name: (self._frame_vars[name].dims, np.concatenate(parts) if parts else
                                          self._template[name].values[:0])
                                   for name, parts in self._gathered.items()})
            gathered = _vlen_strings(gathered).assign_attrs(self._template.attrs)  # an append replaces the root attributes
            with _no_consolidation_warning():
                gathered.to_zarr(self._tmp, mode="a", zarr_format=3, consolidated=False, write_empty_chunks=True,
                                 encoding=_encoding(gathered, self.layout, self.frame_chunk))
        group = zarr.open_group(self._tmp, mode="r+", zarr_format=3)
        group.attrs.update({**json.loads(json.dumps(self.attrs, default=_json_default)),
                            PROVENANCE_KEY: {**self._meta, MANIFEST_KEY: _manifest(self._tmp)}})
        with _no_consolidation_warning():
            zarr.consolidate_metadata(self._tmp, zarr_format=3)
        self.timing["close_s"] = time.perf_counter() - start

    # ------------------------------------------------------------------ frames
    def append(self, part) -> Future:
        """Queue a batch of frames (a dataset or a mapping of every `frame` variable to [F, ...] arrays) for writing.

        Returns a future done when the threads are done with its arrays (written, or copied aside to wait for the
        rest of their unit). Raises the error of an earlier batch's write, if one failed.
        """
        self._raise_error()
        arrays = self._arrays_of(part)
        frames = len(next(iter(arrays.values()))) if arrays else 0
        if self._count + frames > self._capacity:
            if self._num_frames is not None:
                raise LayoutError(f"more than the {self._num_frames} announced frames were appended to {self.path}")
            self._capacity = max(self._count + frames, 2 * self._capacity)
            self._resize(self._capacity)  # metadata only; the threads write chunks, not metadata
        self._count += frames
        for name in self._gathered:
            values = arrays[name]
            self._gathered[name].append(values.astype(np.dtypes.StringDType()) if values.dtype.kind in "OUT" else np.array(values))
        futures = []
        for name in self._streamed:
            self._held[name].append(arrays[name])
            self._held_frames[name] += frames
            futures += self._flush(name)
        return _all_done(futures)

    def _flush(self, name: str, final: bool = False) -> list:
        """Hand the held frames of `name` to the threads in whole units (all of them if `final`); keep the rest, copied
        (the caller may reuse its buffers)."""
        held, frames = self._held[name], self._held_frames[name]
        ready = frames if final else frames - frames % self._unit[name]
        if ready == 0:
            if held:
                held[-1] = np.array(held[-1])  # kept past this append: the caller may reuse its buffers
            return []
        values = held[0] if len(held) == 1 else np.concatenate(held)
        self._held[name] = [np.array(values[ready:])] if ready < frames else []
        self._held_frames[name] = frames - ready
        start = self._written[name]
        self._written[name] += ready
        return [self._submit(name, start, values[:ready])]

    def _arrays_of(self, part) -> dict:
        describe = f"frames appended to {self.path}"
        if isinstance(part, xr.Dataset):
            self.layout.check(part, describe, frame_vars_only=True)
            part = {name: part[name].values for name in part.data_vars}
        part = {name: np.asarray(values) for name, values in part.items()}
        if set(part) != set(self._frame_vars):
            raise LayoutError(f"{describe} hold {sorted(part)}, the '{self.stage}' layout's frame variables are {sorted(self._frame_vars)}")
        lengths = {len(values) for values in part.values()}
        if len(lengths) != 1:
            raise LayoutError(f"{describe}: variables of different frame counts {sorted(lengths)}")
        for name, values in part.items():
            declared = self._frame_vars[name]
            if not (values.dtype == declared.dtype or (values.dtype.kind in "OUT" and declared.dtype.kind in "OUT")):
                raise LayoutError(f"{describe}: variable '{name}' has dtype {values.dtype}, the '{self.stage}' layout {declared.dtype}")
            if values.shape[1:] != declared.shape[1:]:
                raise LayoutError(f"{describe}: variable '{name}' has frames of shape {values.shape[1:]}, the store {declared.shape[1:]}")
        return part

    def _submit(self, name: str, start: int, values: np.ndarray) -> Future:
        """One region write of `values` (whole chunks, or the store's last frames) at frame `start` of `name`."""
        waited = time.perf_counter()
        self._slots.acquire()  # back-pressure: at most max_pending writes wait
        self.timing["wait_s"] += time.perf_counter() - waited
        self._raise_error()
        task = self._pool.submit(self._write, name, start, start + len(values), values)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: Future) -> None:
        self._slots.release()
        if not task.cancelled() and task.exception() is not None and self._error is None:
            self._error = task.exception()

    def _write(self, name: str, start: int, stop: int, values: np.ndarray) -> None:
        began = time.perf_counter()
        files = self._chunk_files[name]
        if files is not None and files.whole_chunks(start, stop):
            files.write(start, values)
        else:  # the store's last frames, short of a chunk: zarr pads them as it does
            self._arrays[name][start:stop] = values
        with self._lock:
            self.timing["write_s"] += time.perf_counter() - began

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error


class ChunkFiles:
    """Whole chunks of one array encoded with the array's own zarr codecs and written as its chunk files.

    The bytes are those zarr writes (tests/test_store.py compares them file by file), without zarr's
    asynchronous write path: its Python, run for every region write in the writer threads, held the
    interpreter lock long enough to slow the GPU stages' main loops down to a third of their speed
    (render on an H100: 12 ms a frame against 4.2 ms for the kernels alone). Here a chunk costs a
    few calls; compressing, checksumming and writing release the lock. Only regular grids with an
    array-to-bytes codec followed by bytes-to-bytes codecs (every streamed uniscene array): `of`
    gives None for any other array, which then goes through zarr.
    """

    def __init__(self, array, folder: Path):
        meta = array.metadata
        self.codecs, self.chunk_shape, self.folder = meta.codecs, tuple(meta.chunk_grid.chunk_shape), Path(folder)
        self.fill_value, self.key = meta.fill_value, meta.encode_chunk_key
        self.spec = meta.get_chunk_spec((0,) * len(self.chunk_shape), array._async_array.config, default_buffer_prototype())
        self.nd_buffer = default_buffer_prototype().nd_buffer

    @classmethod
    def of(cls, array, folder: Path):
        meta = array.metadata
        direct = (isinstance(meta.chunk_grid, RegularChunkGrid) and isinstance(meta.codecs[0], BytesCodec)
                  and all(isinstance(codec, BytesBytesCodec) for codec in meta.codecs[1:]))
        return cls(array, folder) if direct else None

    def whole_chunks(self, start: int, stop: int) -> bool:
        """Whether frames start..stop are whole chunks along `frame`."""
        return start % self.chunk_shape[0] == 0 and stop % self.chunk_shape[0] == 0

    def write(self, start: int, values: np.ndarray) -> None:
        """Write `values` (whole chunks along `frame`, every other dim whole) at frame `start`; edge chunks of the
        other dims padded with the fill value, as zarr pads them."""
        grid = [range(0, n, c) for n, c in zip(values.shape, self.chunk_shape)]
        for corner in itertools.product(*grid):
            block = values[tuple(slice(o, o + c) for o, c in zip(corner, self.chunk_shape))]
            if block.shape != self.chunk_shape:
                padded = np.full(self.chunk_shape, self.fill_value, values.dtype)
                padded[tuple(slice(0, n) for n in block.shape)] = block
                block = padded
            data = self.nd_buffer.from_numpy_array(np.ascontiguousarray(block))
            for codec in self.codecs:
                data = codec._encode_sync(data, self.spec)
            coords = ((start + corner[0]) // self.chunk_shape[0],) + tuple(o // c for o, c in zip(corner[1:], self.chunk_shape[1:]))
            path = self.folder / self.key(coords)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as handle:
                handle.write(data.as_numpy_array())


@contextmanager
def _no_consolidation_warning():
    """zarr warns at every consolidation that consolidated metadata is not in the v3 spec: uniscene knows."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part", category=UserWarning)
        yield


def _all_done(futures: list) -> Future:
    """A future done when every one of `futures` is (at once if there are none)."""
    done, remaining, lock = Future(), [len(futures)], threading.Lock()

    def one_done(_):
        with lock:
            remaining[0] -= 1
            if remaining[0] == 0:
                done.set_result(None)

    if not futures:
        done.set_result(None)
    for future in futures:
        future.add_done_callback(one_done)
    return done


def _frame_bytes(var) -> int:
    """Bytes of one frame of a `frame` variable."""
    return var.dtype.itemsize * int(np.prod(var.shape[1:]))


def read_ahead(items, depth: int = 4):
    """Yield `items` (an iterable) in order while a background thread computes up to `depth` of the next ones.

    For reads that overlap the caller's compute: `for frame in read_ahead(read(t) for t in range(T))`.
    An error raised while computing an item is raised where that item would have been yielded.
    """
    queue, stop, end = Queue(maxsize=depth), threading.Event(), object()

    def put(entry) -> bool:  # False once the consumer has stopped
        while not stop.is_set():
            try:
                queue.put(entry, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def produce():
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as error:  # handed to the consumer
            put((end, error))

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = queue.get()
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:
        stop.set()
        thread.join()


def _chunk_files(array_dir: Path) -> list:
    """The chunk keys (`c/0/1/...`) that exist in an array's folder."""
    return sorted(str(p.relative_to(array_dir)) for p in (array_dir / "c").rglob("*") if p.is_file()) if (array_dir / "c").is_dir() else (
        ["c"] if (array_dir / "c").is_file() else [])


def _expected_chunks(meta: dict) -> list:
    """Every chunk key of an array's grid (`write_store` writes empty chunks too)."""
    shape, chunks = meta["shape"], meta["chunk_grid"]["configuration"]["chunk_shape"]
    if not shape:
        return ["c"]
    grid = [-(-n // c) for n, c in zip(shape, chunks)]
    return ["c/" + "/".join(map(str, index)) for index in np.ndindex(*grid)] if all(grid) else []


def _manifest(root: Path) -> dict:
    """Per array: how many chunk files it has, and a digest of their crc32c checksums (each chunk's last 4 bytes)."""
    manifest = {}
    for meta_path in sorted(root.glob("*/zarr.json")):
        array_dir = meta_path.parent
        digest = hashlib.sha256()
        keys = _chunk_files(array_dir)
        for key in keys:
            with open(array_dir / key, "rb") as handle:
                handle.seek(-4, os.SEEK_END)
                digest.update(f"{key}:".encode() + handle.read(4))
        manifest[array_dir.name] = {"count": len(keys), "crc32c": digest.hexdigest()[:16]}
    return manifest


def _check_complete(path: Path, root: dict, manifest: dict) -> None:
    """UserError naming the variable and a chunk file unless every array has the chunk files the manifest counts."""
    arrays = (root.get("consolidated_metadata") or {}).get("metadata") or {}
    if set(arrays) != set(manifest):
        raise UserError(f"store {path} is incomplete or altered (arrays {sorted(arrays)}, manifest {sorted(manifest)}): "
                        f"delete it and rerun the stage that writes it")
    for name, entry in manifest.items():
        present = _chunk_files(path / name)
        if len(present) != entry["count"]:
            missing = sorted(set(_expected_chunks(arrays[name])) - set(present))
            raise UserError(
                f"store {path} is incomplete: variable '{name}' has {len(present)} of its {entry['count']} chunk files"
                f"{f' (missing {name}/{missing[0]})' if missing else ''}: delete the store and rerun the stage that writes it"
            )


def _vlen_strings(dataset: xr.Dataset) -> xr.Dataset:
    """A copy with string variables as numpy's variable-length StringDType: fixed-width unicode has no zarr v3
    spec, and an empty object array would be written as float64."""
    dataset = dataset.copy()
    for name, var in dataset.variables.items():
        if var.dtype.kind in "UO":
            dataset[name] = var.astype(np.dtypes.StringDType())
    return dataset


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, tuple)):
        return list(value.tolist() if isinstance(value, np.ndarray) else value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value)}")


def open_store(path, stage: str | None = None) -> xr.Dataset:
    """Open a store written by `write_store`, checking that it is complete, of this stage and of its layout.

    Raises UserError naming the path and the fix for a missing, incomplete, foreign or damaged store.
    Checks cost a directory listing; chunk checksums are verified as chunks are read.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"store {path} does not exist: run the stage that writes it (e.g. `snakemake {path}`)")
    if not (path / "zarr.json").is_file():
        raise UserError(f"store {path} is incomplete (no zarr.json): delete it and rerun the stage that writes it")
    root = _read_json(path / "zarr.json")
    if not isinstance(root, dict):
        raise UserError(f"store {path} cannot be read (its zarr.json is not JSON): delete it and rerun the stage that writes it")
    meta = (root.get("attributes") or {}).get(PROVENANCE_KEY)
    if not isinstance(meta, dict) or "stage" not in meta:
        raise UserError(f"store {path} was not written by uniscene (no '{PROVENANCE_KEY}' attributes): point to a uniscene store")
    if meta.get("format") != STORE_FORMAT:
        raise UserError(
            f"store {path} has store format {meta.get('format')} (uniscene {meta.get('version')}), this uniscene reads "
            f"format {STORE_FORMAT}: delete it and rerun the stage that writes it"
        )
    if stage is not None and meta["stage"] != stage:
        raise UserError(f"store {path} holds stage '{meta['stage']}', expected '{stage}': check the path")
    _check_complete(path, root, meta.get(MANIFEST_KEY) or {})
    try:
        dataset = xr.open_zarr(path, consolidated=True, zarr_format=3)
    except Exception as error:  # zarr raises many types for damaged stores
        raise UserError(f"store {path} cannot be read ({error}): delete it and rerun the stage that writes it") from error
    try:
        layout_of(meta["stage"]).check(dataset, f"store {path}")
    except LayoutError as error:
        raise UserError(f"{error}: it was written by another uniscene; delete it and rerun the stage that writes it") from None
    return dataset


def read_error(error: BaseException, stores=()) -> UserError | None:
    """The UserError for a corrupt chunk met while reading (a crc32c mismatch), naming the store and variable; else None.

    Reads are lazy, so the mismatch surfaces wherever a stage touches the data; the CLI turns it
    into one line here. The store and variable come from the zarr array being read (a frame of
    the traceback); failing that, from a checksum scan of `stores` (the command's store arguments).
    """
    cause = error
    while cause is not None and CHECKSUM_MISMATCH not in str(cause):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return None
    located = _array_in_traceback(cause)
    if located is not None:
        store_root, variable = located
        _, chunk = _first_corrupt_chunk(store_root, variable) or (variable, None)
    else:
        store_root = next((Path(s) for s in stores if (Path(s) / "zarr.json").is_file() and _first_corrupt_chunk(Path(s))), None)
        if store_root is None:
            return UserError(f"a store chunk is corrupt ({cause}): delete the stores this command read and rerun the stages that write them")
        variable, chunk = _first_corrupt_chunk(store_root)
    where = f" ({variable}/{chunk})" if chunk else ""
    return UserError(
        f"store {store_root}: variable '{variable}' has a corrupt chunk{where} (crc32c checksum mismatch): "
        f"delete the store and rerun the stage that writes it"
    )


def _array_in_traceback(error: BaseException):
    """(store folder, array name) of the zarr array whose read raised `error`, from its traceback's frames."""
    from zarr.storage import LocalStore, StorePath

    tb, found = error.__traceback__, None
    while tb is not None:
        store_path = tb.tb_frame.f_locals.get("store_path")
        if isinstance(store_path, StorePath) and isinstance(store_path.store, LocalStore) and store_path.path:
            found = (Path(store_path.store.root), store_path.path)
        tb = tb.tb_next
    return found


def _first_corrupt_chunk(store_root: Path, only: str | None = None):
    """(array name, chunk key) of the first chunk whose trailing crc32c does not match its bytes, or None."""
    import google_crc32c  # zarr's Crc32cCodec uses it

    for meta_path in sorted(store_root.glob("*/zarr.json")):
        name = meta_path.parent.name
        if only is not None and name != only:
            continue
        for key in _chunk_files(meta_path.parent):
            data = (meta_path.parent / key).read_bytes()
            if len(data) < 4 or google_crc32c.value(data[:-4]) != int.from_bytes(data[-4:], "little"):
                return name, key
    return None


def store_provenance(dataset: xr.Dataset) -> dict:
    return dataset.attrs[PROVENANCE_KEY]


def write_json_atomic(path, payload: dict) -> Path:
    """Write a JSON file atomically (metrics and small side files)."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n")
    return Path(path)
