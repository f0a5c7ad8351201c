"""Occupancy to Gaussians: one isotropic Gaussian per occupied voxel, its class as a one-hot feature.

Before the conversion, the road markings of the BEV layout (ped crossings, road and lane
dividers) repaint the ground voxel of their column with their own render class, so that the
markings reach the images (`uniscene.classes.RENDER_CLASS_NAMES`).

Letters: N Gaussians, X Y Z grid, R render classes (20).
"""

from dataclasses import dataclass

import numpy as np
import torch

from uniscene.classes import FREE, LAYOUT_CHANNEL_NAMES, NUM_RENDER_CLASSES, OCC_CLASS_ID, RENDER_BACKGROUND, RENDER_CLASS_NAMES
from uniscene.grid import OccGrid

# Layout layers painted onto the ground, in painting order (a later layer wins where they overlap).
MARKING_LAYERS = ("ped_crossing", "road_divider", "lane_divider")
# Ground classes that a marking may repaint: the road surface.
PAINTABLE_CLASSES = (OCC_CLASS_ID["driveable_surface"], OCC_CLASS_ID["other_flat"])


@dataclass
class Gaussians:
    """3D Gaussians in the ego frame, in gsplat's parameterisation.

    means: [N, 3] float32 metres. quats: [N, 4] float32 (w, x, y, z). scales: [N, 3] float32
    standard deviations in metres. opacities: [N] float32. classes: [N] int64 render class.
    features: [N, R] float32 one-hot of `classes`.
    """

    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    classes: torch.Tensor
    features: torch.Tensor


def marking_layers(layout: np.ndarray, channel_names=LAYOUT_CHANNEL_NAMES) -> np.ndarray:
    """The road-marking layers of a BEV layout: [C, X, Y] bool -> [len(MARKING_LAYERS), X, Y] bool."""
    index = {name: i for i, name in enumerate(channel_names)}
    missing = [name for name in MARKING_LAYERS if name not in index]
    if missing:
        raise ValueError(f"layout channels {list(channel_names)} lack the marking layers {missing}")
    return np.asarray(layout)[[index[name] for name in MARKING_LAYERS]].astype(bool)


def render_class_grid(semantics, markings=None) -> torch.Tensor:
    """Render class of every voxel, [X, Y, Z] uint8 tensor: 0..19, RENDER_BACKGROUND where free.

    semantics: [X, Y, Z] uint8 occupancy classes (0..16, FREE), array or tensor (its device is
    used). markings: [M, X, Y] bool, the MARKING_LAYERS of the layout on the same x-y grid, or
    None. In each marked column the topmost occupied voxel takes the marking's class when that
    voxel is road surface (PAINTABLE_CLASSES).
    """
    semantics = torch.as_tensor(semantics)
    if semantics.ndim != 3:
        raise ValueError(f"semantics must be [X, Y, Z], got shape {tuple(semantics.shape)}")
    device = semantics.device
    occupied = semantics != FREE  # [X, Y, Z]
    classes = torch.where(occupied, semantics, RENDER_BACKGROUND).to(torch.uint8)
    if markings is None:
        return classes
    markings = torch.as_tensor(markings, device=device).bool()
    if tuple(markings.shape) != (len(MARKING_LAYERS),) + tuple(semantics.shape[:2]):
        raise ValueError(
            f"markings must be [{len(MARKING_LAYERS)}, X, Y] = {(len(MARKING_LAYERS),) + tuple(semantics.shape[:2])}, "
            f"got {tuple(markings.shape)}"
        )
    # 1. The topmost occupied voxel of each column, and whether it is road surface.
    z_size = semantics.shape[2]
    top = z_size - 1 - torch.argmax(occupied.flip(2).to(torch.uint8), dim=2)  # [X, Y]
    top_class = torch.gather(semantics, 2, top[:, :, None])[:, :, 0]
    paintable = occupied.any(2) & torch.isin(top_class, torch.tensor(PAINTABLE_CLASSES, dtype=semantics.dtype, device=device))
    # 2. Paint the layers in order (a later layer wins) onto the top voxels.
    column_class = torch.full(semantics.shape[:2], RENDER_BACKGROUND, dtype=torch.uint8, device=device)
    for name, layer in zip(MARKING_LAYERS, markings):
        column_class = torch.where(layer & paintable, RENDER_CLASS_NAMES.index(name), column_class).to(torch.uint8)
    painted = (torch.arange(z_size, device=device) == top[:, :, None]) & (column_class != RENDER_BACKGROUND)[:, :, None]
    return torch.where(painted, column_class[:, :, None], classes)


def voxel_gaussians(render_classes: torch.Tensor, grid: OccGrid, scale_voxels: float) -> Gaussians:
    """One Gaussian per non-free voxel of render classes [X, Y, Z] uint8 (RENDER_BACKGROUND free), on their device.

    Each sits at its voxel's exact centre, standard deviation `scale_voxels` voxel edges, opacity 1.
    """
    if tuple(render_classes.shape) != grid.shape:
        raise ValueError(f"render classes have shape {tuple(render_classes.shape)}, the grid is {grid.shape}")
    classes = render_classes
    device = classes.device
    ijk = torch.nonzero(classes != RENDER_BACKGROUND)  # [N, 3]
    n = ijk.shape[0]
    lower = torch.as_tensor(grid.lower_m, dtype=torch.float64, device=device)
    means = (lower + (ijk.double() + 0.5) * grid.voxel_size_m).float()
    voxel_classes = classes[ijk[:, 0], ijk[:, 1], ijk[:, 2]].long()
    return Gaussians(
        means=means,
        quats=torch.tensor([1.0, 0.0, 0.0, 0.0], device=device).expand(n, 4).contiguous(),
        scales=torch.full((n, 3), scale_voxels * grid.voxel_size_m, device=device),
        opacities=torch.ones(n, device=device),
        classes=voxel_classes,
        features=torch.nn.functional.one_hot(voxel_classes, NUM_RENDER_CLASSES).float(),
    )


def occupancy_gaussians(
    semantics,  # [X, Y, Z] uint8 occupancy classes (FREE = 17), array or tensor
    grid: OccGrid,
    markings,  # [M, X, Y] bool marking layers, or None
    scale_voxels: float,
    device: str | torch.device = "cpu",
) -> Gaussians:
    """Occupancy (with road markings painted on the ground) to Gaussians on `device`."""
    semantics = torch.as_tensor(semantics, device=device)
    markings = None if markings is None else torch.as_tensor(markings, device=device)
    return voxel_gaussians(render_class_grid(semantics, markings), grid, scale_voxels)
