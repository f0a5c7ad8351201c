"""Joint rendering of occupancy into per-camera semantic and depth maps: the stage's core.

One frame's occupancy (with the layout's road markings) becomes Gaussians (`gaussians.py`),
which one rasterisation pass renders into every camera: the one-hot class features and the
alpha-normalised expected z-depth together. The semantic map is the arg-max class where the
alpha reaches `min_alpha`, RENDER_BACKGROUND elsewhere. On CUDA the rasteriser is gsplat;
elsewhere the pure-PyTorch one, with the same interface and results.

Letters: V cameras, H W pixels, X Y Z grid, M marking layers, R render classes.
"""

from dataclasses import dataclass

import numpy as np
import torch

from uniscene.classes import NUM_RENDER_CLASSES, RENDER_BACKGROUND
from uniscene.errors import UserError
from uniscene.grid import OccGrid
from uniscene.render import gsplat_renderer, torch_renderer
from uniscene.render.cameras import viewmats_from_cameras
from uniscene.render.gaussians import occupancy_gaussians
from uniscene.settings import Settings

BACKENDS = ("auto", "gsplat", "torch")


@dataclass(frozen=True)
class RenderSettings(Settings):
    """The render stage's config section `render` (uniscene/schemas/config.schema.yaml: meanings and defaults)."""

    SECTION = "render"

    source: str  # occupancy rendered: label | generated
    image_size: tuple[int, ...] | None  # (H, W) of the maps; None: the dataset's camera images
    scale_voxels: float  # Gaussian standard deviation, in voxels
    min_alpha: float  # pixels with less alpha are background in the semantic map
    near_plane_m: float
    backend: str  # auto (gsplat on CUDA, else torch) | gsplat | torch

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise UserError(f"config key render.backend is {self.backend!r}: choose one of {', '.join(BACKENDS)}")


@dataclass
class RenderedMaps:
    """Per-camera maps of one frame.

    Tensors on the render device: semantic [V, H, W] uint8 render class (RENDER_BACKGROUND
    where alpha < min_alpha); depth [V, H, W] float32 alpha-normalised expected z-depth in
    metres (0 where alpha is 0); alpha [V, H, W] float32 accumulated opacity.
    """

    semantic: torch.Tensor
    depth: torch.Tensor
    alpha: torch.Tensor

    def numpy(self) -> dict:
        return {"semantic": self.semantic.cpu().numpy(), "depth": self.depth.cpu().numpy(), "alpha": self.alpha.cpu().numpy()}


def select_backend(settings: RenderSettings, device: str) -> str:
    """The rasteriser to use: gsplat on CUDA where it imports (auto), else the PyTorch one."""
    if settings.backend == "auto":
        return "gsplat" if torch.device(device).type == "cuda" and gsplat_renderer.gsplat_available() else "torch"
    return settings.backend


def rasterizer(backend: str):
    """The `rasterization` function of a backend name ("gsplat" or "torch")."""
    return {"gsplat": gsplat_renderer.rasterization, "torch": torch_renderer.rasterization}[backend]


def render_occupancy(
    semantics: np.ndarray,  # [X, Y, Z] uint8 occupancy classes (17 free)
    grid: OccGrid,
    ego_from_cam: np.ndarray,  # [V, 4, 4] OpenCV camera axes
    intrinsics: np.ndarray,  # [V, 3, 3] K at the render size
    render_size_hw: tuple,  # (H, W)
    markings: np.ndarray | None,  # [M, X, Y] bool road-marking layers of the layout (None: no markings)
    settings: RenderSettings,
    device: str = "cpu",
    backend: str = "torch",
) -> RenderedMaps:
    """Render one frame's occupancy into V cameras (semantic, depth and alpha in one pass)."""
    ego_from_cam = np.asarray(ego_from_cam)
    intrinsics = np.asarray(intrinsics)
    if ego_from_cam.ndim != 3 or ego_from_cam.shape[1:] != (4, 4) or intrinsics.shape != (ego_from_cam.shape[0], 3, 3):
        raise ValueError(f"ego_from_cam [V, 4, 4] and intrinsics [V, 3, 3] expected, got {ego_from_cam.shape} and {intrinsics.shape}")
    height, width = int(render_size_hw[0]), int(render_size_hw[1])
    gaussians = occupancy_gaussians(semantics, grid, markings, settings.scale_voxels, device)
    num_cameras = ego_from_cam.shape[0]
    if gaussians.means.shape[0] == 0:  # nothing occupied: background everywhere
        shape = (num_cameras, height, width)
        return RenderedMaps(
            torch.full(shape, RENDER_BACKGROUND, dtype=torch.uint8, device=device),
            torch.zeros(shape, device=device),
            torch.zeros(shape, device=device),
        )
    viewmats = torch.as_tensor(viewmats_from_cameras(ego_from_cam), device=device)
    ks = torch.as_tensor(intrinsics, dtype=torch.float32, device=device)
    render_colors, render_alphas, _ = rasterizer(backend)(
        gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities, gaussians.features,
        viewmats, ks, width, height, near_plane=settings.near_plane_m, render_mode="RGB+ED",
    )
    features = render_colors[..., :NUM_RENDER_CLASSES]  # [V, H, W, R]
    alpha = render_alphas[..., 0]
    semantic = torch.where(alpha >= settings.min_alpha, features.argmax(-1), RENDER_BACKGROUND).to(torch.uint8)
    return RenderedMaps(semantic, render_colors[..., -1], alpha)
