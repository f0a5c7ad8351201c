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
import json
import os
import shutil
import subprocess
from contextlib import contextmanager
import warnings
from pathlib import Path

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from uniscene import __version__
from uniscene.errors import UserError
from uniscene.store_layouts import LayoutError, layout_of

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


def _encoding(dataset: xr.Dataset, frame_chunk: int) -> dict:
    """Blosc-zstd with byte shuffle (~25x on occupancy), chunked along `frame`; a crc32c checksum ends every chunk."""
    encoding = {}
    for name, var in dataset.variables.items():
        if var.dtype.kind in "OUT":
            encoding[name] = {"compressors": (Crc32cCodec(),)}  # after zarr's own variable-length string codec
            continue
        encoding[name] = {"compressors": (BloscCodec(cname="zstd", clevel=5, shuffle="shuffle"), Crc32cCodec())}
        chunks = tuple(min(frame_chunk, n) if dim == "frame" else n for dim, n in zip(var.dims, var.shape))
        if all(c > 0 for c in chunks):
            encoding[name]["chunks"] = chunks
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
    after `dataset` (a stage too big for memory writes its frames batch by batch).
    """
    path = Path(path)
    layout = layout_of(stage)
    layout.check(dataset, f"the dataset written to {path}")
    dataset = _vlen_strings(dataset)
    meta = json.loads(json.dumps(provenance(stage, config_subset, inputs, seed), default=_json_default))
    dataset.attrs[PROVENANCE_KEY] = meta
    with atomic_directory(path) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part", category=UserWarning)
        dataset.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False, write_empty_chunks=True,
                        encoding=_encoding(dataset, frame_chunk))
        for part in more_frames:  # an append replaces the root attributes: carry the provenance along
            layout.check(part, f"frames appended to {path}", frame_vars_only=True)
            part = _vlen_strings(part).assign_attrs(dataset.attrs)
            part.to_zarr(tmp, append_dim="frame", zarr_format=3, consolidated=False, write_empty_chunks=True)
        group = zarr.open_group(tmp, mode="r+", zarr_format=3)
        group.attrs[PROVENANCE_KEY] = {**meta, MANIFEST_KEY: _manifest(tmp)}
        zarr.consolidate_metadata(tmp, zarr_format=3)
    return path


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
