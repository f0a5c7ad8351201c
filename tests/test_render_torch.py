"""The PyTorch splatting renderer against a slow, obvious reference on small random scenes,
and against gsplat on CUDA (skipped without CUDA and gsplat; the lead runs it on a GPU).

The reference projects each Gaussian on its own in float64 numpy (EWA with gsplat's clamped
Jacobian, blur and opacity-aware bounds) and composites each camera's Gaussians one at a time
in global depth order over all pixels, exactly as gsplat's per-pixel loop does.
"""

import numpy as np
import pytest
import torch

from uniscene.render import gsplat_renderer, torch_renderer

ALPHA_THRESHOLD, MAX_ALPHA, MIN_T = 1 / 255, 0.999, 1e-4


def reference_rasterization(means, quats, scales, opacities, colors, viewmats, ks, width, height,
                            near_plane=0.01, eps2d=0.3, render_mode="RGB+ED"):
    """Per Gaussian, per camera, in float64: colors [C, H, W, D(+1)] and alphas [C, H, W, 1]."""
    means, quats, scales, opacities, colors, viewmats, ks = (
        np.asarray(a, np.float64) for a in (means, quats, scales, opacities, colors, viewmats, ks)
    )
    v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    out_colors, out_alphas = [], []
    for cam in range(viewmats.shape[0]):
        fx, fy, cx, cy = ks[cam, 0, 0], ks[cam, 1, 1], ks[cam, 0, 2], ks[cam, 1, 2]
        splats = []
        for n in range(means.shape[0]):
            w, x, y, z = quats[n] / np.linalg.norm(quats[n])
            rotation = np.array([
                [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
            ])
            covar = rotation @ np.diag(scales[n] ** 2) @ rotation.T
            r, t = viewmats[cam, :3, :3], viewmats[cam, :3, 3]
            mc = r @ means[n] + t
            if not near_plane < mc[2] < 1e10:
                continue
            lim_x = (cx / fx + 0.3 * 0.5 * width / fx, (width - cx) / fx + 0.3 * 0.5 * width / fx)
            lim_y = (cy / fy + 0.3 * 0.5 * height / fy, (height - cy) / fy + 0.3 * 0.5 * height / fy)
            tx = mc[2] * np.clip(mc[0] / mc[2], -lim_x[0], lim_x[1])
            ty = mc[2] * np.clip(mc[1] / mc[2], -lim_y[0], lim_y[1])
            jac = np.array([[fx / mc[2], 0, -fx * tx / mc[2] ** 2], [0, fy / mc[2], -fy * ty / mc[2] ** 2]])
            cov2d = jac @ r @ covar @ r.T @ jac.T + eps2d * np.eye(2)
            if np.linalg.det(cov2d) <= 0 or opacities[n] < ALPHA_THRESHOLD:
                continue
            splats.append((mc[2], n, np.array([fx * mc[0] / mc[2] + cx, fy * mc[1] / mc[2] + cy]), np.linalg.inv(cov2d)))
        splats.sort(key=lambda s: (np.float32(s[0]), s[1]))  # depth order, ties by index (as the float32 sort key)
        channels = colors.shape[-1] + (1 if render_mode == "RGB+ED" else 0)
        transmittance = np.ones((height, width))
        done = np.zeros((height, width), bool)
        image = np.zeros((height, width, channels))
        for depth, n, mean2d, conic in splats:
            dx, dy = mean2d[0] - u, mean2d[1] - v
            sigma = 0.5 * (conic[0, 0] * dx * dx + conic[1, 1] * dy * dy) + conic[0, 1] * dx * dy
            alpha = np.minimum(MAX_ALPHA, opacities[n] * np.exp(-sigma))
            counted = (sigma >= 0) & (alpha >= ALPHA_THRESHOLD) & ~done
            next_t = transmittance * (1 - alpha)
            stop = counted & (next_t <= MIN_T)
            done |= stop
            use = counted & ~stop
            feature = np.append(colors[n], depth) if render_mode == "RGB+ED" else colors[n]
            image += np.where(use, alpha * transmittance, 0)[..., None] * feature
            transmittance = np.where(use, next_t, transmittance)
        alphas = 1 - transmittance
        if render_mode == "RGB+ED":
            image[..., -1] /= np.maximum(alphas, 1e-10)
        out_colors.append(image)
        out_alphas.append(alphas[..., None])
    return np.stack(out_colors), np.stack(out_alphas)


def random_scene(seed, n=60, cameras=2, width=37, height=29, dtype=torch.float64):
    """Gaussians in front of (and some behind, some very near) cameras looking down +z."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g, dtype=dtype) * torch.tensor([6.0, 5.0, 9.0], dtype=dtype) - torch.tensor([3.0, 2.5, 1.0], dtype=dtype)
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = torch.rand(n, 3, generator=g, dtype=dtype) * 0.5 + 0.02
    opacities = torch.rand(n, generator=g, dtype=dtype) * 1.1  # some above 1: alpha clamps at 0.999
    opacities[:5] = 0.002  # below 1/255: never drawn
    colors = torch.rand(n, 4, generator=g, dtype=dtype)
    viewmats = torch.eye(4, dtype=dtype).repeat(cameras, 1, 1)
    viewmats[1:, :3, 3] = torch.tensor([0.4, -0.3, 0.5], dtype=dtype)  # second camera shifted
    ks = torch.tensor([[30.0, 0.0, width / 2 + 1.3], [0.0, 32.0, height / 2 - 0.7], [0.0, 0.0, 1.0]], dtype=dtype).repeat(cameras, 1, 1)
    return means, quats, scales, opacities, colors, viewmats, ks, width, height


@pytest.mark.parametrize("seed, n", [(0, 60), (1, 60), (2, 250)])
def test_matches_reference_float64(seed, n):
    scene = random_scene(seed, n)
    colors, alphas, meta = torch_renderer.rasterization(*scene, render_mode="RGB+ED", tile_size=16, segment=5, chunk_elements=4096)
    ref_colors, ref_alphas = reference_rasterization(*scene)
    assert meta["n_intersections"] > 0
    torch.testing.assert_close(alphas, torch.from_numpy(ref_alphas), rtol=1e-9, atol=1e-9)
    covered = torch.from_numpy(ref_alphas[..., 0] > 1e-3)
    torch.testing.assert_close(colors[..., :4], torch.from_numpy(ref_colors[..., :4]), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(colors[..., 4][covered], torch.from_numpy(ref_colors[..., 4])[covered], rtol=1e-7, atol=1e-7)


def test_matches_reference_float32_and_tiling_changes_nothing():
    scene = random_scene(3, n=80, dtype=torch.float32)
    small = torch_renderer.rasterization(*scene, render_mode="RGB+ED", tile_size=4, segment=3, chunk_elements=1000)
    large = torch_renderer.rasterization(*scene, render_mode="RGB+ED", tile_size=16, segment=64, chunk_elements=1 << 22)
    torch.testing.assert_close(small[0], large[0], rtol=1e-5, atol=1e-5)
    ref_colors, ref_alphas = reference_rasterization(*scene)
    torch.testing.assert_close(large[1], torch.from_numpy(ref_alphas).float(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(large[0][..., :4], torch.from_numpy(ref_colors[..., :4]).float(), rtol=1e-4, atol=1e-4)


def test_render_modes_and_background():
    means, quats, scales, opacities, colors, viewmats, ks, width, height = random_scene(4)
    rgb, alphas, _ = torch_renderer.rasterization(means, quats, scales, opacities, colors, viewmats, ks, width, height)
    depth, _, _ = torch_renderer.rasterization(means, quats, scales, opacities, colors, viewmats, ks, width, height, render_mode="D")
    expected, _, _ = torch_renderer.rasterization(means, quats, scales, opacities, colors, viewmats, ks, width, height, render_mode="ED")
    both, _, _ = torch_renderer.rasterization(means, quats, scales, opacities, colors, viewmats, ks, width, height, render_mode="RGB+D")
    assert rgb.shape == (2, height, width, 4) and depth.shape == (2, height, width, 1) and both.shape == (2, height, width, 5)
    torch.testing.assert_close(both[..., :4], rgb)
    torch.testing.assert_close(both[..., 4:], depth)
    torch.testing.assert_close(expected * alphas, depth)
    background = torch.tensor([[1.0, 2.0, 3.0, 4.0]] * 2, dtype=torch.float64)
    filled, _, _ = torch_renderer.rasterization(means, quats, scales, opacities, colors, viewmats, ks, width, height, backgrounds=background)
    torch.testing.assert_close(filled, rgb + (1 - alphas) * background[:, None, None, :])


def test_projection_of_an_isotropic_gaussian_on_the_axis():
    # A Gaussian of standard deviation s at depth z on the optical axis: 2D variance (f s / z)^2 + eps2d.
    s, z, f = 0.2, 5.0, 100.0
    means = torch.tensor([[0.0, 0.0, z]])
    covars = torch.eye(3)[None] * s * s
    ks = torch.tensor([[[f, 0.0, 50.0], [0.0, f, 40.0], [0.0, 0.0, 1.0]]])
    projection = torch_renderer.project_gaussians(means, covars, torch.ones(1), torch.eye(4)[None], ks, 100, 80)
    variance = (f * s / z) ** 2 + 0.3
    torch.testing.assert_close(projection.means2d[0, 0], torch.tensor([50.0, 40.0]))
    torch.testing.assert_close(projection.conics[0, 0], torch.tensor([1 / variance, 0.0, 1 / variance]))
    extend = min(3.33, float(np.sqrt(2 * np.log(255.0))))
    assert projection.radii[0, 0].tolist() == [int(np.ceil(extend * np.sqrt(variance)))] * 2


def test_culling_near_plane_and_outside():
    means = torch.tensor([[0.0, 0.0, 0.005], [0.0, 0.0, -3.0], [100.0, 0.0, 2.0], [0.0, 0.0, 2.0]])
    covars = torch.eye(3).repeat(4, 1, 1) * 0.01
    ks = torch.tensor([[[50.0, 0.0, 20.0], [0.0, 50.0, 20.0], [0.0, 0.0, 1.0]]])
    projection = torch_renderer.project_gaussians(means, covars, torch.ones(4), torch.eye(4)[None], ks, 40, 40)
    assert (projection.radii[0] > 0).all(-1).tolist() == [False, False, False, True]


def test_bad_shapes_raise():
    means, quats, scales, opacities, colors, viewmats, ks, width, height = random_scene(5)
    with pytest.raises(ValueError, match="colors"):
        torch_renderer.rasterization(means, quats, scales, opacities, colors[:3], viewmats, ks, width, height)
    with pytest.raises(ValueError, match="render_mode"):
        torch_renderer.rasterization(means, quats, scales, opacities, colors, viewmats, ks, width, height, render_mode="X")


needs_gsplat = pytest.mark.skipif(not gsplat_renderer.gsplat_available(), reason="needs CUDA and gsplat")


@needs_gsplat
@pytest.mark.parametrize("seed", [0, 2])
def test_gsplat_agrees_on_random_gaussians(seed):
    # Both in float32 on the GPU; gsplat's fast exp and summation order differ from PyTorch's,
    # so a contribution right at the 1/255 alpha threshold may fall on either side.
    scene = [a.float().cuda() if isinstance(a, torch.Tensor) else a for a in random_scene(seed, n=200, dtype=torch.float32)]
    ours, our_alphas, _ = torch_renderer.rasterization(*scene, render_mode="RGB+ED")
    theirs, their_alphas, _ = gsplat_renderer.rasterization(*scene, render_mode="RGB+ED")
    torch.testing.assert_close(our_alphas, their_alphas, rtol=1e-3, atol=2e-3)
    torch.testing.assert_close(ours[..., :-1], theirs[..., :-1], rtol=1e-3, atol=2e-3)
    covered = their_alphas[..., 0] > 0.1
    torch.testing.assert_close(ours[..., -1][covered], theirs[..., -1][covered], rtol=1e-3, atol=1e-2)
