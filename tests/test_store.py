"""uniscene.store: round trip, provenance, atomic writes, and the errors of open_store."""

import json
import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from store_examples import example_dataset
from uniscene import __version__
from uniscene import store, store_layouts
from uniscene.errors import UserError
from uniscene.store_layouts import LAYOUTS

REPO = Path(__file__).resolve().parents[1]

CONFIG_SUBSET = {"grid": {"range_m": [-40.0, -40.0, -1.0, 40.0, 40.0, 5.4], "voxel_size_m": 0.4}, "seed": 7}


@pytest.fixture
def dataset() -> xr.Dataset:
    """A small occ_label-shaped dataset: T=3 frames, X Y Z = 4 5 2."""
    return example_dataset("occ_label")


def write(path, dataset, **kwargs):
    defaults = dict(stage="occ_label", config_subset=CONFIG_SUBSET, seed=7)
    return store.write_store(path, dataset, **{**defaults, **kwargs})


@pytest.mark.parametrize("stage", sorted(LAYOUTS))
def test_round_trip_of_every_layout(tmp_path, stage):
    """Values, dtypes, dimension names and attributes of each declared layout survive write and read,
    through open_store and a plain xarray.open_zarr (consolidated: no warning)."""
    dataset = example_dataset(stage)
    path = write(tmp_path / f"{stage}.zarr", dataset, stage=stage)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = xr.open_zarr(path, zarr_format=3)
    for opened in (store.open_store(path, stage), plain):
        assert set(opened.variables) == set(dataset.variables) == set(LAYOUTS[stage].variables)
        for name, var in dataset.variables.items():
            assert opened[name].dims == var.dims, name
            assert store_layouts.dtype_matches(opened[name].dtype, LAYOUTS[stage].variables[name].dtype), name
            if var.dtype == object:
                assert opened[name].values.tolist() == var.values.tolist(), name
            else:
                assert opened[name].dtype == var.dtype, name
                np.testing.assert_array_equal(opened[name].values, var.values)
        assert {k: v for k, v in opened.attrs.items() if k != store.PROVENANCE_KEY} == dataset.attrs
        assert store.store_provenance(opened)["stage"] == stage
    for name in dataset.variables:
        meta = json.loads((path / name / "zarr.json").read_text())
        assert meta["zarr_format"] == 3 and meta["dimension_names"] == list(dataset[name].dims)
        assert meta["codecs"][-1]["name"] == "crc32c", name  # every chunk carries its checksum
    assert "consolidated_metadata" in json.loads((path / "zarr.json").read_text())


def test_chunks_and_codecs(tmp_path, dataset):
    path = write(tmp_path / "occ_label.zarr", dataset)
    meta = json.loads((path / "semantics" / "zarr.json").read_text())
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [1, 4, 5, 2]  # one frame per chunk
    blosc = [codec for codec in meta["codecs"] if codec["name"] == "blosc"]
    declared = LAYOUTS["occ_label"].variables["semantics"].codec  # each variable's codec from its layout
    assert blosc and {k: blosc[0]["configuration"][k] for k in ("cname", "clevel", "shuffle")} == {
        "cname": declared.cname, "clevel": declared.clevel, "shuffle": declared.shuffle}
    mask = json.loads((path / "mask_lidar" / "zarr.json").read_text())
    assert [c["configuration"]["shuffle"] for c in mask["codecs"] if c["name"] == "blosc"] == ["bitshuffle"]
    manifest = store.store_provenance(store.open_store(path))[store.MANIFEST_KEY]
    assert manifest["semantics"]["count"] == manifest["timestamp_us"]["count"] == 3  # every array is chunked along frame
    assert sorted(manifest) == sorted(dataset.variables)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.drop_vars("mask_lidar"), r"missing variables \['mask_lidar'\]"),
    (lambda d: d.assign(extra=d.timestamp_us), r"undeclared variables \['extra'\]"),
    (lambda d: d.assign(semantics=d.semantics.astype("int16")), "variable 'semantics' has dtype int16, the 'occ_label' layout uint8"),
    (lambda d: d.assign(timestamp_us=("time", d.timestamp_us.values)), r"variable 'timestamp_us' has dims \('time',\)"),
    (lambda d: d.drop_attrs(), "lacks the attributes"),
])
def test_write_store_checks_the_layout(tmp_path, dataset, change, message):
    with pytest.raises(store_layouts.LayoutError, match=message):
        write(tmp_path / "occ_label.zarr", change(dataset))
    assert list(tmp_path.iterdir()) == []


def test_fixed_dimension_sizes_and_unknown_stages(tmp_path):
    frames = example_dataset("frames")
    with pytest.raises(store_layouts.LayoutError, match="'world_from_ego' has 3 along 'row'"):
        write(tmp_path / "frames.zarr", frames.isel(row=slice(0, 3)), stage="frames")
    with pytest.raises(store_layouts.LayoutError, match="no store layout declared for stage 'truth'"):
        write(tmp_path / "truth.zarr", frames, stage="truth")


def test_docs_list_exactly_the_declared_layouts():
    """docs/stores.md's tables are generated from uniscene/store_layouts.py (python -m uniscene.store_layouts docs/stores.md)."""
    text = (REPO / "docs" / "stores.md").read_text()
    assert store_layouts.render_docs(text) == text, "docs/stores.md is stale: run python -m uniscene.store_layouts docs/stores.md"
    assert sorted(re.findall(r"<!-- layout: (\w+) -->", text)) == sorted(LAYOUTS)


def test_provenance_attributes(tmp_path, dataset):
    source = tmp_path / "frames.zarr"
    write(source, example_dataset("frames"), stage="frames")
    path = write(tmp_path / "occ_label.zarr", dataset, inputs=[source])
    meta = store.store_provenance(store.open_store(path))
    assert meta["stage"] == "occ_label"
    assert meta["format"] == store.STORE_FORMAT
    assert meta["version"] == __version__
    assert meta["config"] == CONFIG_SUBSET
    assert meta["config_hash"] == store.config_hash(CONFIG_SUBSET) == store.config_hash(json.loads(json.dumps(CONFIG_SUBSET)))
    assert meta["config_hash"] != store.config_hash({**CONFIG_SUBSET, "seed": 8})
    assert meta["inputs"] == {str(source): store.fingerprint(source)}
    assert meta["inputs"][str(source)] not in ("missing", store.fingerprint(path))
    assert meta["seed"] == 7
    assert meta["created_utc"].endswith("+00:00")
    assert "git_commit" in meta


def test_same_inputs_same_bytes(tmp_path, dataset):
    first = write(tmp_path / "a.zarr", dataset)
    second = write(tmp_path / "b.zarr", dataset)
    chunks = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file() and p.name != "zarr.json")
    assert chunks
    for chunk in chunks:
        assert (first / chunk).read_bytes() == (second / chunk).read_bytes(), chunk


def test_more_frames_are_appended(tmp_path):
    frames = example_dataset("frames", frame=4)
    frame_vars = [name for name, var in frames.data_vars.items() if "frame" in var.dims]
    parts = [frames.isel(frame=slice(i, i + 1))[frame_vars] for i in range(1, 4)]
    path = write(tmp_path / "frames.zarr", frames.isel(frame=slice(0, 1)), stage="frames", more_frames=iter(parts))
    opened = store.open_store(path, "frames")
    for name, var in frames.data_vars.items():
        if var.dtype == object:
            assert opened[name].values.tolist() == var.values.tolist(), name
        else:
            np.testing.assert_array_equal(opened[name].values, var.values)
            assert opened[name].dtype == var.dtype
    assert store.store_provenance(opened)[store.MANIFEST_KEY]["world_from_ego"]["count"] == 4


def test_appended_frames_are_checked(tmp_path, dataset):
    with pytest.raises(store_layouts.LayoutError, match="frames appended to .* variable 'semantics' has dtype int16"):
        write(tmp_path / "occ_label.zarr", dataset, more_frames=[dataset.assign(semantics=dataset.semantics.astype("int16"))])
    assert list(tmp_path.iterdir()) == []


def test_failure_while_appending_frames_leaves_no_store(tmp_path, dataset):
    def parts():
        yield dataset.isel(frame=slice(1, 2))
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        write(tmp_path / "occ_label.zarr", dataset.isel(frame=slice(0, 1)), more_frames=parts())
    assert list(tmp_path.iterdir()) == []


def test_snakemake_timestamp_is_ignored(tmp_path, dataset, recwarn):
    path = write(tmp_path / "occ_label.zarr", dataset)
    (path / ".snakemake_timestamp").touch()  # Snakemake's marker in directory() outputs
    assert store.open_store(path).sizes["frame"] == 3
    assert not [w for w in recwarn if "snakemake_timestamp" in str(w.message)]


def test_rewrite_replaces_the_store(tmp_path, dataset):
    path = write(tmp_path / "occ_label.zarr", dataset)
    smaller = dataset.isel(frame=slice(0, 2))
    write(path, smaller, seed=8)
    opened = store.open_store(path)
    assert opened.sizes["frame"] == 2
    assert store.store_provenance(opened)["seed"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["occ_label.zarr"]


def test_failure_mid_write_leaves_no_store(tmp_path, dataset, monkeypatch):
    real_to_zarr = xr.Dataset.to_zarr

    def to_zarr_then_fail(self, target, *args, **kwargs):
        real_to_zarr(self, target, *args, **kwargs)  # every chunk is on disk, then the job dies
        raise RuntimeError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_zarr", to_zarr_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        write(tmp_path / "occ_label.zarr", dataset)
    assert list(tmp_path.iterdir()) == []  # neither the store nor its temporary sibling


def test_failed_rewrite_keeps_the_old_store(tmp_path, dataset, monkeypatch):
    path = write(tmp_path / "occ_label.zarr", dataset, seed=1)

    def fail(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_zarr", fail)
    with pytest.raises(RuntimeError):
        write(path, dataset, seed=2)
    assert store.store_provenance(store.open_store(path))["seed"] == 1


def test_killed_writer_leaves_no_store(tmp_path):
    """SIGKILL after every chunk is written but before the rename: the store does not exist."""
    path = tmp_path / "occ_label.zarr"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        import numpy as np, xarray as xr
        from uniscene import store
        real_to_zarr = xr.Dataset.to_zarr
        def to_zarr_then_die(self, *args, **kwargs):
            real_to_zarr(self, *args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        xr.Dataset.to_zarr = to_zarr_then_die
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from store_examples import example_dataset
        dataset = example_dataset("occ_label")
        store.write_store({str(path)!r}, dataset, stage="occ_label", config_subset={{}})
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == -9, out.stderr
    assert not path.exists()
    leftovers = list(tmp_path.iterdir())
    assert [p.name.startswith(".occ_label.zarr.tmp-") for p in leftovers] == [True]  # hidden, never mistaken for the store
    with pytest.raises(UserError, match="does not exist"):
        store.open_store(path)


def test_open_missing_store(tmp_path):
    path = tmp_path / "frames.zarr"
    with pytest.raises(UserError, match=f"store {path} does not exist: run the stage that writes it"):
        store.open_store(path)


def test_open_incomplete_store(tmp_path, dataset):
    path = write(tmp_path / "frames.zarr", dataset)
    (path / "zarr.json").unlink()
    with pytest.raises(UserError, match=f"store {path} is incomplete .* delete it and rerun"):
        store.open_store(path)
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(UserError, match="is incomplete"):
        store.open_store(tmp_path / "empty.zarr")


def test_open_damaged_store(tmp_path, dataset):
    path = write(tmp_path / "frames.zarr", dataset)
    (path / "zarr.json").write_text("{ not json")
    with pytest.raises(UserError, match=f"store {path} cannot be read"):
        store.open_store(path)


def test_open_foreign_store(tmp_path, dataset):
    path = tmp_path / "foreign.zarr"
    dataset.to_zarr(path, zarr_format=3, consolidated=False)
    with pytest.raises(UserError, match=f"store {path} was not written by uniscene"):
        store.open_store(path)


def test_open_store_of_another_format(tmp_path, dataset):
    path = write(tmp_path / "frames.zarr", dataset)
    root = json.loads((path / "zarr.json").read_text())
    root["attributes"][store.PROVENANCE_KEY]["format"] = store.STORE_FORMAT + 1
    (path / "zarr.json").write_text(json.dumps(root))
    with pytest.raises(UserError, match=f"has store format {store.STORE_FORMAT + 1} .* reads format {store.STORE_FORMAT}"):
        store.open_store(path)


def test_open_store_of_another_stage(tmp_path):
    path = write(tmp_path / "frames.zarr", example_dataset("frames"), stage="frames")
    with pytest.raises(UserError, match="holds stage 'frames', expected 'occ_label'"):
        store.open_store(path, "occ_label")


def test_write_json_atomic(tmp_path):
    path = store.write_json_atomic(tmp_path / "metrics" / "frames.json", {"miou": np.float32(0.5), "n": np.int64(3)})
    assert json.loads(path.read_text()) == {"miou": 0.5, "n": 3}
    assert os.listdir(path.parent) == ["frames.json"]


def test_atomic_directory_gives_readable_modes_and_replaces(tmp_path):
    path = tmp_path / "models" / "lidar"
    with store.atomic_directory(path) as tmp:
        assert tmp.is_dir() and not any(tmp.iterdir()) and tmp.name.startswith(".lidar.tmp-")
        fd = os.open(tmp / "weights.safetensors", os.O_CREAT | os.O_WRONLY, 0o600)  # as tempfile APIs do
        os.write(fd, b"w")
        os.close(fd)
        (tmp / "sub").mkdir(mode=0o700)
        (tmp / "sub" / "run.sh").write_text("#!/bin/sh\n")
        os.chmod(tmp / "sub" / "run.sh", 0o700)
    mask = os.umask(0)
    os.umask(mask)
    assert (path / "weights.safetensors").stat().st_mode & 0o777 == 0o644 & ~mask
    assert (path / "sub" / "run.sh").stat().st_mode & 0o777 == 0o755 & ~mask  # an executable stays one
    assert (path / "sub").stat().st_mode & 0o777 == 0o755 & ~mask
    assert path.stat().st_mode & 0o777 == 0o755 & ~mask
    with store.atomic_directory(path) as tmp:
        (tmp / "other").write_text("x")
    assert sorted(p.name for p in path.iterdir()) == ["other"]
    assert os.listdir(path.parent) == ["lidar"]


def test_atomic_file_keeps_suffix_and_old_file_on_failure(tmp_path):
    path = tmp_path / "render.png"
    with store.atomic_file(path) as tmp:
        assert tmp.name == f".render.png.tmp-{os.getpid()}.png" and not tmp.exists()
        tmp.write_bytes(b"first")
    with pytest.raises(RuntimeError):
        with store.atomic_file(path) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert path.read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["render.png"]


def test_stale_temporaries_of_killed_writers_are_removed_by_the_next_write(tmp_path, dataset):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    stale_dir = tmp_path / f".occ_label.zarr.tmp-{dead}"
    stale_dir.mkdir()
    (stale_dir / "zarr.json").write_text("{}")
    stale_file = tmp_path / f".m.json.tmp-{dead}.json"
    stale_file.write_text("{")
    running = tmp_path / f".occ_label.zarr.tmp-{os.getppid()}"  # a writer that still runs: kept
    running.mkdir()
    other = tmp_path / ".other.zarr.tmp-1"  # another output's: not ours to judge
    other.mkdir()
    write(tmp_path / "occ_label.zarr", dataset)
    store.write_json_atomic(tmp_path / "m.json", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["occ_label.zarr", "m.json", running.name, other.name])
