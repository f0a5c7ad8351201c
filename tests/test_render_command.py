"""`uniscene render` and the render metrics on hand-built stores, scored against a voxel ray caster.

The scene of test_render_scene (ground slab, a box, a painted crossing) seen by two cameras
over two frames. The truth per pixel (class and z-depth) and a LiDAR sweep come from
uniscene.ops.raycast walking the same voxels: independent of the splatting, so the render metrics
must find the rendered maps close to them.
"""

import json

import numpy as np
import pytest
import torch
import xarray as xr

from uniscene.classes import FREE, LAYOUT_CHANNEL_NAMES, RENDER_BACKGROUND
from uniscene.cli import main as cli_main
from uniscene.data.files import write_sweep
from uniscene.geometry import make_transform, yaw_to_quaternion
from uniscene.grid import OccGrid
from uniscene.metrics.render import resample_nearest, score_scene
from uniscene.ops.raycast import END_OCCUPIED, traverse_grid
from uniscene.render.occupancy import RenderSettings
from uniscene.settings import default_settings
from store_examples import complete
from uniscene.store import open_store, write_store

GRID = OccGrid((-8.0, -8.0, -1.0, 32.0, 8.0, 5.4), 0.4)
EGO_FROM_OPENCV = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
IMAGE_HW, RENDER_HW = (90, 160), (45, 80)
LIDAR_MOUNT_M = (0.9, 0.0, 1.84)
TIMESTAMPS_US = np.array([1_000_000, 1_083_333])


def occupancy():
    semantics = np.full(GRID.shape, FREE, np.uint8)
    semantics[:, :, 2] = 11
    semantics[50:55, 15:25, 3:11] = 4  # car, front face at x = 12 m
    semantics[20:70, 32:36, 3:5] = 1  # barrier wall on the left, y in [4.8, 6.4]
    layout = np.zeros((len(LAYOUT_CHANNEL_NAMES),) + GRID.shape[:2], bool)
    layout[LAYOUT_CHANNEL_NAMES.index("ped_crossing"), 37:42, :] = True
    return semantics, layout


def cameras():
    """A forward and a left-looking camera 1.5 m up: ego_from_cam [2, 4, 4], K [2, 3, 3] at IMAGE_HW."""
    yaw = np.array([0.0, np.pi / 2])
    rz = np.stack([np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]) for a in yaw])
    ego_from_cam = make_transform(rz @ EGO_FROM_OPENCV, np.array([[0.5, 0.0, 1.5], [0.0, 0.3, 1.5]]))
    k = np.array([[100.0, 0.0, 80.0], [0.0, 100.0, 45.0], [0.0, 0.0, 1.0]])
    return ego_from_cam, np.stack([k, k])


def raycast(semantics, origins, directions):
    """First occupied voxel along rays: (class [N] (255 none), range_m [N] (0 none))."""
    hits = traverse_grid(GRID, torch.as_tensor(origins), torch.as_tensor(directions),
                         occupied=torch.as_tensor(semantics != FREE))
    hit = (hits.end_reason == END_OCCUPIED).numpy()
    voxel = hits.end_voxel.numpy()
    classes = np.where(hit, semantics[voxel[:, 0], voxel[:, 1], voxel[:, 2]], 255).astype(np.uint8)
    return classes, np.where(hit, hits.end_range_m.numpy(), 0.0)


def camera_truth(semantics, ego_from_cam, intrinsics):
    """Per-pixel class (255 sky) and z-depth (0 sky) of the ray-cast voxels, [V, H, W] each."""
    u, v = np.meshgrid(np.arange(IMAGE_HW[1]) + 0.5, np.arange(IMAGE_HW[0]) + 0.5)
    rays_cam = np.einsum("vij,hwj->vhwi", np.linalg.inv(intrinsics), np.stack([u, v, np.ones_like(u)], -1))
    unit = rays_cam / np.linalg.norm(rays_cam, axis=-1, keepdims=True)
    dirs = np.einsum("vij,vhwj->vhwi", ego_from_cam[:, :3, :3], unit).reshape(-1, 3)
    origins = np.repeat(ego_from_cam[:, :3, 3], IMAGE_HW[0] * IMAGE_HW[1], axis=0)
    classes, range_m = raycast(semantics, origins, dirs)
    shape = (len(ego_from_cam),) + IMAGE_HW
    return classes.reshape(shape), (range_m.reshape(shape) * unit[..., 2]).astype(np.float32)


def lidar_sweep(semantics):
    """A 32-beam sweep from LIDAR_MOUNT_M: [N, 5] points in the sensor frame (axes as ego)."""
    elevation, azimuth = np.meshgrid(np.deg2rad(np.linspace(-25, 5, 32)), np.deg2rad(np.arange(0, 360, 0.5)), indexing="ij")
    dirs = np.stack([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)], -1).reshape(-1, 3)
    _, range_m = raycast(semantics, np.broadcast_to(LIDAR_MOUNT_M, dirs.shape).copy(), dirs)
    hit = range_m > 0
    points = dirs[hit] * range_m[hit, None]
    return np.concatenate([points, np.zeros((len(points), 2))], 1)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("render_command")
    dataroot = root / "data"
    semantics, layout = occupancy()
    ego_from_cam, intrinsics = cameras()
    write_sweep(dataroot / "sweeps" / "LIDAR_TOP" / "sweep0.pcd.bin", lidar_sweep(semantics))
    t = len(TIMESTAMPS_US)
    eye = np.broadcast_to(np.eye(4), (t, 4, 4)).copy()
    frames = xr.Dataset(
        {
            "timestamp_us": (("frame",), TIMESTAMPS_US),
            "world_from_ego": (("frame", "row", "col"), eye),
            "cam_intrinsics": (("frame", "cam", "k_row", "k_col"), np.broadcast_to(intrinsics, (t, 2, 3, 3)).copy()),
            "cam_image_size": (("cam", "hw"), np.array([IMAGE_HW, IMAGE_HW])),
            "ego_from_cam": (("frame", "cam", "row", "col"), np.broadcast_to(ego_from_cam, (t, 2, 4, 4)).copy()),
            "lidar_sweep_index": (("frame",), np.zeros(t, np.int64)),
            "sweep_path": (("sweep",), np.array(["sweeps/LIDAR_TOP/sweep0.pcd.bin"], dtype=object)),
            "world_from_sweep_ego": (("sweep", "row", "col"), np.eye(4)[None]),
            "ego_from_lidar": (("sweep", "row", "col"), make_transform(yaw_to_quaternion(np.zeros(1)), [LIDAR_MOUNT_M])),
        },
        attrs={"scene": "hand-0", "dataroot": str(dataroot), "version": "v1.0-hand"},
    )
    occ = xr.Dataset({"semantics": (("frame", "x", "y", "z"), np.stack([semantics] * t)), "timestamp_us": (("frame",), TIMESTAMPS_US)},
                     attrs=GRID.to_attrs())
    lay = xr.Dataset({"layout": (("frame", "channel", "x", "y"), np.stack([layout] * t)), "timestamp_us": (("frame",), TIMESTAMPS_US)},
                     attrs={"channel_names": list(LAYOUT_CHANNEL_NAMES), **GRID.to_attrs()})
    cam_semantics, cam_depth = camera_truth(semantics, ego_from_cam, intrinsics)
    truth = xr.Dataset({
        "timestamp_us": (("frame",), TIMESTAMPS_US),
        "cam_semantics": (("frame", "cam", "h", "w"), np.stack([cam_semantics] * t)),
        "cam_depth": (("frame", "cam", "h", "w"), np.stack([cam_depth] * t)),
    })
    paths = {name: root / f"{name}.zarr" for name in ("frames", "occ_label", "layout", "truth")}
    for name, stage, dataset in (("frames", "frames", frames), ("occ_label", "occ_label", occ), ("layout", "layout", lay),
                                 ("truth", "synth_truth", truth)):
        write_store(paths[name], complete(dataset, stage), stage=stage, config_subset={})
    config = {
        "device": "cpu", "seed": 0,
        "dataset": {"kind": "synthetic", "dataroot": str(dataroot), "version": "v1.0-hand", "scenes": "all"},
        "grid": {"range_m": list(GRID.range_m), "voxel_size_m": GRID.voxel_size_m},
        "render": {"image_size": list(RENDER_HW), "backend": "torch"},
    }
    paths["render"], paths["preview"] = root / "render.zarr", root / "render.png"
    argv = ["render", "--config", json.dumps(config), "--frames", str(paths["frames"]), "--occupancy", str(paths["occ_label"]),
            "--layout", str(paths["layout"]), "--out", str(paths["render"]), "--preview", str(paths["preview"])]
    assert cli_main(argv) == 0
    return paths, config, dataroot


def test_store_layout(stores):
    paths, _, _ = stores
    render = open_store(paths["render"], stage="render")
    assert render["semantic"].dims == ("frame", "cam", "h", "w") and render["semantic"].shape == (2, 2) + RENDER_HW
    assert render["semantic"].dtype == np.uint8 and render["depth"].dtype == np.float16 and render["alpha"].dtype == np.float16
    assert render["intrinsics"].dims == ("frame", "cam", "k_row", "k_col")
    np.testing.assert_allclose(render["intrinsics"].values[0, 0], [[50.0, 0, 40.0], [0, 50.0, 22.5], [0, 0, 1]])
    assert render.attrs["source"] == "label" and render.attrs["backend"] == "torch"
    assert render.attrs["uniscene"]["config"]["render"]["image_size"] == list(RENDER_HW)
    assert paths["preview"].stat().st_size > 0
    # The crossing reaches the forward camera; the top rows of the left camera see sky beyond the wall.
    assert (render["semantic"].values[:, 0] == 17).any()
    assert (render["semantic"].values[:, 1, 0] == RENDER_BACKGROUND).all()


def test_rendered_maps_agree_with_raycast_truth(stores):
    paths, config, dataroot = stores
    score = score_scene(open_store(paths["render"]), open_store(paths["frames"]), open_store(paths["truth"]), GRID, dataroot, default_settings(RenderSettings).min_alpha)
    figures = score.figures()
    lidar, semantic, truth_depth = figures["depth_vs_lidar"], figures["semantic_in_grid"], figures["depth_vs_truth"]
    assert lidar["num"] > 1000 and lidar["coverage"] > 0.95
    assert lidar["median_abs_error_m"] < 0.4, lidar
    assert truth_depth["median_abs_error_m"] < 0.4, truth_depth
    assert semantic["pixel_accuracy"] > 0.9 and semantic["miou"] > 0.75, semantic
    assert set(semantic["iou"]) == {"barrier", "car", "driveable_surface"}


def test_bad_inputs_exit_2(stores, tmp_path, capsys):
    paths, config, _ = stores
    wrong_grid = {**config, "grid": {"range_m": [-40.0, -40.0, -1.0, 40.0, 40.0, 5.4], "voxel_size_m": 0.4}}
    argv = ["render", "--config", json.dumps(wrong_grid), "--frames", str(paths["frames"]), "--occupancy", str(paths["occ_label"]),
            "--out", str(tmp_path / "r.zarr")]
    assert cli_main(argv) == 2
    assert "grid" in capsys.readouterr().err and not (tmp_path / "r.zarr").exists()
    argv = ["render", "--config", json.dumps(config), "--frames", str(paths["frames"]), "--occupancy", str(tmp_path / "missing.zarr"),
            "--out", str(tmp_path / "r.zarr")]
    assert cli_main(argv) == 2


def test_resample_nearest():
    maps = np.arange(16).reshape(4, 4)
    np.testing.assert_array_equal(resample_nearest(maps, (2, 2)), [[5, 7], [13, 15]])
    np.testing.assert_array_equal(resample_nearest(maps, (8, 8))[::2, ::2], maps)
