"""Visibility masks as Occ3D defines them, by casting rays through each frame's occupancy.

`mask_lidar` (observed by the LiDAR): the voxels that LiDAR rays cross from their sensor to
their return, stopping at the first occupied voxel, plus the voxel where each ray ends.
`mask_camera` (visible from a camera): the voxels that camera pixel rays cross up to and
including the first occupied voxel. A ray never marks anything behind an occupied voxel.
Both use `uniscene.raycast.traverse_grid`, one loop for a whole batch of frames.

Letters: F frames of a batch, V cameras, R rays, X Y Z grid, H W pixels.
"""

import numpy as np
import torch

from uniscene.grid import OccGrid
from uniscene.raycast import END_EXITED, traverse_grid


def _mask(traversal, frame: torch.Tensor) -> torch.Tensor:
    """Visited voxels plus the voxel where each ray ended inside the grid: [F, X, Y, Z] bool."""
    mask = traversal.visited.clone()
    ended = traversal.end_reason != END_EXITED
    voxel = traversal.end_voxel[ended]
    mask[frame[ended], voxel[:, 0], voxel[:, 1], voxel[:, 2]] = True
    return mask


def mask_lidar(
    grid: OccGrid,
    occupied: torch.Tensor,  # [F, X, Y, Z] bool
    origins: torch.Tensor,  # [R, 3] sensor position, ego frame of the ray's frame
    ends: torch.Tensor,  # [R, 3] LiDAR return, same frame
    frame: torch.Tensor,  # [R] int64 in 0..F-1
) -> torch.Tensor:
    """Voxels observed by the LiDAR rays: [F, X, Y, Z] bool."""
    delta = ends - origins
    length = delta.norm(dim=1)
    keep = length > 1e-6
    traversal = traverse_grid(grid, origins[keep], delta[keep] / length[keep, None], length[keep], occupied, frame[keep])
    return _mask(traversal, frame[keep])


def camera_rays(
    intrinsics: np.ndarray,  # [F, V, 3, 3] K at the image size
    ego_from_cam: np.ndarray,  # [F, V, 4, 4] OpenCV camera axes
    image_size_hw: np.ndarray,  # [V, 2]
    stride_px: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Origins [R, 3], unit directions [R, 3] (ego frame) and frame index [R] of pixel-centre rays.

    One ray every `stride_px` pixels along each image axis, through the centre of its block.
    """
    origins, directions, frames = [], [], []
    for cam, (height, width) in enumerate(np.asarray(image_size_hw)):
        u, v = np.meshgrid(np.arange(0, width, stride_px) + stride_px / 2, np.arange(0, height, stride_px) + stride_px / 2)
        pixels = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], 1)  # [P, 3]
        rays_cam = np.einsum("fij,pj->fpi", np.linalg.inv(intrinsics[:, cam]), pixels)  # [F, P, 3]
        rays_ego = np.einsum("fij,fpj->fpi", ego_from_cam[:, cam, :3, :3], rays_cam)
        rays_ego /= np.linalg.norm(rays_ego, axis=-1, keepdims=True)
        directions.append(rays_ego.reshape(-1, 3))
        origins.append(np.repeat(ego_from_cam[:, cam, :3, 3], pixels.shape[0], axis=0))
        frames.append(np.repeat(np.arange(intrinsics.shape[0]), pixels.shape[0]))
    return np.concatenate(origins), np.concatenate(directions), np.concatenate(frames)


def mask_camera(
    grid: OccGrid,
    occupied: torch.Tensor,  # [F, X, Y, Z] bool
    origins: torch.Tensor,  # [R, 3] camera centre, ego frame
    directions: torch.Tensor,  # [R, 3] unit pixel rays, ego frame
    frame: torch.Tensor,  # [R] int64 in 0..F-1
) -> torch.Tensor:
    """Voxels visible from a camera: [F, X, Y, Z] bool."""
    traversal = traverse_grid(grid, origins, directions, float("inf"), occupied, frame)
    return _mask(traversal, frame)
