"""Cross-view consistency: do neighbouring cameras show the same colour where they see the same surface?

For each pair of ring neighbours (v, v + 1 mod V, in `sensors.CAMERA_NAMES` order) and each
frame: every pixel of view v with a depth (> 0) is lifted through its centre to its 3D point at
that z-depth (K and ego_from_cam at the image size), moved into camera v + 1 and projected; it
is kept where it lands in front of the camera and inside the image, and where the depth of the
pixel it lands in (view v + 1's own depth map) agrees with the point's z-depth within a relative
tolerance (|z - d_{v+1}| <= tol * d_{v+1}: the neighbour sees this surface, not something in
front of it). For the kept pixels, `pixel_error` is the mean over the three channels of
|RGB_v(pixel) - RGB_{v+1}(landing pixel)| on a 0..1 scale; `agreement` is the share of them
within a threshold.

The mapping (`neighbour_matches`) depends on the depth only, so one mapping scores the generated
frames and the true images alike (`photometric_errors`).

Letters: V cameras, H W pixels, M matched pixels.
"""

from dataclasses import dataclass

import numpy as np

from uniscene.geometry import invert_transform

NEAR_M = 0.1


@dataclass(frozen=True)
class PairMatches:
    """Pixels of view `source` [M] (flat indices into H * W) and where they land in view `target` [M]."""

    source: int
    target: int
    source_pixels: np.ndarray
    target_pixels: np.ndarray
    candidates: int  # pixels of the source view with a depth


def neighbour_matches(depth_m: np.ndarray, intrinsics: np.ndarray, ego_from_cam: np.ndarray, depth_tolerance: float) -> list:
    """The matches of each ring pair (v, v + 1) of one frame: depth [V, H, W] (0: none), K [V, 3, 3], ego_from_cam [V, 4, 4]."""
    depth_m = np.asarray(depth_m, np.float64)
    if depth_m.ndim != 3 or intrinsics.shape != (len(depth_m), 3, 3) or ego_from_cam.shape != (len(depth_m), 4, 4):
        raise ValueError(f"neighbour_matches takes depth [V, H, W], K [V, 3, 3], ego_from_cam [V, 4, 4]; got {depth_m.shape}, "
                         f"{intrinsics.shape}, {ego_from_cam.shape}")
    v_count, h, w = depth_m.shape
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    pixels = np.stack([u.ravel(), v.ravel(), np.ones(h * w)], -1)  # [H * W, 3]
    out = []
    for source in range(v_count):
        target = (source + 1) % v_count
        flat_depth = depth_m[source].ravel()
        chosen = np.nonzero(flat_depth > 0)[0]
        rays = pixels[chosen] @ np.linalg.inv(intrinsics[source]).T  # z = 1
        points_cam = rays * flat_depth[chosen, None]
        target_from_source = invert_transform(ego_from_cam[target]) @ ego_from_cam[source]
        points = points_cam @ target_from_source[:3, :3].T + target_from_source[:3, 3]
        z = points[:, 2]
        front = z > NEAR_M
        uv = points[front] @ intrinsics[target].T
        col = np.floor(uv[:, 0] / uv[:, 2]).astype(np.int64)
        row = np.floor(uv[:, 1] / uv[:, 2]).astype(np.int64)
        inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
        src = chosen[front][inside]
        dst = row[inside] * w + col[inside]
        seen = depth_m[target].ravel()[dst]
        visible = (seen > 0) & (np.abs(z[front][inside] - seen) <= depth_tolerance * seen)
        out.append(PairMatches(source, target, src[visible], dst[visible], int(chosen.size)))
    return out


def photometric_errors(rgb: np.ndarray, matches: list) -> list:
    """Per pair, the mean absolute RGB difference (0..1) of each matched pixel, [M]; rgb [V, H, W, 3] uint8."""
    flat = np.asarray(rgb).reshape(rgb.shape[0], -1, 3).astype(np.float32) / 255.0
    return [np.abs(flat[m.source, m.source_pixels] - flat[m.target, m.target_pixels]).mean(-1) for m in matches]


class CrossViewScore:
    """Sums over frames of the per-pair errors, for one set of images."""

    def __init__(self, num_pairs: int):
        self.error_sum = np.zeros(num_pairs)
        self.within = np.zeros(num_pairs, np.int64)
        self.count = np.zeros(num_pairs, np.int64)
        self.candidates = np.zeros(num_pairs, np.int64)

    def add(self, errors: list, matches: list, threshold: float) -> None:
        for i, (e, m) in enumerate(zip(errors, matches)):
            self.error_sum[i] += float(e.sum())
            self.within[i] += int((e <= threshold).sum())
            self.count[i] += e.size
            self.candidates[i] += m.candidates

    def merge(self, other: "CrossViewScore") -> None:
        for name in ("error_sum", "within", "count", "candidates"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def figures(self, camera_names) -> dict:
        total = max(int(self.count.sum()), 1)
        pairs = {}
        for i in range(len(self.count)):
            name = f"{camera_names[i]}->{camera_names[(i + 1) % len(self.count)]}"
            n = max(int(self.count[i]), 1)
            pairs[name] = {"pixel_error": float(self.error_sum[i] / n), "agreement": float(self.within[i] / n), "matched_pixels": int(self.count[i])}
        return {
            "pixel_error": float(self.error_sum.sum() / total) if self.count.sum() else float("nan"),
            "agreement": float(self.within.sum() / total) if self.count.sum() else float("nan"),
            "matched_pixels": int(self.count.sum()),
            "matched_share": float(self.count.sum() / max(int(self.candidates.sum()), 1)),
            "pairs": pairs,
        }
