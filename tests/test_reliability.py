"""Faults a user meets (docs/reliability.md): each one stops with a message naming the file or variable,
exit status 2 through the CLI, and nothing at the output path.

Cases: a LiDAR sweep cut mid-number, a corrupt chunk, a missing chunk file, an output folder that
cannot be written, a killed job's temporary sibling, fingerprints of identical reruns, plain
xarray reads of a store, and the file modes of model weights.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from store_examples import example_dataset
from test_occ_label_command import config_json, write_dataset  # noqa: F401 (config_json is a fixture)
from uniscene import store
from uniscene.classes import DETECTION_CLASS_NAMES
from uniscene.cli import main as cli
from uniscene.data.files import POINT_BYTES, read_lidarseg, read_sweep, write_sweep
from uniscene.errors import UserError
from uniscene.grid import OccGrid
from uniscene.layout.raster import layout_dataset

REPO = Path(__file__).resolve().parents[1]
GRID = OccGrid((-8.0, -8.0, -1.0, 8.0, 8.0, 3.0), 0.4)  # 40 x 40 x 10


def leftovers(folder: Path, name: str) -> list:
    """The output and any temporary sibling of it in `folder`."""
    return sorted(p.name for p in folder.iterdir() if p.name == name or p.name.startswith(f".{name}.tmp-"))


def layout_store(path: Path) -> Path:
    """A real layout store (uniscene.layout.raster.layout_dataset): 4 frames, one car 5 m ahead."""
    t = 4
    layout = np.zeros((t, 18) + GRID.shape[:2], bool)
    layout[:, 0, 10:30, 15:25] = True  # drivable area
    dataset = layout_dataset(
        layout, np.arange(t, dtype=np.int64) * 83_333, np.broadcast_to(np.eye(4), (t, 4, 4)),
        box_center=np.tile([5.0, 0.0, 0.8], (t, 1, 1)), box_size=np.tile(np.float32([1.9, 4.5, 1.6]), (t, 1, 1)),
        box_rotation=np.tile([1.0, 0.0, 0.0, 0.0], (t, 1, 1)), box_valid=np.ones((t, 1), bool),
        box_class=np.full((t, 1), DETECTION_CLASS_NAMES.index("car"), np.int8), box_instance_token=["car-0"], grid=GRID,
        attrs={"scene": "hand-0", "box_rule": "overlap"},
    )
    return store.write_store(path, dataset, stage="layout", config_subset={}, frame_chunk=1)


def edit(layout: Path, out: Path, capsys) -> tuple:
    """`uniscene layout-edit` (a command that reads a whole store and writes one): (exit status, stderr)."""
    status = cli(["layout-edit", "--config", json.dumps({"device": "cpu"}), "--layout", str(layout), "--out", str(out),
                  "--drop", "car"])
    return status, capsys.readouterr().err


def test_layout_edit_round_trip(tmp_path, capsys):
    """The command the store faults below go through works on an intact store."""
    status, err = edit(layout_store(tmp_path / "layout.zarr"), tmp_path / "edited.zarr", capsys)
    assert status == 0, err
    edited = store.open_store(tmp_path / "edited.zarr", "layout")
    assert not edited["box_valid"].values.any() and edited["layout"].values[:, 0].sum() == 4 * 200


# ------------------------------------------------------------------------------ LiDAR sweep files


@pytest.mark.parametrize("keep_bytes", [2, 1, 3, POINT_BYTES - 1])
def test_sweep_cut_mid_number_is_itself_the_error(tmp_path, keep_bytes):
    """A cut that leaves 10 whole points and a few bytes: np.fromfile alone would read 10 points."""
    path = tmp_path / "sweep.pcd.bin"
    write_sweep(path, np.ones((11, 5), np.float32))
    with open(path, "r+b") as handle:
        handle.truncate(10 * POINT_BYTES + keep_bytes)
    with pytest.raises(UserError, match=f"LiDAR sweep {path} is truncated \\({10 * POINT_BYTES + keep_bytes} bytes"):
        read_sweep(path)


def test_lidarseg_file_of_another_point_count_names_it(tmp_path):
    path = tmp_path / "sweep_lidarseg.bin"
    np.zeros(9, np.uint8).tofile(path)
    with pytest.raises(UserError, match=f"lidarseg file {path} has 9 labels for a sweep of 10 points"):
        read_lidarseg(path, 10)
    np.testing.assert_array_equal(read_lidarseg(path, 9), np.zeros(9, np.uint8))


@pytest.mark.parametrize("with_lidarseg", [True, False], ids=["keyframe sweep (lidarseg)", "sweep without lidarseg"])
def test_truncated_sweep_through_occ_label(config_json, tmp_path, capsys, with_lidarseg):  # noqa: F811
    """A keyframe sweep is no longer blamed on its intact lidarseg file; a sweep without lidarseg is not read short."""
    frames = write_dataset(tmp_path / "data")
    opened = store.open_store(frames, "frames")
    labelled = opened["sweep_lidarseg_path"].values != ""
    s = int(np.flatnonzero(labelled == with_lidarseg)[0])
    sweep = tmp_path / "data" / "data" / str(opened["sweep_path"].values[s])
    with open(sweep, "r+b") as handle:
        handle.truncate(sweep.stat().st_size - POINT_BYTES + 2)  # the last point cut after half a float
    out = tmp_path / "occ_label.zarr"
    status = cli(["occ-label", "--config", json.dumps(config_json), "--frames", str(frames), "--out", str(out)])
    message = capsys.readouterr().err
    assert status == 2
    assert f"LiDAR sweep {sweep} is truncated" in message and "lidarseg" not in message
    assert leftovers(tmp_path, "occ_label.zarr") == []


# ------------------------------------------------------------------------------------ store faults


def corrupt_chunk(path: Path) -> None:
    """Random bytes over the middle of a chunk file (its length kept)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle - 4:middle + 4] = np.random.default_rng(0).integers(0, 256, 8, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def test_corrupt_chunk_names_store_variable_and_chunk(tmp_path, capsys):
    layout = layout_store(tmp_path / "layout.zarr")
    corrupt_chunk(layout / "layout" / "c" / "2" / "0" / "0" / "0")
    out = tmp_path / "edited.zarr"
    status, message = edit(layout, out, capsys)
    assert status == 2
    assert message.count("\n") == 1  # one line, no traceback
    assert f"store {layout}: variable 'layout' has a corrupt chunk (layout/c/2/0/0/0)" in message
    assert "delete the store and rerun the stage that writes it" in message
    assert leftovers(tmp_path, "edited.zarr") == []


def test_corrupt_chunk_found_by_scanning_the_command_stores(tmp_path):
    """Where the traceback does not show the array (e.g. an error re-raised by a worker), the command's stores are scanned."""
    layout = layout_store(tmp_path / "layout.zarr")
    corrupt_chunk(layout / "box_center" / "c" / "1" / "0" / "0")
    with pytest.raises(ValueError) as caught:
        xr.open_zarr(layout, zarr_format=3)["box_center"].values
    assert store.read_error(caught.value).args[0].startswith(f"store {layout}: variable 'box_center'")  # from the traceback
    bare = ValueError(str(caught.value))  # the message alone, no traceback
    error = store.read_error(bare, stores=[str(tmp_path / "missing.zarr"), "--not-a-path", str(layout)])
    assert f"store {layout}: variable 'box_center' has a corrupt chunk (box_center/c/1/0/0)" in str(error)
    assert store.read_error(ValueError("something else"), stores=[str(layout)]) is None


def test_missing_chunk_file_is_named(tmp_path, capsys):
    layout = layout_store(tmp_path / "layout.zarr")
    (layout / "box_valid" / "c" / "3" / "0").unlink()
    with pytest.raises(UserError, match=f"store {layout} is incomplete: variable 'box_valid' has 3 of its 4 chunk files "
                                        r"\(missing box_valid/c/3/0\): delete the store and rerun"):
        store.open_store(layout)
    status, message = edit(layout, tmp_path / "edited.zarr", capsys)
    assert status == 2 and "variable 'box_valid'" in message
    assert leftovers(tmp_path, "edited.zarr") == []


def test_all_fill_value_chunks_are_written_and_counted(tmp_path):
    """An all-zero chunk is a file too, so deleting it is noticed (zarr would skip it and read the fill value)."""
    dataset = example_dataset("occ_label")
    dataset["mask_lidar"][:] = False
    path = store.write_store(tmp_path / "occ_label.zarr", dataset, stage="occ_label", config_subset={})
    assert len(list((path / "mask_lidar" / "c").rglob("*"))) >= 3
    (path / "mask_lidar" / "c" / "1" / "0" / "0" / "0").unlink()
    with pytest.raises(UserError, match="variable 'mask_lidar' has 2 of its 3 chunk files"):
        store.open_store(path)


# ---------------------------------------------------------------------------------------- outputs


def test_output_under_a_file_stops_before_computing(tmp_path, capsys):
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    out = blocker / "scenes" / "layout.zarr"
    # the input does not exist either: the output is checked first, before anything is read or computed
    status = cli(["layout", "--config", json.dumps({"device": "cpu"}), "--frames", str(tmp_path / "missing.zarr"), "--out", str(out)])
    message = capsys.readouterr().err
    assert status == 2 and message.count("\n") == 1
    assert f"cannot write {out}: {blocker} is a file, not a folder" in message


def test_unwritable_output_folder_stops_before_computing(tmp_path, capsys):
    """--out in a read-only folder: one line, exit 2, nothing written. Where the tests run as root (who may write
    anywhere), the command runs without CAP_DAC_OVERRIDE, so that the folder's mode holds for it too."""
    layout = layout_store(tmp_path / "layout.zarr")
    folder = tmp_path / "readonly"
    folder.mkdir(mode=0o555)
    out = folder / "edited.zarr"
    argv = ["layout-edit", "--config", '{"device": "cpu"}', "--layout", str(layout), "--out", str(out), "--drop", "car"]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv (util-linux): cannot make a folder unwritable")
        code = "import sys; from uniscene.cli import main; sys.exit(main(sys.argv[1:]))"
        result = subprocess.run(["setpriv", "--bounding-set=-dac_override", "--", sys.executable, "-c", code, *argv],
                                capture_output=True, text=True, timeout=300, cwd=REPO)
        status, message = result.returncode, result.stderr
    else:
        status, message = cli(argv), capsys.readouterr().err
    assert status == 2, message
    assert message.count("\n") == 1
    assert f"cannot write {out}: folder {folder} is not writable (Permission denied)" in message
    assert os.listdir(folder) == []


def test_killed_jobs_temporary_sibling_is_removed_by_the_next_write(tmp_path, capsys):
    layout = layout_store(tmp_path / "layout.zarr")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".edited.zarr.tmp-{dead}"
    stale.mkdir()
    (stale / "zarr.json").write_text("{}")  # a killed writer's half store
    status, err = edit(layout, tmp_path / "edited.zarr", capsys)
    assert status == 0, err
    assert leftovers(tmp_path, "edited.zarr") == ["edited.zarr"]


# ----------------------------------------------------------------------------- provenance, reading


def test_identical_reruns_give_identical_fingerprints(tmp_path):
    dataset = example_dataset("occ_label")
    first = store.write_store(tmp_path / "a" / "occ_label.zarr", dataset, stage="occ_label", config_subset={"seed": 0})
    time.sleep(1.1)  # created_utc has whole seconds
    second = store.write_store(tmp_path / "b" / "occ_label.zarr", dataset, stage="occ_label", config_subset={"seed": 0})
    created = [store.store_provenance(store.open_store(p))["created_utc"] for p in (first, second)]
    assert created[0] != created[1]
    assert store.fingerprint(first) == store.fingerprint(second)
    changed = dataset.copy(deep=True)
    changed["semantics"][0, 0, 0, 0] += 1
    third = store.write_store(tmp_path / "c" / "occ_label.zarr", changed, stage="occ_label", config_subset={"seed": 0})
    other_config = store.write_store(tmp_path / "d" / "occ_label.zarr", dataset, stage="occ_label", config_subset={"seed": 1})
    assert len({store.fingerprint(p) for p in (first, third, other_config)}) == 3


def test_plain_xarray_open_does_not_warn(tmp_path):
    path = layout_store(tmp_path / "layout.zarr")
    (path / ".snakemake_timestamp").touch()  # Snakemake's marker in directory() outputs
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert xr.open_zarr(path).sizes["frame"] == 4


def test_model_weights_are_readable_by_others(tmp_path):
    """safetensors creates its files 0600; a model folder written through atomic_directory is 0644 / 0755 (umask 022)."""
    from uniscene.models.lidar.network import MODEL_CONFIGS, LidarRangeNet

    old = os.umask(0o022)
    try:
        with store.atomic_directory(tmp_path / "models" / "lidar") as tmp:
            LidarRangeNet(**MODEL_CONFIGS["tiny"]).save_pretrained(tmp)
    finally:
        os.umask(old)
    folder = tmp_path / "models" / "lidar"
    modes = {p.name: p.stat().st_mode & 0o777 for p in [folder, *folder.iterdir()]}
    assert modes == {"lidar": 0o755, "config.json": 0o644, "diffusion_pytorch_model.safetensors": 0o644}


def test_the_fault_table_cites_tests_that_exist():
    """docs/reliability.md stays current: every `file.py::test_name` (and each `, test_name` after it) is a test."""
    text = (REPO / "docs" / "reliability.md").read_text()
    cited = []
    for cell in re.findall(r"\| ((?:test_\w+\.py::)?test_\w+(?:, (?:test_\w+\.py::)?test_\w+)*) \|", text):
        current = None
        for item in cell.split(", "):
            current, name = item.split("::") if "::" in item else (current, item)
            cited.append((current, name))
    assert len(cited) > 40
    for file, name in cited:
        source = (REPO / "tests" / file).read_text()
        assert re.search(rf"^def {name}\(", source, re.M), f"docs/reliability.md cites {file}::{name}, which does not exist"
