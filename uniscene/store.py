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


@contextmanager
def atomic_directory(path):
    """Yield a temporary sibling folder of `path`; on success it replaces `path`, on failure it is removed.

    A killed or failed writer therefore never leaves a folder at `path` that looks complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n")
    os.replace(tmp, path)
    return path
