"""Zarr v3 stores: atomic writes with provenance, and checked reads.

Every stage output is an `xarray.Dataset` written here. Writes go to a temporary sibling that
is renamed into place at the end, so a killed job never leaves a store that looks complete.
The root attribute `uniscene` carries the provenance (stage, version, config subset and hash,
input fingerprints, seed, time).
"""

import datetime as _dt
import hashlib
import json
import os
import shutil
import subprocess
from contextlib import contextmanager
import warnings
from pathlib import Path

import numpy as np
import xarray as xr
from zarr.codecs import BloscCodec

from uniscene import __version__
from uniscene.errors import UserError

STORE_FORMAT = 1  # bump when a store layout changes incompatibly
PROVENANCE_KEY = "uniscene"


def config_hash(config_subset: dict) -> str:
    """Stable short hash of a JSON-serialisable config subset."""
    text = json.dumps(config_subset, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprint(path) -> str:
    """Short fingerprint of an input: a store's root metadata, a file's bytes, a folder's JSON tables."""
    path = Path(path)
    digest = hashlib.sha256()
    if (path / "zarr.json").is_file():
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


def _encoding(dataset: xr.Dataset, frame_chunk: int) -> dict:
    """Blosc-zstd with byte shuffle (~25x on occupancy), chunked along `frame`."""
    encoding = {}
    for name, var in dataset.data_vars.items():
        if var.dtype == object or var.dtype.kind in "UT":
            continue  # variable-length strings take zarr's own codec
        chunks = tuple(min(frame_chunk, n) if dim == "frame" else n for dim, n in zip(var.dims, var.shape))
        encoding[name] = {
            "compressors": (BloscCodec(cname="zstd", clevel=5, shuffle="shuffle"),),
            "chunks": chunks if all(c > 0 for c in chunks) else None,
        }
        if encoding[name]["chunks"] is None:
            del encoding[name]["chunks"]
    return encoding


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
    filesystem must be readable by the others who run the pipeline.
    """
    mask = _umask()
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            os.chmod(root, DIR_MODE & ~mask)
            for name in files:
                os.chmod(os.path.join(root, name), FILE_MODE & ~mask)
    else:
        os.chmod(path, FILE_MODE & ~mask)


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


def write_store(path, dataset: xr.Dataset, *, stage: str, config_subset: dict, inputs=(), seed=None,
                frame_chunk: int = 1, more_frames=()) -> Path:
    """Write `dataset` to the Zarr v3 store `path` atomically, with provenance attributes.

    `more_frames`: an iterable of datasets holding only `frame` variables, appended along `frame`
    after `dataset` (a stage too big for memory writes its frames batch by batch).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset = _vlen_strings(dataset)
    dataset.attrs[PROVENANCE_KEY] = json.loads(
        json.dumps(provenance(stage, config_subset, inputs, seed), default=_json_default)
    )
    with atomic_directory(path) as tmp:
        dataset.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False, encoding=_encoding(dataset, frame_chunk))
        for part in more_frames:  # an append replaces the root attributes: carry the provenance along
            part = _vlen_strings(part).assign_attrs(dataset.attrs)
            part.to_zarr(tmp, append_dim="frame", zarr_format=3, consolidated=False)
    return path


def _vlen_strings(dataset: xr.Dataset) -> xr.Dataset:
    """A copy with fixed-width unicode variables as variable-length strings (the former has no zarr v3 spec)."""
    dataset = dataset.copy()
    for name, var in dataset.data_vars.items():
        if var.dtype.kind == "U":
            dataset[name] = var.astype(object)
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
    """Open a store written by `write_store`, checking that it is complete and of this stage.

    Raises UserError naming the path and the fix for a missing, incomplete or foreign store.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"store {path} does not exist: run the stage that writes it (e.g. `snakemake {path}`)")
    if not (path / "zarr.json").is_file():
        raise UserError(f"store {path} is incomplete (no zarr.json): delete it and rerun the stage that writes it")
    try:
        with warnings.catch_warnings():  # Snakemake marks directory() outputs with a file zarr does not know
            warnings.filterwarnings("ignore", message=".*snakemake_timestamp.*not recognized")
            dataset = xr.open_zarr(path, consolidated=False, zarr_format=3)
    except Exception as error:  # zarr raises many types for damaged stores
        raise UserError(f"store {path} cannot be read ({error}): delete it and rerun the stage that writes it") from error
    meta = dataset.attrs.get(PROVENANCE_KEY)
    if not isinstance(meta, dict) or "stage" not in meta:
        raise UserError(f"store {path} was not written by uniscene (no '{PROVENANCE_KEY}' attributes): point to a uniscene store")
    if meta.get("format") != STORE_FORMAT:
        raise UserError(
            f"store {path} has store format {meta.get('format')} (uniscene {meta.get('version')}), this uniscene reads "
            f"format {STORE_FORMAT}: delete it and rerun the stage that writes it"
        )
    if stage is not None and meta["stage"] != stage:
        raise UserError(f"store {path} holds stage '{meta['stage']}', expected '{stage}': check the path")
    return dataset


def store_provenance(dataset: xr.Dataset) -> dict:
    return dataset.attrs[PROVENANCE_KEY]


def write_json_atomic(path, payload: dict) -> Path:
    """Write a JSON file atomically (metrics and small side files)."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n")
    return Path(path)
