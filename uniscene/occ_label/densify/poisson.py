"""Screened Poisson surface reconstruction through Open3D (the SurroundOcc way), on the CPU.

Each group (the static scene, each object) is meshed on its own at an octree depth that
resolves the cloud's cell size; vertices of low Poisson density and those farther than one
cell from any cloud point are cut (Poisson closes every surface, LiDAR sees only one side);
the mesh is then sampled at twice the cell density. Open3D is imported only when this backend
runs: `pip install open3d-cpu` (the `poisson` extra).

Letters: N points, M surface samples.
"""

import math

import numpy as np
import torch

from uniscene.errors import UserError
from uniscene.occ_label import sparse
from uniscene.occ_label.densify import Cloud, Surface, register
from uniscene.occ_label.densify.normals import estimate_normals


@register("poisson")
def poisson(cloud: Cloud, options: dict) -> Surface:
    try:
        import open3d as o3d
    except ImportError as error:
        raise UserError(f"occ_label.backend 'poisson' needs Open3D ({error}): pip install open3d-cpu") from error
    max_depth = int(options["poisson_depth"])
    density_quantile = float(options["poisson_density_quantile"])
    normal, _ = estimate_normals(cloud.points, cloud.view, cloud.group, float(options["normal_radius_m"] or 2 * cloud.cell_m))
    own_keys = torch.unique(sparse.pack(sparse.cells_of(cloud.points, cloud.cell_m), cloud.group))
    points_out, groups_out = [cloud.points], [cloud.group]
    for group in torch.unique(cloud.group).tolist():
        members = cloud.group == group
        if int(members.sum()) < 16:
            continue  # too few points for a surface: the points themselves stay
        xyz = cloud.points[members].double().cpu().numpy()
        extent = float(np.ptp(xyz, axis=0).max())
        depth = int(min(max_depth, max(5, math.ceil(math.log2(max(extent, cloud.cell_m) / cloud.cell_m)) + 1)))
        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz))
        pcd.normals = o3d.utility.Vector3dVector(normal[members].double().cpu().numpy())
        mesh, density = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(pcd, depth=depth)
        density = np.asarray(density)
        vertices = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32, device=cloud.points.device)
        near = _near_cloud(vertices, group, own_keys, cloud.cell_m).cpu().numpy()
        mesh.remove_vertices_by_mask(~near | (density < np.quantile(density, density_quantile)))
        area = mesh.get_surface_area()
        if len(mesh.triangles) == 0 or area <= 0:
            continue
        samples = mesh.sample_points_uniformly(number_of_points=int(math.ceil(4 * area / cloud.cell_m**2)))
        xyz_out = torch.as_tensor(np.asarray(samples.points), dtype=torch.float32, device=cloud.points.device)
        points_out.append(xyz_out)
        groups_out.append(torch.full((xyz_out.shape[0],), group, dtype=torch.long, device=cloud.points.device))
    return Surface(torch.cat(points_out), torch.cat(groups_out))


def _near_cloud(vertices: torch.Tensor, group: int, own_keys: torch.Tensor, cell_m: float) -> torch.Tensor:
    """Whether each vertex [M, 3] has a cloud cell of its group within one cell: [M] bool."""
    cells = sparse.cells_of(vertices, cell_m)
    groups = torch.full((vertices.shape[0],), group, dtype=torch.long, device=vertices.device)
    near = torch.zeros(vertices.shape[0], dtype=torch.bool, device=vertices.device)
    for offset in sparse.cube_offsets(1, vertices.device):
        near |= sparse.lookup(own_keys, sparse.pack(cells + offset, groups)) >= 0
    return near
