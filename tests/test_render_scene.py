"""Occupancy to Gaussians and maps on a hand-built scene whose depths and classes are known.

A ground slab (driveable surface, top at z = 0.2 m) with a ped crossing painted on it, and a
box (car) whose front face is at x = 12 m, seen by one forward camera 1.5 m above the origin.
"""

import numpy as np
import pytest
import torch

from uniscene.classes import FREE, LAYOUT_CHANNEL_NAMES, OCC_CLASS_ID, RENDER_BACKGROUND, RENDER_CLASS_NAMES
from uniscene.geometry import make_transform
from uniscene.grid import OccGrid
from uniscene.render.cameras import scale_intrinsics, viewmats_from_cameras
from uniscene.render import gsplat_renderer, torch_renderer
from uniscene.render.gaussians import MARKING_LAYERS, marking_layers, occupancy_gaussians, render_class_grid, voxel_gaussians
from uniscene.render.occupancy import RenderSettings, render_occupancy
from uniscene.settings import default_settings
from uniscene.viz.render import preview_image

GRID = OccGrid((-8.0, -8.0, -1.0, 32.0, 8.0, 5.4), 0.4)  # 100 x 40 x 16
RENDER = default_settings(RenderSettings)
ROAD, SIDEWALK, CAR = OCC_CLASS_ID["driveable_surface"], OCC_CLASS_ID["sidewalk"], OCC_CLASS_ID["car"]
PED_CROSSING = RENDER_CLASS_NAMES.index("ped_crossing")
EGO_FROM_OPENCV = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
CAMERA_HEIGHT_M, FOCAL_PX, SIZE_HW = 1.5, 100.0, (90, 160)


def scene():
    semantics = np.full(GRID.shape, FREE, np.uint8)
    semantics[:, :, 2] = ROAD  # z in [-0.2, 0.2]
    semantics[50:55, 15:25, 3:11] = CAR  # x in [12, 14], y in [-2, 2], z in [0.2, 3.4]
    markings = np.zeros((len(MARKING_LAYERS),) + GRID.shape[:2], bool)
    markings[0, 37:42, :] = True  # ped crossing, x in [6.8, 8.8]
    ego_from_cam = make_transform(EGO_FROM_OPENCV, (0.0, 0.0, CAMERA_HEIGHT_M))[None]
    intrinsics = np.array([[[FOCAL_PX, 0.0, 80.0], [0.0, FOCAL_PX, 45.0], [0.0, 0.0, 1.0]]])
    return semantics, markings, ego_from_cam, intrinsics


@pytest.fixture(scope="module")
def maps():
    semantics, markings, ego_from_cam, intrinsics = scene()
    return render_occupancy(semantics, GRID, ego_from_cam, intrinsics, SIZE_HW, markings, RENDER).numpy()


def ground_depth_m(row: int, surface_z_m: float) -> float:
    """z-depth where the ray of a pixel row's centre (column 80) meets the plane z = surface_z_m."""
    return (CAMERA_HEIGHT_M - surface_z_m) * FOCAL_PX / (row + 0.5 - 45.0)


def test_box_face_class_and_depth(maps):
    rows = slice(30, 51)  # the box spans rows 25..51 at column 80
    assert (maps["semantic"][0, rows, 80] == CAR).all()
    # Between the face (12.0) and the second layer of voxel centres (12.6).
    np.testing.assert_allclose(maps["depth"][0, rows, 80], 12.3, atol=0.3)
    assert (maps["alpha"][0, rows, 80] > 0.95).all()


def test_ground_and_marking(maps):
    # The slab's surface renders between its top face (z = 0.2) and its voxel centres (z = 0).
    for row in (69, 75, 85):  # road nearer than the crossing
        assert maps["semantic"][0, row, 80] == ROAD
        assert 0.97 * ground_depth_m(row, 0.2) <= maps["depth"][0, row, 80] <= 1.03 * ground_depth_m(row, 0.0)
    for row in (62, 63):  # rays that meet the slab inside the crossing, x in [6.8, 8.8]
        assert 6.8 <= ground_depth_m(row, 0.2) and ground_depth_m(row, 0.0) <= 8.8
        assert maps["semantic"][0, row, 80] == PED_CROSSING


def test_sky_is_background(maps):
    assert (maps["semantic"][0, :10] == RENDER_BACKGROUND).all()
    assert maps["alpha"][0, :10].max() < 1e-3
    assert maps["depth"].dtype == np.float32 and maps["semantic"].dtype == np.uint8


def test_render_class_grid_paints_only_road_tops():
    semantics = np.full((3, 2, 4), FREE, np.uint8)
    semantics[:, :, 1] = ROAD
    semantics[1, :, 1] = SIDEWALK  # x = 1: sidewalk, never painted
    semantics[2, 1, 1:3] = ROAD  # a 2-voxel-high road column: its top is painted
    markings = np.zeros((3, 3, 2), bool)
    markings[0] = True  # ped crossing everywhere
    markings[2, 0, 0] = True  # lane divider at (0, 0) wins over the crossing
    classes = render_class_grid(semantics, markings)
    assert classes[0, 0, 1] == RENDER_CLASS_NAMES.index("lane_divider")
    assert classes[0, 1, 1] == PED_CROSSING
    assert (classes[1, :, 1] == SIDEWALK).all()
    assert classes[2, 1, 2] == PED_CROSSING and classes[2, 1, 1] == ROAD
    assert (classes[semantics == FREE] == RENDER_BACKGROUND).all()
    np.testing.assert_array_equal(render_class_grid(semantics, None)[semantics != FREE], semantics[semantics != FREE])


def test_marking_layers_by_name():
    layout = np.zeros((len(LAYOUT_CHANNEL_NAMES), 2, 2), bool)
    layout[LAYOUT_CHANNEL_NAMES.index("road_divider"), 1, 0] = True
    layers = marking_layers(layout)
    assert layers.shape == (3, 2, 2) and layers[MARKING_LAYERS.index("road_divider"), 1, 0] and layers.sum() == 1
    with pytest.raises(ValueError, match="ped_crossing"):
        marking_layers(layout[:1], ("drivable_area",))


def test_voxel_gaussians_at_voxel_centres():
    classes = np.full(GRID.shape, RENDER_BACKGROUND, np.uint8)
    classes[0, 0, 0] = CAR
    classes[99, 39, 15] = PED_CROSSING
    gaussians = voxel_gaussians(torch.as_tensor(classes), GRID, scale_voxels=0.5)
    torch.testing.assert_close(gaussians.means, torch.tensor([[-7.8, -7.8, -0.8], [31.8, 7.8, 5.2]]))
    torch.testing.assert_close(gaussians.scales, torch.full((2, 3), 0.2))
    assert gaussians.classes.tolist() == [CAR, PED_CROSSING]
    assert gaussians.features.argmax(-1).tolist() == [CAR, PED_CROSSING] and gaussians.features.sum().item() == 2
    torch.testing.assert_close(gaussians.opacities, torch.ones(2))


def test_camera_adapter():
    _, _, ego_from_cam, intrinsics = scene()
    viewmats = viewmats_from_cameras(ego_from_cam)
    point_ego = np.array([10.0, 1.0, 1.5, 1.0])  # 10 m ahead, 1 m left, at camera height
    np.testing.assert_allclose((viewmats[0] @ point_ego)[:3], [-1.0, 0.0, 10.0], atol=1e-6)  # x right, y down, z forward
    halved = scale_intrinsics(intrinsics, (900, 1600), (450, 800))
    np.testing.assert_allclose(halved[0], [[50.0, 0.0, 40.0], [0.0, 50.0, 22.5], [0.0, 0.0, 1.0]])


def test_empty_occupancy_renders_background():
    _, _, ego_from_cam, intrinsics = scene()
    maps = render_occupancy(np.full(GRID.shape, FREE, np.uint8), GRID, ego_from_cam, intrinsics, (20, 30), None, RENDER).numpy()
    assert (maps["semantic"] == RENDER_BACKGROUND).all() and maps["alpha"].max() == 0


def test_preview_layout(maps):
    six = {key: np.repeat(value, 6, axis=0) for key, value in maps.items()}
    image = preview_image(six["semantic"], six["depth"], six["alpha"], RENDER.min_alpha)
    assert image.shape == (4 * SIZE_HW[0], 3 * SIZE_HW[1], 3) and image.dtype == np.uint8


@pytest.mark.skipif(not gsplat_renderer.gsplat_available(), reason="needs CUDA and gsplat")
def test_gsplat_agrees_on_the_voxel_scene():
    semantics, markings, ego_from_cam, intrinsics = scene()
    gaussians = occupancy_gaussians(semantics, GRID, markings, RENDER.scale_voxels, device="cuda")
    args = (gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities, gaussians.features,
            torch.as_tensor(viewmats_from_cameras(ego_from_cam), device="cuda"),
            torch.as_tensor(intrinsics, dtype=torch.float32, device="cuda"), SIZE_HW[1], SIZE_HW[0])
    ours, our_alphas, _ = torch_renderer.rasterization(*args, near_plane=0.1, render_mode="RGB+ED")
    theirs, their_alphas, _ = gsplat_renderer.rasterization(*args, near_plane=0.1, render_mode="RGB+ED")
    torch.testing.assert_close(our_alphas, their_alphas, rtol=1e-3, atol=2e-3)
    torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-2)
    settings = RENDER
    by_torch = render_occupancy(semantics, GRID, ego_from_cam, intrinsics, SIZE_HW, markings, settings, "cuda", "torch").numpy()
    by_gsplat = render_occupancy(semantics, GRID, ego_from_cam, intrinsics, SIZE_HW, markings, settings, "cuda", "gsplat").numpy()
    assert np.mean(by_torch["semantic"] == by_gsplat["semantic"]) > 0.999
