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

    def packed(self) -> "RenderedMaps":
        """The maps cast on their device to the dtypes render.zarr stores (STORE_DTYPES): the copy to the host then
        moves 5 bytes a pixel instead of 9, and the host does no casting. The same values as numpy's cast on the host
        (both round to nearest even)."""
        return RenderedMaps(**{name: getattr(self, name).to(dtype) for name, dtype in STORE_DTYPES.items()})

    def numpy(self) -> dict:
        return {name: getattr(self, name).cpu().numpy() for name in STORE_DTYPES}


STORE_DTYPES = {"semantic": torch.uint8, "depth": torch.float16, "alpha": torch.float16}  # render.zarr's (store_layouts)


class HostMaps:
    """Copies of packed maps into a ring of pinned host buffers, each reused once its writer is done with it.

    On CUDA a copy from the device into pinned memory runs at the bus's speed (pageable memory goes
    through a bounce buffer at about half of it); elsewhere the maps are already in host memory and
    are returned as they are. `to_host(maps)` waits for a free buffer, copies (non_blocking, then one
    synchronisation), and returns numpy views of it; `hold(future)` keeps those buffers until the
    future (the store write of the arrays) is done.
    """

    def __init__(self, slots: int = 8):
        self.slots = slots
        self._ring = []  # [(buffers, future)], oldest first
        self._last = None

    def to_host(self, maps: RenderedMaps) -> dict:
        if maps.semantic.device.type != "cuda":
            self._last = None
            return maps.numpy()
        if len(self._ring) < self.slots:
            buffers = {name: torch.empty(getattr(maps, name).shape, dtype=dtype, pin_memory=True) for name, dtype in STORE_DTYPES.items()}
        else:
            buffers, future = self._ring.pop(0)
            future.result()  # the write that reads these buffers is done
        for name, buffer in buffers.items():
            buffer.copy_(getattr(maps, name), non_blocking=True)
        torch.cuda.current_stream(maps.semantic.device).synchronize()
        self._last = buffers
        return {name: buffer.numpy() for name, buffer in buffers.items()}

    def hold(self, future) -> None:
        """The buffers of the last `to_host` stay untouched until `future` is done."""
        if self._last is not None:
            self._ring.append((self._last, future))
            self._last = None


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
