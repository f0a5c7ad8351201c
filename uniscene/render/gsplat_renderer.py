"""gsplat's CUDA rasteriser (gsplat >= 1.5), behind the interface of `torch_renderer.rasterization`.

gsplat is imported only when called: it is an optional dependency (`pip install 'uniscene[gpu]'`),
compiles its CUDA extension on first use (about 80 s; keep TORCH_EXTENSIONS_DIR between runs),
and does not run on the CPU.

Letters: C cameras, N Gaussians, D feature channels, H W pixels.
"""

import torch

from uniscene.errors import UserError


def gsplat_available() -> bool:
    """Whether gsplat imports and a CUDA device is visible."""
    if not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def rasterization(
    means: torch.Tensor,  # [N, 3]
    quats: torch.Tensor,  # [N, 4] (w, x, y, z)
    scales: torch.Tensor,  # [N, 3]
    opacities: torch.Tensor,  # [N]
    colors: torch.Tensor,  # [N, D] or [C, N, D]
    viewmats: torch.Tensor,  # [C, 4, 4] camera_from_world
    Ks: torch.Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    tile_size: int = 16,
    backgrounds: torch.Tensor | None = None,  # [C, D]
    render_mode: str = "RGB",
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """`gsplat.rasterization` in classic mode with post-activation features (no SH), unpacked.

    Returns render_colors [C, H, W, X], render_alphas [C, H, W, 1] and gsplat's meta.
    """
    try:
        from gsplat import rasterization as gsplat_rasterization
    except ImportError as error:
        raise UserError(
            "render.backend 'gsplat' needs the gsplat package (pip install 'uniscene[gpu]', with a CUDA torch): "
            "install it or set render.backend to torch or auto"
        ) from error
    if means.device.type != "cuda":
        raise UserError("render.backend 'gsplat' runs on CUDA only: set device to cuda (or auto on a GPU machine) or render.backend to torch")
    return gsplat_rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        near_plane=near_plane,
        far_plane=far_plane,
        eps2d=eps2d,
        sh_degree=None,
        packed=False,
        tile_size=tile_size,
        backgrounds=backgrounds,
        render_mode=render_mode,
        rasterize_mode="classic",
    )
