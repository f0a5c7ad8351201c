"""uniscene.store: round trip, provenance, atomic writes, and the errors of open_store."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr

from uniscene import __version__
from uniscene import store
from uniscene.errors import UserError

CONFIG_SUBSET = {"grid": {"range_m": [-40.0, -40.0, -1.0, 40.0, 40.0, 5.4], "voxel_size_m": 0.4}, "seed": 7}


@pytest.fixture
def dataset() -> xr.Dataset:
    """A small store-shaped dataset: T=3 frames, X Y Z = 4 5 2, B=2 boxes, V=6 cameras."""
    rng = np.random.default_rng(0)
    return xr.Dataset(
        {
            "semantics": (("frame", "x", "y", "z"), rng.integers(0, 18, size=(3, 4, 5, 2), dtype=np.uint8)),
            "mask_camera": (("frame", "x", "y", "z"), rng.random((3, 4, 5, 2)) > 0.5),
            "timestamp_us": (("frame",), np.array([1_533_151_603_512_404, 1_533_151_603_595_737, 1_533_151_603_679_070])),
            "world_from_ego": (("frame", "row", "col"), np.broadcast_to(np.eye(4), (3, 4, 4)).copy()),
            "depth": (("frame", "cam", "h", "w"), rng.random((3, 6, 2, 3)).astype(np.float16)),
            "box_category": (("box",), np.array(["vehicle.car", "human.pedestrian.adult"])),
        },
        attrs={"scene": "synth-0000", "voxel_size_m": 0.4},
    )


def write(path, dataset, **kwargs):
    defaults = dict(stage="occ_label", config_subset=CONFIG_SUBSET, seed=7)
    return store.write_store(path, dataset, **{**defaults, **kwargs})


def test_round_trip_keeps_values_dtypes_and_dimension_names(tmp_path, dataset):
    path = write(tmp_path / "occ_label.zarr", dataset)
    for opened in (store.open_store(path, "occ_label"), xr.open_zarr(path, zarr_format=3, consolidated=False)):
        for name, var in dataset.data_vars.items():
            assert opened[name].dims == var.dims, name
            assert opened[name].shape == var.shape, name
            if var.dtype.kind == "U":
                assert opened[name].values.tolist() == var.values.tolist()
            else:
                assert opened[name].dtype == var.dtype, name
                np.testing.assert_array_equal(opened[name].values, var.values)
        assert opened.attrs["scene"] == "synth-0000"
    meta = json.loads((path / "semantics" / "zarr.json").read_text())
    assert meta["zarr_format"] == 3
    assert meta["dimension_names"] == ["frame", "x", "y", "z"]
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [1, 4, 5, 2]  # one frame per chunk
    blosc = [codec for codec in meta["codecs"] if codec["name"] == "blosc"]
    assert blosc and blosc[0]["configuration"]["cname"] == "zstd"


def test_provenance_attributes(tmp_path, dataset):
    source = tmp_path / "frames.zarr"
    write(source, dataset, stage="frames")
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


def test_more_frames_are_appended(tmp_path, dataset):
    frame_vars = ["semantics", "mask_camera", "timestamp_us", "world_from_ego", "depth"]
    parts = [dataset.isel(frame=slice(i, i + 1))[frame_vars] for i in range(3)]
    path = write(tmp_path / "occ_label.zarr", parts[0].assign(box_category=dataset.box_category), more_frames=iter(parts[1:]))
    opened = store.open_store(path, "occ_label")
    for name in frame_vars:
        np.testing.assert_array_equal(opened[name].values, dataset[name].values)
        assert opened[name].dtype == dataset[name].dtype
    assert opened["box_category"].values.tolist() == dataset["box_category"].values.tolist()


def test_failure_while_appending_frames_leaves_no_store(tmp_path, dataset):
    def parts():
        yield dataset.isel(frame=slice(1, 2))[["semantics"]]
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        write(tmp_path / "occ_label.zarr", dataset.isel(frame=slice(0, 1))[["semantics"]], more_frames=parts())
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
        import os, signal
        import numpy as np, xarray as xr
        from uniscene import store
        real_to_zarr = xr.Dataset.to_zarr
        def to_zarr_then_die(self, *args, **kwargs):
            real_to_zarr(self, *args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        xr.Dataset.to_zarr = to_zarr_then_die
        dataset = xr.Dataset({{"semantics": (("frame", "x"), np.zeros((2, 3), np.uint8))}})
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
    path = write(tmp_path / "frames.zarr", dataset, stage="frames")
    (path / "zarr.json").unlink()
    with pytest.raises(UserError, match=f"store {path} is incomplete .* delete it and rerun"):
        store.open_store(path)
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(UserError, match="is incomplete"):
        store.open_store(tmp_path / "empty.zarr")


def test_open_damaged_store(tmp_path, dataset):
    path = write(tmp_path / "frames.zarr", dataset, stage="frames")
    (path / "zarr.json").write_text("{ not json")
    with pytest.raises(UserError, match=f"store {path} cannot be read"):
        store.open_store(path)


def test_open_foreign_store(tmp_path, dataset):
    path = tmp_path / "foreign.zarr"
    dataset.drop_vars("box_category").to_zarr(path, zarr_format=3, consolidated=False)
    with pytest.raises(UserError, match=f"store {path} was not written by uniscene"):
        store.open_store(path)


def test_open_store_of_another_format(tmp_path, dataset):
    path = write(tmp_path / "frames.zarr", dataset, stage="frames")
    root = json.loads((path / "zarr.json").read_text())
    root["attributes"][store.PROVENANCE_KEY]["format"] = store.STORE_FORMAT + 1
    (path / "zarr.json").write_text(json.dumps(root))
    with pytest.raises(UserError, match=f"has store format {store.STORE_FORMAT + 1} .* reads format {store.STORE_FORMAT}"):
        store.open_store(path)


def test_open_store_of_another_stage(tmp_path, dataset):
    path = write(tmp_path / "frames.zarr", dataset, stage="frames")
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
    mask = os.umask(0)
    os.umask(mask)
    assert (path / "weights.safetensors").stat().st_mode & 0o777 == 0o644 & ~mask
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
