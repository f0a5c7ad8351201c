"""The default backend: normal-aware hole closing by splatting tangent disks into sparse cells.

Every point on a locally flat patch (surface variation at most `splat_max_variation`) splats a
disk of radius `splat_radius_m`, in its tangent plane, onto cells of the
cloud's cell size. A cell that holds no point is filled only when splats reach it from two
roughly opposite directions: it lies *between* surface points (a gap between LiDAR rings, a
missed patch of wall), not beyond the edge of a surface. This is a morphological closing along
the surface, so ground and walls become continuous without growing thicker or wider. Pure
torch on sparse keys: the same code on the CPU and on CUDA, memory proportional to the surface.

Letters: N points, D disk offsets, K cells.
"""

import math

import torch

from uniscene.occ_label import sparse
from uniscene.occ_label.densify import Cloud, Surface, register
from uniscene.occ_label.densify.normals import estimate_normals, tangent_basis

# The 26 directions of the 3 x 3 x 3 cube (a cell's neighbours), and which pairs are opposite
# enough (angle > ~110 deg) to say that a cell lies between two splatting points.
_DIRECTIONS = sparse.cube_offsets(1)
_DIRECTIONS = _DIRECTIONS[_DIRECTIONS.abs().sum(1) > 0].float()
_DIRECTIONS = _DIRECTIONS / _DIRECTIONS.norm(dim=1, keepdim=True)  # [26, 3]
_OPPOSITE = (_DIRECTIONS @ _DIRECTIONS.T) < -0.35  # [26, 26]
_OPPOSITE_BITS = (_OPPOSITE.long() << torch.arange(26)).sum(1)  # [26] bitmask of each direction's opposites


@register("splat")
def splat(cloud: Cloud, options: dict) -> Surface:
    radius_m = float(options["splat_radius_m"])
    normal_radius_m = float(options["normal_radius_m"] or 2 * cloud.cell_m)
    max_samples = int(options["max_samples"])
    max_variation = float(options["splat_max_variation"])
    device = cloud.points.device
    if cloud.points.shape[0] == 0:
        return Surface(cloud.points, cloud.group)
    normal, eigenvalues = estimate_normals(cloud.points, cloud.view, cloud.group, normal_radius_m)
    total = eigenvalues.sum(1).clamp(min=1e-12)
    # a plane: thin across (small surface variation). Edges, corners and clutter splat no disk.
    planar = eigenvalues[:, 0] <= max_variation * total
    splats = torch.nonzero(planar).squeeze(1)
    tangent_u, tangent_v = tangent_basis(normal[splats])
    centres, groups = cloud.points[splats], cloud.group[splats]

    # 1. Disk offsets in cell units (the centre excluded), and the direction bin of each.
    k = max(1, math.ceil(radius_m / cloud.cell_m))
    a, b = torch.meshgrid(torch.arange(-k, k + 1, device=device), torch.arange(-k, k + 1, device=device), indexing="ij")
    keep = (a**2 + b**2 <= (radius_m / cloud.cell_m) ** 2) & ((a != 0) | (b != 0))
    a, b = a[keep].float() * cloud.cell_m, b[keep].float() * cloud.cell_m  # [D]

    # 2. Splat in chunks of points; keep one (cell, direction) record per chunk.
    keys, bins, sums, counts = [], [], [], []
    per_chunk = max(1, max_samples // a.numel())
    directions = _DIRECTIONS.to(device)
    for start in range(0, centres.shape[0], per_chunk):
        stop = start + per_chunk
        offset = a[None, :, None] * tangent_u[start:stop, None] + b[None, :, None] * tangent_v[start:stop, None]  # [n, D, 3]
        samples = (centres[start:stop, None] + offset).reshape(-1, 3)
        group = groups[start:stop, None].expand(-1, a.numel()).reshape(-1)
        direction_bin = (offset.reshape(-1, 3) @ directions.T).argmax(1)  # where the sample lies from its point
        chunk_keys, key_index = torch.unique(sparse.pack(sparse.cells_of(samples, cloud.cell_m), group), return_inverse=True)
        unique, inverse = torch.unique(key_index * 32 + direction_bin, return_inverse=True)
        sum_xyz = torch.zeros((unique.numel(), 3), dtype=torch.float64, device=device).index_add_(0, inverse, samples.double())
        keys.append(chunk_keys[unique // 32])
        bins.append(unique % 32)
        sums.append(sum_xyz)
        counts.append(torch.bincount(inverse, minlength=unique.numel()))

    if not keys:
        return Surface(cloud.points, cloud.group)
    # 3. Per cell: the set of directions it was reached from, and the mean of its samples.
    cell_keys, inverse = torch.unique(torch.cat(keys), return_inverse=True)
    pair = torch.unique(inverse * 32 + torch.cat(bins))
    reached = torch.zeros(cell_keys.numel(), dtype=torch.long, device=device).index_add_(0, pair // 32, 1 << (pair % 32))
    between = torch.zeros_like(reached, dtype=torch.bool)
    for direction, opposite_bits in enumerate(_OPPOSITE_BITS.tolist()):
        between |= ((reached >> direction) & 1).bool() & ((reached & opposite_bits) != 0)
    mean = torch.zeros((cell_keys.numel(), 3), dtype=torch.float64, device=device).index_add_(0, inverse, torch.cat(sums))
    mean /= torch.zeros(cell_keys.numel(), dtype=torch.float64, device=device).index_add_(0, inverse, torch.cat(counts).double())[:, None]

    # 4. Filled cells that hold no cloud point join the cloud.
    own = sparse.pack(sparse.cells_of(cloud.points, cloud.cell_m), cloud.group)
    new = between & (sparse.lookup(torch.unique(own), cell_keys) < 0)
    _, new_group = sparse.unpack(cell_keys[new])
    return Surface(torch.cat([cloud.points, mean[new].float()]), torch.cat([cloud.group, new_group]))
