"""Neural Kernel Surface Reconstruction (NKSR, Huang et al. CVPR 2023), used only when `import nksr` works.

NKSR needs a CUDA build of its own (https://github.com/nv-tlabs/NKSR); the PyPI name `nksr` is
an empty placeholder. Its pretrained kernel is part of the package install. Each group is
reconstructed on its own and its dual mesh sampled at the cloud's cell size.

Letters: N points, M surface samples.
"""

import torch

from uniscene.errors import UserError
from uniscene.occ_label.densify import Cloud, Surface, register
from uniscene.occ_label.densify.normals import estimate_normals


@register("nksr")
def nksr(cloud: Cloud, options: dict) -> Surface:
    try:
        import nksr as nksr_package

        nksr_package.Reconstructor  # noqa: B018  (the PyPI placeholder has no Reconstructor)
    except (ImportError, AttributeError) as error:
        raise UserError(
            f"occ_label.backend 'nksr' needs the NKSR package built for CUDA ({error}): install it from "
            "https://github.com/nv-tlabs/NKSR or choose backend splat or poisson"
        ) from error
    if cloud.points.device.type != "cuda":
        raise UserError("occ_label.backend 'nksr' runs on CUDA only: set device: cuda or choose backend splat or poisson")
    normal, _ = estimate_normals(cloud.points, cloud.view, cloud.group, float(options["normal_radius_m"] or 2 * cloud.cell_m))
    reconstructor = nksr_package.Reconstructor(cloud.points.device)
    points_out, groups_out = [cloud.points], [cloud.group]
    for group in torch.unique(cloud.group).tolist():
        members = cloud.group == group
        if int(members.sum()) < 16:
            continue
        field = reconstructor.reconstruct(cloud.points[members], normal[members], detail_level=float(options["nksr_detail"]))
        mesh = field.extract_dual_mesh(mise_iter=1)
        vertices = mesh.v.float()
        points_out.append(vertices)
        groups_out.append(torch.full((vertices.shape[0],), group, dtype=torch.long, device=vertices.device))
    return Surface(torch.cat(points_out), torch.cat(groups_out))
