"""`uniscene occ-label` end to end on the hand-built scene written as a dataset: the store layout and
provenance, and bad input (empty or truncated sweep files, a scene without lidarseg)."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from test_occ_label import GRID, OCC_TO_LIDARSEG, build_scene
from uniscene.cli import main as cli
from uniscene.data.files import write_sweep
from uniscene.occ_label.semantics import UNLABELLED
from store_examples import complete
from uniscene.store import open_store, write_store

REPO = Path(__file__).resolve().parents[1]


def write_dataset(root: Path, with_lidarseg: bool = True, location: str | None = None) -> Path:
    """Sweep and lidarseg files under root/data and root/frames.zarr pointing at them (with the map `location` if given)."""
    scene = build_scene(duration_s=1.0)
    data = root / "data"
    sweep_paths, lidarseg_paths = [], []
    to_lidarseg = np.zeros(256, np.uint8)
    for occ, index in OCC_TO_LIDARSEG.items():
        to_lidarseg[occ] = index
    for s in range(len(scene.sweep_timestamp_us)):
        rows = slice(scene.sweeps.sweep_offsets[s], scene.sweeps.sweep_offsets[s + 1])
        points = np.zeros((rows.stop - rows.start, 5), np.float32)
        points[:, :3] = scene.sweeps.points_lidar[rows]
        sweep_paths.append(f"sweeps/LIDAR_TOP/{s:04d}.pcd.bin")
        write_sweep(data / sweep_paths[-1], points)
        labels = scene.sweeps.lidarseg[rows]
        if with_lidarseg and (labels != UNLABELLED).all():
            lidarseg_paths.append(f"lidarseg/{s:04d}_lidarseg.bin")
            (data / "lidarseg").mkdir(exist_ok=True)
            to_lidarseg[labels].tofile(data / lidarseg_paths[-1])
        else:
            lidarseg_paths.append("")

    def boxes(prefix, dim, b):
        return {f"{prefix}center": ((dim, "box", "xyz"), b.center), f"{prefix}size": ((dim, "box", "xyz"), b.size),
                f"{prefix}rotation": ((dim, "box", "quat"), b.rotation), f"{prefix}valid": ((dim, "box"), b.valid)}

    dataset = xr.Dataset(
        {
            "timestamp_us": ("frame", scene.frame_timestamp_us),
            "world_from_ego": (("frame", "row", "col"), scene.world_from_ego),
            "cam_intrinsics": (("frame", "cam", "k_row", "k_col"), scene.cam_intrinsics),
            "ego_from_cam": (("frame", "cam", "row", "col"), scene.ego_from_cam),
            "cam_image_size": (("cam", "hw"), scene.cam_image_size),
            "sweep_path": ("sweep", np.array(sweep_paths, dtype=object)),
            "sweep_lidarseg_path": ("sweep", np.array(lidarseg_paths, dtype=object)),
            "sweep_timestamp_us": ("sweep", scene.sweep_timestamp_us),
            "world_from_sweep_ego": (("sweep", "row", "col"), scene.world_from_sweep_ego),
            "ego_from_lidar": (("sweep", "row", "col"), scene.ego_from_lidar),
            "box_occ_class": ("box", scene.box_occ_class),
            **boxes("box_", "frame", scene.frame_boxes),
            **boxes("sweep_box_", "sweep", scene.sweep_boxes),
        },
        attrs={"scene": "hand-0000", "dataroot": str(data.resolve()), **({"location": location} if location else {})},
    )
    return write_store(root / "frames.zarr", complete(dataset, "frames"), stage="frames", config_subset={})


@pytest.fixture(scope="module")
def config_json():
    config = copy.deepcopy(yaml.safe_load((REPO / "config.yaml").read_text()))
    config["device"] = "cpu"
    config["grid"] = {"range_m": list(GRID.range_m), "voxel_size_m": GRID.voxel_size_m}
    config["occ_label"]["map_areas"] = False  # the hand-built scene has no map
    return config


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("hand"))


def run(config, frames, out, *more) -> int:
    return cli(["occ-label", "--config", json.dumps(config), "--frames", str(frames), "--out", str(out), *more])


def test_store_layout_and_provenance(config_json, dataset, tmp_path):
    out = tmp_path / "occ_label.zarr"
    assert run(config_json, dataset, out, "--preview", str(tmp_path / "occ_label.png")) == 0
    assert (tmp_path / "occ_label.png").stat().st_size > 10_000
    store = open_store(out, stage="occ_label")
    frames = open_store(dataset, stage="frames")
    t = frames.sizes["frame"]
    assert store["semantics"].dims == ("frame", "x", "y", "z") and store["semantics"].shape == (t, *GRID.shape)
    assert store["semantics"].dtype == np.uint8 and int(store["semantics"].max()) <= 17
    assert store["mask_lidar"].dtype == bool and store["mask_camera"].dtype == bool
    np.testing.assert_array_equal(store["timestamp_us"].values, frames["timestamp_us"].values)
    assert store.attrs["backend"] == "splat" and store.attrs["voxel_size_m"] == GRID.voxel_size_m
    assert store.attrs["camera_ray_stride_px"] == 1  # auto, for the hand-built scene's small cameras
    assert store.attrs["map_areas"] is False
    provenance = store.attrs["uniscene"]
    assert provenance["stage"] == "occ_label" and provenance["config"]["grid"]["voxel_size_m"] == GRID.voxel_size_m
    assert str(dataset) in provenance["inputs"]


@pytest.mark.parametrize("size_bytes, word", [(0, "empty"), (4 * 5 * 10 + 6, "truncated")])
def test_a_broken_sweep_file_stops_with_its_name(config_json, tmp_path, capsys, size_bytes, word):
    frames = write_dataset(tmp_path / "broken")
    with open(tmp_path / "broken" / "data" / "sweeps" / "LIDAR_TOP" / "0003.pcd.bin", "r+b") as handle:
        handle.truncate(size_bytes)
    out = tmp_path / "occ_label.zarr"
    assert run(config_json, frames, out) == 2
    message = capsys.readouterr().err
    assert word in message and "0003.pcd.bin" in message
    assert not out.exists() and not list(tmp_path.glob(".occ_label.zarr.tmp*"))


def test_a_scene_without_lidarseg_stops_with_the_fix(config_json, tmp_path, capsys):
    """(With occ_label.allow_missing_lidarseg the core labels static voxels 'others': test_occ_label.py.)"""
    frames = write_dataset(tmp_path / "unlabelled", with_lidarseg=False)
    out = tmp_path / "occ_label.zarr"
    assert run(config_json, frames, out) == 2
    message = capsys.readouterr().err
    assert "no lidarseg" in message and "allow_missing_lidarseg" in message and not out.exists()


def test_map_areas_without_the_scenes_map_location_stops_with_the_fix(config_json, dataset, tmp_path, capsys):
    config = {**config_json, "occ_label": {**config_json["occ_label"], "map_areas": True}}
    out = tmp_path / "occ_label.zarr"
    assert run(config, dataset, out) == 2
    message = capsys.readouterr().err
    assert "'location'" in message and str(dataset) in message and "map_areas: false" in message and not out.exists()


def test_map_areas_without_the_map_file_stops_with_both_fixes(config_json, tmp_path, capsys):
    frames = write_dataset(tmp_path / "no_map", location="singapore-onenorth")  # a nuScenes map whose file the dataroot lacks
    config = {**config_json, "occ_label": {**config_json["occ_label"], "map_areas": True}}
    out = tmp_path / "occ_label.zarr"
    assert run(config, frames, out) == 2
    message = capsys.readouterr().err
    assert "singapore-onenorth.json" in message and "map_areas: false" in message and not out.exists()


def test_sweeps_read_from_their_files_chunk_by_chunk_are_the_sweeps_written(config_json, dataset):
    """load_scene reads no sweep: the aggregation asks for chunks of whole sweeps, read by threads one chunk ahead."""
    from uniscene.config import load_config
    from uniscene.occ_label.inputs import load_scene
    from uniscene.occ_label.label import LabelOptions
    from uniscene.occ_label.sweeps import SweepFiles

    options = LabelOptions.from_config(load_config(json.dumps(config_json)))
    files = load_scene(dataset, options, GRID).sweeps
    written = build_scene(duration_s=1.0).sweeps
    assert isinstance(files, SweepFiles)
    np.testing.assert_array_equal(files.sweep_offsets, written.sweep_offsets)
    sweeps = len(files.sweep_offsets) - 1
    ranges = [(0, 1), (1, 7), (7, sweeps)]
    for chunk, expected in zip(files.chunks(ranges), written.chunks(ranges), strict=True):
        assert (chunk.first, chunk.last) == (expected.first, expected.last)
        np.testing.assert_array_equal(chunk.points, expected.points)
        np.testing.assert_array_equal(chunk.classes, expected.classes)  # lidarseg where written, UNLABELLED elsewhere
        assert chunk.points.dtype == np.float32 and chunk.ring.dtype == chunk.classes.dtype == np.uint8
        assert not chunk.ring.any()  # write_dataset writes ring 0
