"""Ray casting for the occupancy masks: the vectorised DDA against a slow, obvious reference, and
mask_lidar / mask_camera on hand-built grids."""

import numpy as np
import pytest
import torch

from uniscene.grid import OccGrid
from uniscene.occ_label.masks import auto_ray_stride, camera_rays, mask_camera, mask_lidar
from uniscene.ops.raycast import END_EXITED, END_OCCUPIED, END_RANGE, traverse_grid

GRID = OccGrid((-2.0, -1.6, -0.8, 2.0, 1.6, 0.8), 0.4)  # 10 x 8 x 4


def reference_traversal(grid: OccGrid, origin, direction, max_range_m, occupied):
    """Every voxel's entry/exit distances by a slab test, sorted by entry: the first occupied one stops
    the ray, the voxel holding the end point stops it at max range. Returns (visited set, end voxel, reason)."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), -1).reshape(-1, 3)
    lower = grid.lower_m + ijk * grid.voxel_size_m
    upper = lower + grid.voxel_size_m
    with np.errstate(divide="ignore", invalid="ignore"):
        ta, tb = (lower - origin) / direction, (upper - origin) / direction
    t_in = np.minimum(ta, tb).max(1)
    t_out = np.maximum(ta, tb).min(1)
    crossed = (t_out > np.maximum(t_in, 0)) & (t_out > 0)
    visited = set()
    for v in np.argsort(np.where(crossed, t_in, np.inf)):
        if not crossed[v]:
            break
        key = tuple(ijk[v])
        if t_in[v] >= max_range_m:
            break  # the ray ends before it reaches the grid
        if occupied[key]:
            return visited, key, END_OCCUPIED
        if t_out[v] >= max_range_m:
            return visited, key, END_RANGE
        visited.add(key)
    return visited, None, END_EXITED


def test_traverse_grid_matches_the_slab_reference():
    rng = np.random.default_rng(0)
    n = 300
    origins = rng.uniform(GRID.lower_m - 1.0, GRID.upper_m + 1.0, (n, 3))
    directions = rng.normal(size=(n, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    max_range = rng.uniform(0.5, 6.0, n)
    occupied = rng.random(GRID.shape) < 0.08
    out = traverse_grid(GRID, torch.tensor(origins), torch.tensor(directions), torch.tensor(max_range), torch.tensor(occupied))
    for i in range(n):
        _, end, reason = reference_traversal(GRID, origins[i], directions[i], max_range[i], occupied)
        assert out.end_reason[i] == reason, i
        if reason != END_EXITED:
            assert tuple(out.end_voxel[i].tolist()) == end, i
    solo = [traverse_grid(GRID, torch.tensor(origins[i:i + 1]), torch.tensor(directions[i:i + 1]), float(max_range[i]),
                          torch.tensor(occupied)).visited for i in range(n)]
    for i in range(n):
        visited, _, _ = reference_traversal(GRID, origins[i], directions[i], max_range[i], occupied)
        assert set(map(tuple, torch.nonzero(solo[i]).tolist())) == visited, i
    assert torch.equal(out.visited, torch.stack(solo).any(0))


def test_batched_grids_walk_independently():
    rng = np.random.default_rng(1)
    occupied = torch.tensor(rng.random((3, *GRID.shape)) < 0.1)
    origins = torch.tensor(rng.uniform(GRID.lower_m, GRID.upper_m, (60, 3)))
    directions = torch.nn.functional.normalize(torch.tensor(rng.normal(size=(60, 3))), dim=1)
    which = torch.arange(60) % 3
    batched = traverse_grid(GRID, origins, directions, 3.0, occupied, which)
    for g in range(3):
        alone = traverse_grid(GRID, origins[which == g], directions[which == g], 3.0, occupied[g])
        assert torch.equal(batched.visited[g], alone.visited)
        assert torch.equal(batched.end_voxel[which == g], alone.end_voxel)


def test_mask_lidar_never_marks_space_behind_an_occupied_voxel():
    occupied = torch.zeros((1, *GRID.shape), dtype=torch.bool)
    occupied[0, 6] = True  # a wall across the grid at x index 6
    rng = np.random.default_rng(2)
    ends = torch.tensor(rng.uniform([1.0, -1.5, -0.7], [1.9, 1.5, 0.7], (500, 3)))  # behind the wall
    origins = torch.tensor([[-1.8, 0.0, 0.0]], dtype=torch.float64).expand(500, 3)
    mask = mask_lidar(GRID, occupied, origins, ends, torch.zeros(500, dtype=torch.long))[0]
    assert not mask[7:].any()
    assert mask[6].any() and mask[:6].any()


def test_masks_match_a_hand_built_scene():
    """One camera on the left looking along +x at a wall 0.8 m thick; one LiDAR return on the wall."""
    occupied = torch.zeros((1, *GRID.shape), dtype=torch.bool)
    occupied[0, 6:8] = True
    k = np.array([[2.0, 0.0, 2.0], [0.0, 2.0, 2.0], [0.0, 0.0, 1.0]])  # 4 x 4 pixels, 90 deg field of view
    opencv = np.array([[0.0, 0.0, 1.0, -1.99], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0, 0, 0, 1.0]])
    origins, directions, frame = camera_rays(torch.tensor(k)[None, None], torch.tensor(opencv)[None, None], np.array([[4, 4]]), 1)
    assert origins.shape == (16, 3)
    visible = mask_camera(GRID, occupied, torch.tensor(k)[None, None], torch.tensor(opencv)[None, None], np.array([[4, 4]]), 1)[0]
    assert not visible[8:].any()  # behind the wall's first layer nothing is visible
    assert not visible[7].any()  # the wall's second layer is hidden by its first
    # Every voxel whose centre lies inside the 90 deg view is visible up to the wall: the whole of its
    # first layer (centres 2.59 m from the lens, |y| <= 1.4, |z| <= 0.6), and the free space in front of
    # it, where pixel rays alone (16 of them) leave voxels between them unmarked.
    depth = GRID.voxel_centers()[..., 0] + 1.99
    in_view = (np.abs(GRID.voxel_centers()[..., 1]) < depth) & (np.abs(GRID.voxel_centers()[..., 2]) < depth)
    assert visible[6].all()
    assert visible[:6][in_view[:6]].all()
    ends = torch.tensor([[0.5, 0.1, 0.1]])
    lidar = mask_lidar(GRID, torch.zeros_like(occupied), torch.tensor([[-1.9, 0.1, 0.1]]), ends, torch.zeros(1, dtype=torch.long))[0]
    expected = np.zeros(GRID.shape, bool)
    expected[0:7, 4, 2] = True  # x from -1.9 to 0.5 along y = 0.1 (index 4), z = 0.1 (index 2), end voxel included
    np.testing.assert_array_equal(lidar.numpy(), expected)


def test_the_automatic_ray_stride_keeps_the_camera_mask():
    """nuScenes' cameras at 0.4 m cast one ray per 4 x 4 pixels, the demo's one per pixel; on a street
    of random blocks the strided mask differs from the per-pixel one in under 3 % of its voxels."""
    grid = OccGrid((-40.0, -40.0, -1.0, 40.0, 40.0, 5.4), 0.4)
    nuscenes_k = np.array([[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5], [0.0, 0.0, 1.0]])
    assert auto_ray_stride(nuscenes_k[None], grid) == 4
    assert auto_ray_stride(nuscenes_k[None] * [[0.1], [0.1], [1.0]], grid) == 1  # the demo's 160 x 90 images
    assert auto_ray_stride(nuscenes_k[None], OccGrid((-40.0, -40.0, -1.0, 40.0, 40.0, 5.4), 0.1)) == 1

    small = OccGrid((-12.0, -12.0, -1.0, 12.0, 12.0, 3.0), 0.4)  # 60 x 60 x 10, farthest corner 17.4 m away
    k = np.array([[175.0, 0.0, 160.0], [0.0, 175.0, 90.0], [0.0, 0.0, 1.0]])  # 320 x 180 pixels
    stride = auto_ray_stride(k[None], small)
    assert stride == 2
    rng = np.random.default_rng(4)
    occupied = torch.zeros((1, *small.shape), dtype=torch.bool)
    occupied[0, :, :, 2] = True  # the ground layer
    for x, y in rng.integers(5, 55, (40, 2)):
        occupied[0, x:x + rng.integers(1, 5), y:y + rng.integers(1, 5), 3:3 + rng.integers(1, 6)] = True
    occupied[0, 28:33, 28:33] = False  # room for the camera
    opencv = np.array([[0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 1.5], [0, 0, 0, 1.0]])  # looking along +x
    masks = []
    for step in (1, stride):
        masks.append(mask_camera(small, occupied, torch.tensor(k)[None, None], torch.tensor(opencv)[None, None], np.array([[180, 320]]), step)[0])
    per_pixel, strided = masks
    assert int(per_pixel.sum()) > 2000
    # measured: 91 of 6458 voxels missed, 5 extra (1.5 %): slivers that a pixel or two sees past an edge
    assert int((per_pixel ^ strided).sum()) <= 0.02 * int(per_pixel.sum())


def test_mask_camera_leaves_no_gaps_between_rays_far_away():
    """A camera of 40 x 20 pixels (2.9 deg each: rays 1.5 m apart at 30 m) 1.5 m over flat ground. Nearly every
    voxel whose centre it images is visible; the pixel rays alone mark under a third of the free ones and 3 % of
    the ground."""
    grid = OccGrid((-2.0, -20.0, -1.0, 38.0, 20.0, 3.0), 0.4)  # ground layer: index 2, z in [-0.2, 0.2]
    occupied = torch.zeros((1, *grid.shape), dtype=torch.bool)
    occupied[0, :, :, 2] = True
    k = np.array([[20.0, 0.0, 20.0], [0.0, 20.0, 10.0], [0.0, 0.0, 1.0]])
    opencv = np.array([[0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 1.5], [0, 0, 0, 1.0]])  # looking along +x
    cameras = torch.tensor(k)[None, None], torch.tensor(opencv)[None, None], np.array([[20, 40]])
    visible = mask_camera(grid, occupied, *cameras, 1)[0].numpy()
    pixel_rays = camera_rays(*cameras, 1)
    pixel_only = traverse_grid(grid, *pixel_rays[:2], float("inf"), occupied, pixel_rays[2]).visited[0].numpy()

    in_cam = (grid.voxel_centers() - opencv[:3, 3]) @ opencv[:3, :3]
    uvw = in_cam @ k.T
    u, v = uvw[..., 0] / uvw[..., 2], uvw[..., 1] / uvw[..., 2]
    imaged = (in_cam[..., 2] > 0) & (u >= 0) & (u < 40) & (v >= 0) & (v < 20)
    free, ground = imaged.copy(), np.zeros_like(imaged)
    free[:, :, :3] = False
    ground[:, :, 2] = imaged[:, :, 2]
    assert free.sum() > 40000 and ground.sum() > 6000
    # measured: 99.7 % of the free voxels (the rest, just over the ground, lie behind the ground where their
    # pixel's central ray meets it), 94 % of the ground ones (the rest at the image's edges)
    assert visible[free].mean() > 0.99
    assert visible[ground].mean() > 0.9
    assert pixel_only[free].mean() < 0.3 and pixel_only[ground].mean() < 0.05
    assert not visible[:, :, :2].any()  # nothing under the ground


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the Triton walk runs on CUDA")
def test_the_triton_walk_matches_the_torch_loop():
    """Random rays over a random batch of grids: the GPU kernel and the CPU loop visit and stop alike."""
    rng = np.random.default_rng(5)
    occupied = torch.tensor(rng.random((3, *GRID.shape)) < 0.08)
    origins = torch.tensor(rng.uniform(-3, 3, (4000, 3)))
    directions = torch.nn.functional.normalize(torch.tensor(rng.normal(size=(4000, 3))), dim=1)
    max_range = torch.tensor(rng.uniform(0.1, 6.0, 4000))
    frame = torch.tensor(rng.integers(0, 3, 4000))
    cpu = traverse_grid(GRID, origins, directions, max_range, occupied, frame)
    gpu = traverse_grid(GRID, origins.cuda(), directions.cuda(), max_range.cuda(), occupied.cuda(), frame.cuda())
    same_end = (gpu.end_voxel.cpu() == cpu.end_voxel).all(1) & (gpu.end_reason.cpu() == cpu.end_reason)
    assert float(same_end.float().mean()) >= 0.999  # float32 against float64 at voxel edges
    assert int((gpu.visited.cpu() ^ cpu.visited).sum()) <= 0.002 * int(cpu.visited.sum())
    np.testing.assert_allclose(gpu.end_range_m.cpu()[same_end].numpy(), cpu.end_range_m[same_end].numpy(), atol=1e-4)
