"""Surface normals of a point cloud by PCA over sparse-voxel neighbourhoods, oriented towards the sensor.

Points are binned into cells of `radius_m`; each cell's normal is the smallest-eigenvalue
eigenvector of the covariance of all points in its 3 x 3 x 3 block of cells. Every point takes
its cell's normal, flipped to face the sensor that saw it.

Letters: N points, K cells.
"""

import torch

from uniscene.occupancy import sparse


def estimate_normals(points: torch.Tensor, view: torch.Tensor, group: torch.Tensor, radius_m: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit normals [N, 3] of points [N, 3] (view [N, 3] unit vectors towards the sensor, group [N]),
    and the covariance eigenvalues [N, 3] of each point's neighbourhood, ascending (all ones where too few points)."""
    cells = sparse.cells_of(points, radius_m)
    keys, inverse, counts = torch.unique(sparse.pack(cells, group), return_inverse=True, return_counts=True)
    p = points.double()
    # 1. Per cell: count, sum and sum of outer products.
    stats = torch.zeros((keys.numel(), 13), dtype=torch.float64, device=points.device)
    stats[:, 0] = counts.double()
    stats[:, 1:4].index_add_(0, inverse, p)
    stats[:, 4:].index_add_(0, inverse, (p[:, :, None] * p[:, None, :]).reshape(-1, 9))
    # 2. Sum over each cell's 3 x 3 x 3 block.
    cell_ijk, cell_group = sparse.unpack(keys)
    block = torch.zeros_like(stats)
    for offset in sparse.cube_offsets(1, points.device):
        found = sparse.lookup(keys, sparse.pack(cell_ijk + offset, cell_group))
        hit = found >= 0
        block[hit] += stats[found[hit]]
    # 3. Covariance and its smallest eigenvector.
    n = block[:, :1]
    mean = block[:, 1:4] / n
    covariance = block[:, 4:].reshape(-1, 3, 3) / n[:, :, None] - mean[:, :, None] * mean[:, None, :]
    values, vectors = _batched_eigh(covariance + 1e-9 * torch.eye(3, dtype=covariance.dtype, device=points.device))
    enough = block[:, 0] >= 3  # fewer neighbours: face the sensor
    normal = torch.where(enough[inverse, None], vectors[:, :, 0].float()[inverse], view)
    values = torch.where(enough[:, None], values, 1.0).float()[inverse]  # too few: isotropic, never planar
    return torch.where(((normal * view).sum(1) < 0)[:, None], -normal, normal), values


def _batched_eigh(matrices: torch.Tensor, chunk: int = 1 << 18) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.linalg.eigh of [K, 3, 3] in chunks: CUDA's batched solver asks for workspace that
    grows with K (82 GiB for the ~10^7 cells of a 40 s scene in one call)."""
    parts = [torch.linalg.eigh(matrices[i:i + chunk]) for i in range(0, matrices.shape[0], chunk)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def tangent_basis(normal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two unit vectors [N, 3] orthogonal to each other and to unit normals [N, 3]."""
    helper = torch.where((normal[:, 2].abs() < 0.9)[:, None], torch.tensor([0.0, 0.0, 1.0], device=normal.device),
                         torch.tensor([1.0, 0.0, 0.0], device=normal.device))
    u = torch.nn.functional.normalize(torch.linalg.cross(normal, helper), dim=1)
    return u, torch.linalg.cross(normal, u)
