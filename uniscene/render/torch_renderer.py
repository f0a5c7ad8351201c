"""EWA splatting in pure PyTorch, with the interface and results of `gsplat.rasterization`.

The same three steps as gsplat's CUDA path, with its constants, so that both give the same
images (the gsplat tests in tests/test_render_torch.py and tests/test_render_scene.py compare
them on a GPU):

1. project: 3D Gaussians to 2D means, conics and z-depths per camera (EWA with the Jacobian of
   the pinhole projection, `eps2d` added to the 2D covariance, opacity-aware bounding boxes);
2. bin: every Gaussian-tile overlap becomes one intersection, sorted by (camera, tile, depth);
3. composite: front-to-back alpha blending per pixel (alpha = min(0.999, o exp(-sigma)),
   skipped below 1/255, stopped before the transmittance falls to 1e-4).

Step 3 is vectorised over tiles and pixels and walks each tile's depth-sorted list in
segments, carrying the transmittance, so memory stays bounded by `chunk_elements` whatever
the scene, and tiles whose pixels are all opaque stop early.

Letters: C cameras, N Gaussians, D feature channels, H W pixels, I intersections,
B tiles of a batch, P pixels of a tile, K Gaussians of a segment.
"""

import math
from dataclasses import dataclass

import torch

ALPHA_THRESHOLD = 1.0 / 255.0  # fainter contributions are skipped
MAX_ALPHA = 0.999
MIN_TRANSMITTANCE = 1e-4  # a pixel stops before its transmittance would fall to this
MAX_EXTEND = 3.33  # bounding boxes reach at most this many standard deviations
RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")


def quat_scale_to_covar(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Covariances R S S^T R^T of quaternions (w, x, y, z; any norm) [N, 4] and scales [N, 3] -> [N, 3, 3]."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    rotation = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        -1,
    ).reshape(-1, 3, 3)
    m = rotation * scales[:, None, :]
    return m @ m.transpose(-1, -2)


@dataclass
class Projection:
    """Gaussians seen by each camera.

    means2d: [C, N, 2] pixels. conics: [C, N, 3] upper triangle (a, b, c) of the inverse 2D
    covariance. depths: [C, N] camera z in metres. radii: [C, N, 2] int32 half-extent of the
    bounding box in pixels (x, y), 0 where the Gaussian is culled.
    """

    means2d: torch.Tensor
    conics: torch.Tensor
    depths: torch.Tensor
    radii: torch.Tensor


def project_gaussians(
    means: torch.Tensor,  # [N, 3] world
    covars: torch.Tensor,  # [N, 3, 3] world
    opacities: torch.Tensor,  # [N]
    viewmats: torch.Tensor,  # [C, 4, 4] camera_from_world
    Ks: torch.Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
) -> Projection:
    """EWA projection of 3D Gaussians into pinhole cameras, culled as gsplat culls them."""
    # 1. Into each camera's frame.
    rotation, translation = viewmats[:, :3, :3], viewmats[:, :3, 3]
    means_c = torch.einsum("cij,nj->cni", rotation, means) + translation[:, None, :]  # [C, N, 3]
    covars_c = torch.einsum("cij,njk,clk->cnil", rotation, covars, rotation)  # [C, N, 3, 3]
    x, y, z = means_c.unbind(-1)  # [C, N]
    in_depth = (z > near_plane) & (z < far_plane)
    z_safe = torch.where(in_depth, z, torch.ones_like(z))

    # 2. Jacobian of the projection, its lateral position clamped a little beyond the image as gsplat's.
    fx, fy, cx, cy = (Ks[:, 0, 0, None], Ks[:, 1, 1, None], Ks[:, 0, 2, None], Ks[:, 1, 2, None])  # [C, 1]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    tx = z_safe * torch.clamp(x / z_safe, min=-(cx / fx + 0.3 * tan_fovx), max=(width - cx) / fx + 0.3 * tan_fovx)
    ty = z_safe * torch.clamp(y / z_safe, min=-(cy / fy + 0.3 * tan_fovy), max=(height - cy) / fy + 0.3 * tan_fovy)
    zeros = torch.zeros_like(z)
    jacobian = torch.stack(
        [fx / z_safe, zeros, -fx * tx / z_safe**2, zeros, fy / z_safe, -fy * ty / z_safe**2], -1
    ).reshape(z.shape + (2, 3))  # [C, N, 2, 3]
    cov2d = jacobian @ covars_c @ jacobian.transpose(-1, -2)  # [C, N, 2, 2]
    means2d = torch.stack([fx * x / z_safe + cx, fy * y / z_safe + cy], -1)  # [C, N, 2]

    # 3. Blur, conic, opacity-aware bounding box (where alpha >= 1/255).
    cov00 = cov2d[..., 0, 0] + eps2d
    cov11 = cov2d[..., 1, 1] + eps2d
    cov01 = cov2d[..., 0, 1]
    det = cov00 * cov11 - cov01 * cov01
    det_safe = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([cov11 / det_safe, -cov01 / det_safe, cov00 / det_safe], -1)  # [C, N, 3]
    visible_opacity = opacities >= ALPHA_THRESHOLD  # [N]
    extend = torch.sqrt(2.0 * torch.log(opacities.clamp(min=ALPHA_THRESHOLD) / ALPHA_THRESHOLD)).clamp(max=MAX_EXTEND)
    radius_x = torch.ceil(extend * torch.sqrt(cov00.clamp(min=0)))  # [C, N]
    radius_y = torch.ceil(extend * torch.sqrt(cov11.clamp(min=0)))
    inside = (
        (means2d[..., 0] + radius_x > 0)
        & (means2d[..., 0] - radius_x < width)
        & (means2d[..., 1] + radius_y > 0)
        & (means2d[..., 1] - radius_y < height)
    )
    valid = in_depth & (det > 0) & visible_opacity & inside
    radii = torch.stack([radius_x, radius_y], -1) * valid[..., None]
    return Projection(means2d, conics, z, radii.int())


@dataclass
class Intersections:
    """Gaussian-tile overlaps sorted by (camera, tile, depth); ties keep Gaussian order, as gsplat's radix sort.

    tile_ids: [I] int64 flat tile index (camera * tiles_y * tiles_x + row * tiles_x + column).
    flatten_ids: [I] int64 index into the flattened [C * N] Gaussians.
    """

    tile_ids: torch.Tensor
    flatten_ids: torch.Tensor


def isect_tiles(projection: Projection, tile_size: int, tiles_x: int, tiles_y: int) -> Intersections:
    """Every (camera, Gaussian, tile) whose bounding box meets the tile, depth-sorted within each tile."""
    device = projection.means2d.device
    means_t = projection.means2d / tile_size  # [C, N, 2] in tiles
    radii_t = projection.radii.float() / tile_size
    tile_min = torch.floor(means_t - radii_t).long()
    tile_max = torch.ceil(means_t + radii_t).long()
    limit = torch.tensor([tiles_x, tiles_y], device=device)
    tile_min = torch.minimum(tile_min.clamp(min=0), limit)
    tile_max = torch.minimum(tile_max.clamp(min=0), limit)
    span = tile_max - tile_min  # [C, N, 2]
    counts = (span[..., 0] * span[..., 1] * (projection.radii > 0).all(-1)).reshape(-1)  # [C * N]

    # One row per intersection: its Gaussian, and its place inside that Gaussian's tile rectangle.
    flatten_ids = torch.repeat_interleave(torch.arange(counts.numel(), device=device), counts)  # [I]
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(flatten_ids.numel(), device=device) - first[flatten_ids]
    span_x = span.reshape(-1, 2)[flatten_ids, 0]
    tile_min_flat = tile_min.reshape(-1, 2)[flatten_ids]
    column = tile_min_flat[:, 0] + local % span_x
    row = tile_min_flat[:, 1] + local // span_x
    camera = flatten_ids // projection.means2d.shape[1]
    tile_ids = (camera * tiles_y + row) * tiles_x + column

    # Sort key as gsplat's: tile in the high 32 bits, the float bits of the (positive) depth below.
    depth_bits = projection.depths.reshape(-1).float().contiguous().view(torch.int32).long()[flatten_ids]
    order = torch.sort((tile_ids << 32) | depth_bits, stable=True).indices
    return Intersections(tile_ids[order], flatten_ids[order])


def rasterize_to_pixels(
    means2d: torch.Tensor,  # [C, N, 2]
    conics: torch.Tensor,  # [C, N, 3]
    colors: torch.Tensor,  # [C, N, D]
    opacities: torch.Tensor,  # [C, N]
    width: int,
    height: int,
    tile_size: int,
    intersections: Intersections,
    backgrounds: torch.Tensor | None = None,  # [C, D]
    segment: int = 32,
    chunk_elements: int = 1 << 24,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Front-to-back alpha compositing of the binned Gaussians -> (colors [C, H, W, D], alphas [C, H, W, 1]).

    Tiles are processed in batches of about `chunk_elements / (P * segment)`, longest lists first;
    each batch walks its lists `segment` Gaussians at a time. The alpha is the sum of the
    compositing weights (1 - T, up to rounding), accumulated with the colours.
    """
    num_cameras, _, channels = colors.shape
    device, dtype = colors.device, colors.dtype
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    num_tiles = num_cameras * tiles_y * tiles_x
    pixels = tile_size * tile_size
    # Per Gaussian: conic as (a/2, b, c/2), log opacity, and colours with a ones channel (its sum is the alpha).
    flat_means = means2d.reshape(-1, 2)
    flat_conics = conics.reshape(-1, 3) * torch.tensor([0.5, 1.0, 0.5], device=device, dtype=dtype)
    flat_log_opacities = torch.log(opacities.reshape(-1).clamp(min=torch.finfo(dtype).tiny))
    flat_colors = torch.cat([colors.reshape(-1, channels), torch.ones_like(colors.reshape(-1, channels)[:, :1])], -1)

    # Pixel centres inside a tile: [P] x and y offsets.
    local_y, local_x = torch.meshgrid(torch.arange(tile_size, device=device), torch.arange(tile_size, device=device), indexing="ij")
    offset_x, offset_y = local_x.reshape(-1).to(dtype) + 0.5, local_y.reshape(-1).to(dtype) + 0.5

    counts = torch.bincount(intersections.tile_ids, minlength=num_tiles)  # [C * TY * TX]
    starts = torch.cumsum(counts, 0) - counts
    out = torch.zeros(num_tiles, pixels, channels + 1, device=device, dtype=dtype)
    busy_tiles = torch.nonzero(counts > 0).squeeze(1)
    busy_tiles = busy_tiles[torch.argsort(counts[busy_tiles], descending=True)]
    batch = max(1, chunk_elements // (pixels * segment))
    steps = torch.arange(segment, device=device)
    last = max(intersections.flatten_ids.numel() - 1, 0)
    for begin in range(0, busy_tiles.numel(), batch):
        tiles = busy_tiles[begin:begin + batch]  # [B]
        pixel_x = (tiles % tiles_x).to(dtype)[:, None] * tile_size + offset_x  # [B, P]
        pixel_y = ((tiles // tiles_x) % tiles_y).to(dtype)[:, None] * tile_size + offset_y
        tile_counts, tile_starts = counts[tiles], starts[tiles]
        transmittance = torch.ones(tiles.numel(), pixels, device=device, dtype=dtype)  # product of every (1 - alpha) so far
        accum = torch.zeros(tiles.numel(), pixels, channels + 1, device=device, dtype=dtype)
        active = torch.arange(tiles.numel(), device=device)  # rows of the batch still compositing
        position = 0
        while active.numel() > 0:
            # 1. The next `segment` Gaussians of each active tile's list (past its end: opacity 0).
            rank = position + steps  # [K]
            gauss = intersections.flatten_ids[(tile_starts[active][:, None] + rank).clamp(max=last)]  # [b, K]
            log_opacity = torch.where(rank < tile_counts[active][:, None], flat_log_opacities[gauss], -torch.inf)[:, None, :]
            # 2. Alpha of every (pixel, Gaussian) pair: [b, P, K].
            dx = flat_means[gauss, 0][:, None, :] - pixel_x[active][:, :, None]
            dy = flat_means[gauss, 1][:, None, :] - pixel_y[active][:, :, None]
            half_a, b, half_c = (flat_conics[gauss, i][:, None, :] for i in range(3))
            sigma = dx * (half_a * dx + b * dy) + half_c * dy * dy
            alpha = torch.exp(log_opacity - sigma).clamp_(max=MAX_ALPHA)
            alpha *= (alpha >= ALPHA_THRESHOLD) & (sigma >= 0)
            # 3. Transmittance before and after each Gaussian; composite those before the stop.
            t_after = torch.cumprod(1 - alpha, -1) * transmittance[active][:, :, None]
            t_before = torch.cat([transmittance[active][:, :, None], t_after[..., :-1]], -1)
            weights = alpha * t_before * (t_after > MIN_TRANSMITTANCE)
            accum[active] += torch.bmm(weights, flat_colors[gauss])  # [b, P, D + 1]
            transmittance[active] = t_after[..., -1]
            # 4. A tile stops when its list ends or all its pixels have stopped.
            position += segment
            going = (position < tile_counts[active]) & (transmittance[active] > MIN_TRANSMITTANCE).any(-1)
            active = active[going]
        out[tiles] = accum

    # Tiles back to images, cropped to the image size.
    out = out.reshape(num_cameras, tiles_y, tiles_x, tile_size, tile_size, channels + 1).permute(0, 1, 3, 2, 4, 5)
    out = out.reshape(num_cameras, tiles_y * tile_size, tiles_x * tile_size, channels + 1)[:, :height, :width]
    render_colors, render_alphas = out[..., :channels], out[..., channels:]
    if backgrounds is not None:
        render_colors = render_colors + (1 - render_alphas) * backgrounds[:, None, None, :]
    return render_colors, render_alphas


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
    tile_size: int = 8,
    backgrounds: torch.Tensor | None = None,  # [C, D]
    render_mode: str = "RGB",
    segment: int = 32,
    chunk_elements: int = 1 << 24,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Rasterise N Gaussians into C cameras, as `gsplat.rasterization` (classic mode, features, no SH).

    Returns render_colors [C, H, W, X] (X = D, 1 or D + 1 by `render_mode`; the depth is the
    last channel, z-depth, "ED" divided by alpha), render_alphas [C, H, W, 1], and meta
    (means2d, conics, depths, radii, tile counts). Unlike gsplat's, the results here do not
    depend on `tile_size`, which only trades memory for speed (8 was fastest on CPUs, gsplat
    uses 16); `segment` and `chunk_elements` bound the memory of the compositing step.
    """
    n = means.shape[0]
    c = viewmats.shape[0]
    if means.shape != (n, 3) or quats.shape != (n, 4) or scales.shape != (n, 3) or opacities.shape != (n,):
        raise ValueError(
            f"means [N, 3], quats [N, 4], scales [N, 3], opacities [N] expected, got {tuple(means.shape)}, "
            f"{tuple(quats.shape)}, {tuple(scales.shape)}, {tuple(opacities.shape)}"
        )
    if viewmats.shape != (c, 4, 4) or Ks.shape != (c, 3, 3):
        raise ValueError(f"viewmats [C, 4, 4] and Ks [C, 3, 3] expected, got {tuple(viewmats.shape)} and {tuple(Ks.shape)}")
    if colors.shape[:-1] not in ((n,), (c, n)):
        raise ValueError(f"colors must be [N, D] or [C, N, D] with N={n}, C={c}, got {tuple(colors.shape)}")
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")

    # 1. Project.
    projection = project_gaussians(
        means, quat_scale_to_covar(quats, scales), opacities, viewmats, Ks, width, height, eps2d, near_plane, far_plane
    )
    colors = colors.expand(c, n, colors.shape[-1]) if colors.dim() == 2 else colors  # [C, N, D]
    depths = projection.depths[..., None]
    if render_mode in ("RGB+D", "RGB+ED"):
        colors = torch.cat([colors, depths], -1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, torch.zeros_like(backgrounds[:, :1])], -1)
    elif render_mode in ("D", "ED"):
        colors = depths
        backgrounds = None if backgrounds is None else torch.zeros_like(backgrounds[:, :1])

    # 2. Bin into tiles.
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    intersections = isect_tiles(projection, tile_size, tiles_x, tiles_y)

    # 3. Composite.
    render_colors, render_alphas = rasterize_to_pixels(
        projection.means2d, projection.conics, colors.contiguous(), opacities.expand(c, n), width, height, tile_size,
        intersections, backgrounds, segment, chunk_elements,
    )
    if render_mode in ("ED", "RGB+ED"):
        render_colors = torch.cat([render_colors[..., :-1], render_colors[..., -1:] / render_alphas.clamp(min=1e-10)], -1)
    meta = {
        "means2d": projection.means2d,
        "conics": projection.conics,
        "depths": projection.depths,
        "radii": projection.radii,
        "tile_width": tiles_x,
        "tile_height": tiles_y,
        "n_intersections": intersections.tile_ids.numel(),
    }
    return render_colors, render_alphas, meta
