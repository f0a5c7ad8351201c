"""Ray traversal of the occupancy grid (Amanatides & Woo's DDA), vectorised over rays in torch.

Used wherever rays meet voxels: which voxels a LiDAR ray observed as free (`mask_lidar`),
which voxels a camera sees (`mask_camera`), and the first hit of a simulated LiDAR beam.
All rays advance together one voxel per iteration, so the loop runs at most X + Y + Z times
whatever the number of rays; on CUDA it is a few kernels per step.

Letters: N rays; X Y Z grid.
"""

from dataclasses import dataclass

import torch

from uniscene.grid import OccGrid

END_EXITED = 0  # left the grid (or never entered it) before anything stopped it
END_OCCUPIED = 1  # stopped at the first occupied voxel
END_RANGE = 2  # reached its max range inside the grid (e.g. a LiDAR return)


@dataclass
class Traversal:
    """Result of `traverse_grid`.

    visited: [X, Y, Z] bool, voxels that some ray crossed before the voxel where it ended.
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
    occupied: torch.Tensor | None = None,  # [X, Y, Z] bool: rays stop at the first occupied voxel
) -> Traversal:
    """Walk each ray voxel by voxel from its origin until it is stopped or leaves the grid."""
    if origins.ndim != 2 or origins.shape[1] != 3 or directions.shape != origins.shape:
        raise ValueError(f"origins and directions must both be [N, 3], got {tuple(origins.shape)} and {tuple(directions.shape)}")
    device = origins.device
    shape = torch.tensor(grid.shape, device=device)
    if occupied is not None and tuple(occupied.shape) != grid.shape:
        raise ValueError(f"occupied has shape {tuple(occupied.shape)}, the grid is {grid.shape}")
    n = origins.shape[0]
    origins = origins.double()
    directions = directions.double()
    lower = torch.tensor(grid.lower_m, device=device, dtype=torch.float64)
    upper = torch.tensor(grid.upper_m, device=device, dtype=torch.float64)
    voxel = grid.voxel_size_m
    max_range = torch.as_tensor(max_range_m, dtype=torch.float64, device=device).expand(n).clone()

    # 1. Clip each ray to the grid's box (slab test).
    safe_dir = torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12), directions)
    t_a = (lower - origins) / safe_dir
    t_b = (upper - origins) / safe_dir
    t_enter = torch.minimum(t_a, t_b).amax(1).clamp(min=0.0)
    t_exit = torch.maximum(t_a, t_b).amin(1)
    t_stop = torch.minimum(t_exit, max_range)

    # 2. Starting voxel, step direction, distance to the next boundary along each axis.
    start = origins + directions * (t_enter + 1e-9)[:, None]
    index = torch.floor((start - lower) / voxel).long()
    index = torch.minimum(torch.maximum(index, torch.zeros_like(index)), shape - 1)
    step = torch.where(directions >= 0, 1, -1)
    t_delta = voxel / directions.abs().clamp(min=1e-12)
    boundary = lower + (index + (step > 0).long()) * voxel
    t_next = (boundary - origins) / safe_dir
    t_now = t_enter.clone()

    visited = torch.zeros(grid.shape, dtype=torch.bool, device=device)
    end_voxel = torch.full((n, 3), -1, dtype=torch.long, device=device)
    end_range = torch.full((n,), float("inf"), dtype=torch.float64, device=device)
    end_reason = torch.zeros(n, dtype=torch.int8, device=device)
    active = torch.nonzero(t_enter < t_stop).squeeze(1)
    yz = grid.shape[1] * grid.shape[2]

    # 3. March all active rays one voxel per iteration.
    while active.numel() > 0:
        idx = index[active]
        flat = idx[:, 0] * yz + idx[:, 1] * grid.shape[2] + idx[:, 2]
        hit = occupied.view(-1)[flat] if occupied is not None else torch.zeros_like(flat, dtype=torch.bool)
        t_leave, axis = t_next[active].min(1)
        reach = ~hit & (t_leave >= t_stop[active])
        done = hit | reach
        if done.any():
            finished = active[done]
            end_voxel[finished] = idx[done]
            end_range[finished] = t_now[finished]
            end_reason[finished] = torch.where(hit[done], END_OCCUPIED, END_RANGE).to(torch.int8)
        moving = ~done
        visited.view(-1)[flat[moving]] = True
        rays = active[moving]
        axis = axis[moving]
        rows = torch.arange(rays.numel(), device=device)
        t_now[rays] = t_leave[moving]
        new_index = index[rays]
        new_index[rows, axis] += step[rays][rows, axis]
        index[rays] = new_index
        new_next = t_next[rays]
        new_next[rows, axis] += t_delta[rays][rows, axis]
        t_next[rays] = new_next
        inside = ((new_index >= 0) & (new_index < shape)).all(1)
        active = rays[inside]
    return Traversal(visited, end_voxel, end_range.float(), end_reason)
