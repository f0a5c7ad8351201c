"""Surface points -> small tangent patches, so that voxelisation marks every voxel a surface passes through.

A densified surface has about one point per cell; a voxel that the surface only clips (through a
corner) may hold none of them, while the truth (and any solid) occupies it. Each point becomes
an n x n grid of samples spanning its cell in its tangent plane: a conservative surface
voxelisation at the cost of n^2 points.

Letters: N points, P = n^2 samples per point.
"""

import torch

from uniscene.occ_label.densify.normals import estimate_normals, tangent_basis


def tangent_patches(points: torch.Tensor, group: torch.Tensor, cell_m: float, samples_per_axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples [N P, 3] around points [N, 3] (groups [N]), and the index [N P] of each sample's point."""
    index = torch.arange(points.shape[0], device=points.device)
    if samples_per_axis <= 1 or points.shape[0] == 0:
        return points, index
    up = torch.zeros_like(points)
    up[:, 2] = 1.0  # orientation does not matter for a patch
    normal, _ = estimate_normals(points, up, group, 2 * cell_m)
    u, v = tangent_basis(normal)
    steps = (torch.arange(samples_per_axis, device=points.device) + 0.5) / samples_per_axis - 0.5  # in cells
    a, b = torch.meshgrid(steps, steps, indexing="ij")
    a, b = a.reshape(-1) * cell_m, b.reshape(-1) * cell_m  # [P]
    samples = points[:, None] + a[None, :, None] * u[:, None] + b[None, :, None] * v[:, None]  # [N, P, 3]
    return samples.reshape(-1, 3), index.repeat_interleave(a.numel())
