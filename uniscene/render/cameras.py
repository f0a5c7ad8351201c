"""The one adapter from uniscene's cameras to a splatting renderer's.

uniscene stores `ego_from_cam` (4x4, OpenCV axes: x right, y down, z forward) and K at the
image's own size, where pixel (row v, column u) covers [u, u + 1) x [v, v + 1) (centre at
u + 0.5), as gsplat's rasteriser. gsplat's `viewmats` are world-to-camera: the world here is
the ego frame, so `viewmats = cam_from_ego`. A render size other than the image size scales
the focal lengths and the principal point with the image (450 x 800 from nuScenes' 900 x 1600
halves K).

Letters: V cameras.
"""

import numpy as np

from uniscene.geometry import invert_transform


def viewmats_from_cameras(ego_from_cam: np.ndarray) -> np.ndarray:
    """gsplat viewmats (cam_from_ego) of cameras [V, 4, 4] -> [V, 4, 4] float32."""
    ego_from_cam = np.asarray(ego_from_cam, dtype=np.float64)
    if ego_from_cam.shape[-2:] != (4, 4):
        raise ValueError(f"ego_from_cam must be [..., 4, 4], got {ego_from_cam.shape}")
    return invert_transform(ego_from_cam).astype(np.float32)


def scale_intrinsics(intrinsics: np.ndarray, image_size_hw, render_size_hw) -> np.ndarray:
    """K at the image size [V, 3, 3] (image_size_hw: (H, W) or [V, 2]) -> K at render_size_hw (H', W')."""
    intrinsics = np.asarray(intrinsics, dtype=np.float64)
    image_size_hw = np.broadcast_to(np.asarray(image_size_hw, dtype=np.float64), intrinsics.shape[:-2] + (2,))
    scale_y = render_size_hw[0] / image_size_hw[..., 0]
    scale_x = render_size_hw[1] / image_size_hw[..., 1]
    scaled = intrinsics.copy()
    scaled[..., 0, :] *= scale_x[..., None]
    scaled[..., 1, :] *= scale_y[..., None]
    return scaled
