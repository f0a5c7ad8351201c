"""Ray traversal of the occupancy grid (Amanatides & Woo's DDA), vectorised over rays in torch.

Used wherever rays meet voxels: which voxels a LiDAR ray observed as free (`mask_lidar`),
which voxels a camera sees (`mask_camera`), and the first hit of a simulated LiDAR beam.
All rays advance together one voxel per iteration, so the loop runs at most X + Y + Z times
whatever the number of rays. On CUDA, where Triton imports, one kernel walks each ray to its
end in a GPU thread instead (raycast_triton.py), same semantics.

Letters: N rays; X Y Z grid.
"""

import functools
from dataclasses import dataclass

import torch

from uniscene.grid import OccGrid

END_EXITED = 0  # left the grid (or never entered it) before anything stopped it
END_OCCUPIED = 1  # stopped at the first occupied voxel
END_RANGE = 2  # reached its max range inside the grid (e.g. a LiDAR return)


@dataclass
class Traversal:
    """Result of `traverse_grid`.

    visited: [X, Y, Z] bool ([G, X, Y, Z] with grid_index), voxels that some ray crossed before the
        voxel where it ended.
    end_voxel: [N, 3] int64, the voxel where each ray ended (-1 where it ended outside).
    end_range_m: [N] float32, distance along the ray to where it entered `end_voxel` (inf if none).
    end_reason: [N] int8, END_EXITED, END_OCCUPIED or END_RANGE.
    """

    visited: torch.Tensor
    end_voxel: torch.Tensor
    end_range_m: torch.Tensor
    end_reason: torch.Tensor


def traverse_grid(
    grid: OccGrid,
    origins: torch.Tensor,  # [N, 3] ego-frame metres
    directions: torch.Tensor,  # [N, 3] unit vectors
    max_range_m: torch.Tensor | float = float("inf"),  # [N] or scalar
    occupied: torch.Tensor | None = None,  # [X, Y, Z] bool (or [G, X, Y, Z] with grid_index): rays stop at the first occupied voxel
    grid_index: torch.Tensor | None = None,  # [N] int64: each ray walks its own one of G grids (frames of a batch)
    num_grids: int | None = None,  # G, where occupied is None
) -> Traversal:
    """Walk each ray voxel by voxel from its origin until it is stopped or leaves the grid.

    With `grid_index`, G grids of the same geometry (e.g. the frames of a batch, each with its own
    occupancy) are walked in one loop, and `visited` is [G, X, Y, Z].
    """
    if origins.ndim != 2 or origins.shape[1] != 3 or directions.shape != origins.shape:
        raise ValueError(f"origins and directions must both be [N, 3], got {tuple(origins.shape)} and {tuple(directions.shape)}")
    device = origins.device
    n = origins.shape[0]
    batched = grid_index is not None
    if batched:
        if occupied is not None:
            num_grids = occupied.shape[0]
        if num_grids is None or grid_index.shape != (n,):
            raise ValueError("grid_index needs one grid per ray ([N]) and occupied [G, X, Y, Z] or num_grids")
    else:
        num_grids = 1
        grid_index = torch.zeros(n, dtype=torch.long, device=device)
    expected = ((num_grids,) if batched else ()) + grid.shape
    if occupied is not None and tuple(occupied.shape) != expected:
        raise ValueError(f"occupied has shape {tuple(occupied.shape)}, expected {expected} for grid {grid.shape}")
    max_range = torch.as_tensor(max_range_m, dtype=torch.float64, device=device).expand(n)
    if device.type == "cuda" and _triton_walk() is not None:
        visited, end_voxel, end_range, end_reason = _triton_walk()(grid, origins, directions, max_range, occupied, grid_index, num_grids)
        return Traversal(visited.view(expected), end_voxel, end_range, end_reason)
    shape = torch.tensor(grid.shape, device=device)
    origins = origins.double()
    directions = directions.double()
    lower = torch.tensor(grid.lower_m, device=device, dtype=torch.float64)
    upper = torch.tensor(grid.upper_m, device=device, dtype=torch.float64)
    voxel = grid.voxel_size_m

    # 1. Clip each ray to the grid's box (slab test).
    safe_dir = torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12), directions)
    t_a = (lower - origins) / safe_dir
    t_b = (upper - origins) / safe_dir
    t_enter = torch.minimum(t_a, t_b).amax(1).clamp(min=0.0)
    t_exit = torch.maximum(t_a, t_b).amin(1)
    entering = t_enter < torch.minimum(t_exit, max_range)
    t_stop = torch.where(max_range < t_exit, max_range, float("inf"))  # rays that outrun the grid leave it (END_EXITED)

    # 2. Starting voxel, step direction, distance to the next boundary along each axis.
    start = origins + directions * (t_enter + 1e-9)[:, None]
    index = torch.floor((start - lower) / voxel).long()
    index = torch.minimum(torch.maximum(index, torch.zeros_like(index)), shape - 1)
    step = torch.where(directions >= 0, 1, -1)
    t_delta = voxel / directions.abs().clamp(min=1e-12)
    boundary = lower + (index + (step > 0).long()) * voxel
    t_next = (boundary - origins) / safe_dir

    volume = grid.shape[0] * grid.shape[1] * grid.shape[2]
    visited = torch.zeros(num_grids * volume, dtype=torch.bool, device=device)
    occupied_flat = occupied.reshape(-1) if occupied is not None else None
    end_voxel = torch.full((n, 3), -1, dtype=torch.long, device=device)
    end_range = torch.full((n,), float("inf"), dtype=torch.float64, device=device)
    end_reason = torch.zeros(n, dtype=torch.int8, device=device)
    strides = torch.tensor([grid.shape[1] * grid.shape[2], grid.shape[2], 1], device=device)

    # 3. March the active rays one voxel per iteration. The state holds active rays only, packed
    #    into one float and one int matrix so that dropping finished rays is two gathers.
    ray = torch.nonzero(entering).squeeze(1)
    real = torch.cat([t_next, t_delta, t_enter[:, None], t_stop[:, None]], 1)[ray]  # [A, 8]
    whole = torch.cat([index, step, (grid_index * volume)[:, None], torch.arange(n, device=device)[:, None]], 1)[ray]  # [A, 8]
    trash = visited.numel()  # moving rays write their voxel, the others write here
    visited = torch.cat([visited, visited.new_zeros(1)])
    while whole.shape[0] > 0:
        index = whole[:, 0:3]
        flat = whole[:, 6] + (index * strides).sum(1)
        hit = occupied_flat[flat] if occupied_flat is not None else torch.zeros_like(flat, dtype=torch.bool)
        t_leave, axis = real[:, 0:3].min(1)
        done = hit | (t_leave >= real[:, 7])
        finished = torch.nonzero(done).squeeze(1)
        if finished.numel():
            rays = whole[finished, 7]
            end_voxel[rays] = index[finished]
            end_range[rays] = real[finished, 6]
            end_reason[rays] = torch.where(hit[finished], END_OCCUPIED, END_RANGE).to(torch.int8)
        visited[torch.where(done, trash, flat)] = True
        axis = axis[:, None]
        whole.scatter_add_(1, axis, whole[:, 3:6].gather(1, axis))
        real.scatter_add_(1, axis, real[:, 3:6].gather(1, axis))
        real[:, 6] = t_leave
        stepped = whole.gather(1, axis)[:, 0]
        keep = ~done & (stepped >= 0) & (stepped < shape[axis[:, 0]])
        if not bool(keep.all()):
            kept = torch.nonzero(keep).squeeze(1)
            whole, real = whole[kept], real[kept]
    return Traversal(visited[:trash].view(expected), end_voxel, end_range.float(), end_reason)


@functools.cache
def _triton_walk():
    """raycast_triton.walk, or None where Triton does not import (CPU-only PyTorch)."""
    try:
        from uniscene.ops.raycast_triton import walk
    except ImportError:
        return None
    return walk
