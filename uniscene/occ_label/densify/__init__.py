"""Surface densification: turn aggregated LiDAR points into continuous surfaces, by pluggable backends.

A backend is a function `(cloud, options) -> Surface` registered under a name with `@register`.
Built in: `splat` (the default: normal-aware hole closing in sparse voxels, torch, CPU or GPU),
`poisson` (Open3D's screened Poisson reconstruction, CPU; needs `pip install open3d-cpu`) and
`nksr` (Neural Kernel Surface Reconstruction, CUDA; used only when `import nksr` works).
Backends see geometry only; labels are attached afterwards by nearest labelled point.

Letters: N cloud points, M surface points.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from uniscene.errors import UserError


@dataclass
class Cloud:
    """Points to densify, binned into cells of `cell_m` (one mean point per cell and group).

    points: [N, 3] float32 metres. view: [N, 3] float32 unit vectors from the point towards the
    sensors that saw it (orients normals). group: [N] int64; surfaces never join across groups
    (the labeller densifies one group, the static scene).
    """

    points: torch.Tensor
    view: torch.Tensor
    group: torch.Tensor
    cell_m: float


@dataclass
class Surface:
    """Densified surface samples: points [M, 3] float32, group [M] int64 (as the cloud's).

    The cloud's own N points come first, unchanged; rows N.. are what the backend added.
    """

    points: torch.Tensor
    group: torch.Tensor


Backend = Callable[[Cloud, dict], Surface]
_BACKENDS: dict[str, Backend] = {}


def register(name: str):
    """Decorator: make a backend selectable as `occ_label.backend: <name>`."""

    def wrap(function: Backend) -> Backend:
        _BACKENDS[name] = function
        return function

    return wrap


def backend_names() -> list[str]:
    return sorted(_BACKENDS)


def densify(cloud: Cloud, backend: str, options: dict) -> Surface:
    if backend not in _BACKENDS:
        raise UserError(f"config key occ_label.backend is '{backend}': choose one of {backend_names()}")
    return _BACKENDS[backend](cloud, options)


from uniscene.occ_label.densify import nksr, poisson, splat  # noqa: E402,F401  (registers the built-in backends)
