"""Surface normals of a point cloud by PCA over sparse-voxel neighbourhoods, oriented towards the sensor.

Points are binned into cells of `radius_m`; each cell's normal is the smallest-eigenvalue
eigenvector of the covariance of all points in its 3 x 3 x 3 block of cells. Every point takes
its cell's normal, flipped to face the sensor that saw it.

Letters: N points, K cells.
"""

import torch

from uniscene.occ_label import sparse


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
    values, smallest_vector = _smallest_eigen(covariance + 1e-9 * torch.eye(3, dtype=covariance.dtype, device=points.device))
    enough = block[:, 0] >= 3  # fewer neighbours: face the sensor
    normal = torch.where(enough[inverse, None], smallest_vector.float()[inverse], view)
    values = torch.where(enough[:, None], values, 1.0).float()[inverse]  # too few: isotropic, never planar
    return torch.where(((normal * view).sum(1) < 0)[:, None], -normal, normal), values


def _smallest_eigen(covariance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues [K, 3] (ascending) and the smallest one's unit eigenvector [K, 3] of symmetric
    3 x 3 matrices [K, 3, 3], in closed form (Smith 1961). torch.linalg.eigh on CUDA asked for
    82 GiB of workspace for the ~10^7 cells of a 40 s scene, chunked or not."""
    a = covariance
    q = a.diagonal(dim1=1, dim2=2).sum(1) / 3
    off = a[:, 0, 1] ** 2 + a[:, 0, 2] ** 2 + a[:, 1, 2] ** 2
    p = torch.sqrt(((a.diagonal(dim1=1, dim2=2) - q[:, None]) ** 2).sum(1) / 6 + off / 3)
    eye = torch.eye(3, dtype=a.dtype, device=a.device)
    b = (a - q[:, None, None] * eye) / p.clamp(min=1e-30)[:, None, None]
    phi = torch.acos((torch.linalg.det(b) / 2).clamp(-1.0, 1.0)) / 3
    largest = q + 2 * p * torch.cos(phi)
    smallest = q + 2 * p * torch.cos(phi + 2 * torch.pi / 3)
    values = torch.stack([smallest, 3 * q - largest - smallest, largest], 1)
    # The smallest eigenvector is orthogonal to the rows of (A - l I): the longest cross product of two rows.
    rows = a - smallest[:, None, None] * eye
    crosses = torch.stack([torch.linalg.cross(rows[:, 0], rows[:, 1]), torch.linalg.cross(rows[:, 0], rows[:, 2]),
                           torch.linalg.cross(rows[:, 1], rows[:, 2])], 1)  # [K, 3, 3]
    best = crosses.norm(dim=2).argmax(1)
    vector = crosses[torch.arange(a.shape[0], device=a.device), best]
    return values, torch.nn.functional.normalize(vector, dim=1)


def tangent_basis(normal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two unit vectors [N, 3] orthogonal to each other and to unit normals [N, 3]."""
    helper = torch.where((normal[:, 2].abs() < 0.9)[:, None], torch.tensor([0.0, 0.0, 1.0], device=normal.device),
                         torch.tensor([1.0, 0.0, 0.0], device=normal.device))
    u = torch.nn.functional.normalize(torch.linalg.cross(normal, helper), dim=1)
    return u, torch.linalg.cross(normal, u)
