"""The grid traversal of raycast.py as one Triton kernel: a GPU thread walks each ray to its end.

The torch loop in raycast.py advances every ray one voxel per iteration, reading and writing each
ray's state in GPU memory at every step; here a ray's state lives in registers for its whole walk
and only the voxels it visits are written. Same semantics, float32 arithmetic (the torch loop uses
float64; the two agree but for rays that pass within ~1e-6 m of a voxel edge). Used by
`traverse_grid` on CUDA when Triton (shipped with PyTorch's CUDA wheels) imports.

Letters: N rays.
"""

import torch
import triton
import triton.language as tl

BLOCK = 256


@triton.jit
def _walk(
    origin_ptr, direction_ptr, max_range_ptr, grid_ptr, occupied_ptr, visited_ptr,
    end_voxel_ptr, end_range_ptr, end_reason_ptr,
    n, lower_x, lower_y, lower_z, upper_x, upper_y, upper_z, voxel, size_x, size_y, size_z,
    HAS_OCCUPIED: tl.constexpr, BLOCK: tl.constexpr,
):
    ray = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = ray < n
    ox = tl.load(origin_ptr + ray * 3, mask=valid, other=0.0)
    oy = tl.load(origin_ptr + ray * 3 + 1, mask=valid, other=0.0)
    oz = tl.load(origin_ptr + ray * 3 + 2, mask=valid, other=0.0)
    dx = tl.load(direction_ptr + ray * 3, mask=valid, other=1.0)
    dy = tl.load(direction_ptr + ray * 3 + 1, mask=valid, other=1.0)
    dz = tl.load(direction_ptr + ray * 3 + 2, mask=valid, other=1.0)
    max_range = tl.load(max_range_ptr + ray, mask=valid, other=0.0)
    base = tl.load(grid_ptr + ray, mask=valid, other=0).to(tl.int64) * size_x * size_y * size_z
    # 1. Clip to the grid's box (slab test); a zero direction component counts as +1e-12.
    sx = tl.where(tl.abs(dx) < 1e-12, 1e-12, dx)
    sy = tl.where(tl.abs(dy) < 1e-12, 1e-12, dy)
    sz = tl.where(tl.abs(dz) < 1e-12, 1e-12, dz)
    ax, bx = (lower_x - ox) / sx, (upper_x - ox) / sx
    ay, by = (lower_y - oy) / sy, (upper_y - oy) / sy
    az, bz = (lower_z - oz) / sz, (upper_z - oz) / sz
    t_enter = tl.maximum(tl.maximum(tl.maximum(tl.minimum(ax, bx), tl.minimum(ay, by)), tl.minimum(az, bz)), 0.0)
    t_exit = tl.minimum(tl.minimum(tl.maximum(ax, bx), tl.maximum(ay, by)), tl.maximum(az, bz))
    active = valid & (t_enter < tl.minimum(t_exit, max_range))
    t_stop = tl.where(max_range < t_exit, max_range, float("inf"))
    # 2. First voxel, steps, distances to the next boundaries.
    t0 = t_enter + 1e-6
    ix = tl.minimum(tl.maximum(tl.floor((ox + dx * t0 - lower_x) / voxel), 0.0), size_x - 1.0).to(tl.int32)
    iy = tl.minimum(tl.maximum(tl.floor((oy + dy * t0 - lower_y) / voxel), 0.0), size_y - 1.0).to(tl.int32)
    iz = tl.minimum(tl.maximum(tl.floor((oz + dz * t0 - lower_z) / voxel), 0.0), size_z - 1.0).to(tl.int32)
    step_x = tl.where(dx >= 0, 1, -1)
    step_y = tl.where(dy >= 0, 1, -1)
    step_z = tl.where(dz >= 0, 1, -1)
    delta_x = voxel / tl.maximum(tl.abs(dx), 1e-12)
    delta_y = voxel / tl.maximum(tl.abs(dy), 1e-12)
    delta_z = voxel / tl.maximum(tl.abs(dz), 1e-12)
    next_x = (lower_x + (ix + (step_x > 0).to(tl.int32)).to(tl.float32) * voxel - ox) / sx
    next_y = (lower_y + (iy + (step_y > 0).to(tl.int32)).to(tl.float32) * voxel - oy) / sy
    next_z = (lower_z + (iz + (step_z > 0).to(tl.int32)).to(tl.float32) * voxel - oz) / sz
    t_here = t_enter
    # 3. Walk until every ray of the block has ended.
    while tl.max(active.to(tl.int32), axis=0) > 0:
        flat = base + (ix * size_y + iy) * size_z + iz
        if HAS_OCCUPIED:
            hit = tl.load(occupied_ptr + flat, mask=active, other=0) != 0
        else:
            hit = tl.zeros([BLOCK], dtype=tl.int1)
        t_leave = tl.minimum(tl.minimum(next_x, next_y), next_z)
        done = active & (hit | (t_leave >= t_stop))
        tl.store(end_voxel_ptr + ray * 3, ix, mask=done)
        tl.store(end_voxel_ptr + ray * 3 + 1, iy, mask=done)
        tl.store(end_voxel_ptr + ray * 3 + 2, iz, mask=done)
        tl.store(end_range_ptr + ray, t_here, mask=done)
        tl.store(end_reason_ptr + ray, tl.where(hit, 1, 2).to(tl.int8), mask=done)
        moving = active & ~done
        tl.store(visited_ptr + flat, tl.full([BLOCK], 1, tl.uint8), mask=moving)
        # step along the axis whose boundary comes first (ties: x, then y, then z, as torch's argmin)
        along_x = (next_x <= next_y) & (next_x <= next_z)
        along_y = ~along_x & (next_y <= next_z)
        along_z = ~along_x & ~along_y
        ix += tl.where(along_x, step_x, 0)
        iy += tl.where(along_y, step_y, 0)
        iz += tl.where(along_z, step_z, 0)
        next_x += tl.where(along_x, delta_x, 0.0)
        next_y += tl.where(along_y, delta_y, 0.0)
        next_z += tl.where(along_z, delta_z, 0.0)
        t_here = t_leave
        inside = (ix >= 0) & (ix < size_x) & (iy >= 0) & (iy < size_y) & (iz >= 0) & (iz < size_z)
        active = moving & inside


def walk(grid, origins, directions, max_range, occupied, grid_index, num_grids):
    """traverse_grid's walk on CUDA: (visited [G * X * Y * Z] bool, end_voxel [N, 3] int64, end_range [N] float32, end_reason [N] int8)."""
    n = origins.shape[0]
    device = origins.device
    volume = grid.shape[0] * grid.shape[1] * grid.shape[2]
    visited = torch.zeros(num_grids * volume, dtype=torch.uint8, device=device)
    end_voxel = torch.full((n, 3), -1, dtype=torch.int32, device=device)
    end_range = torch.full((n,), float("inf"), dtype=torch.float32, device=device)
    end_reason = torch.zeros(n, dtype=torch.int8, device=device)
    if n:
        occupied_bytes = occupied.reshape(-1).view(torch.uint8) if occupied is not None else visited
        lower, upper = grid.lower_m, grid.upper_m
        _walk[(triton.cdiv(n, BLOCK),)](
            origins.float().contiguous(), directions.float().contiguous(), max_range.float().contiguous(),
            grid_index.contiguous(), occupied_bytes, visited, end_voxel, end_range, end_reason,
            n, float(lower[0]), float(lower[1]), float(lower[2]), float(upper[0]), float(upper[1]), float(upper[2]),
            float(grid.voxel_size_m), grid.shape[0], grid.shape[1], grid.shape[2],
            HAS_OCCUPIED=occupied is not None, BLOCK=BLOCK,
        )
    return visited.bool(), end_voxel.long(), end_range, end_reason
