"""Colour previews of rendered maps: semantic palette and turbo depth, the six cameras as a rig.

The PNG shows one frame: the semantic maps of the front cameras (FRONT_LEFT, FRONT,
FRONT_RIGHT) over the back ones (BACK_LEFT, BACK, BACK_RIGHT), then the depth maps the same way.

Letters: V cameras, H W pixels.
"""

from pathlib import Path

import numpy as np

from uniscene.sensors import CAMERA_NAMES
from uniscene.classes import NUM_RENDER_CLASSES, RENDER_COLORS
from uniscene.store import atomic_file

BACKGROUND_RGB = np.array((40, 40, 40), np.uint8)  # pixels that nothing hit
# Camera indices in the preview's 2 x 3 rig, as drivers see it.
RIG_ROWS = (
    tuple(CAMERA_NAMES.index(n) for n in ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT")),
    tuple(CAMERA_NAMES.index(n) for n in ("CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT")),
)


def semantic_rgb(semantic: np.ndarray) -> np.ndarray:
    """Render classes [..., H, W] uint8 -> [..., H, W, 3] uint8 (RENDER_COLORS; background dark grey)."""
    palette = np.broadcast_to(BACKGROUND_RGB, (256, 3)).copy()
    palette[:NUM_RENDER_CLASSES] = RENDER_COLORS
    return palette[np.asarray(semantic)]


def depth_rgb(depth_m: np.ndarray, alpha: np.ndarray, min_alpha: float, max_depth_m: float = 60.0) -> np.ndarray:
    """Depth [..., H, W] metres -> turbo colours [..., H, W, 3] uint8: near red, far blue, background grey."""
    from matplotlib import colormaps

    turbo = (colormaps["turbo"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)  # [256, 3]
    level = np.clip(1 - np.asarray(depth_m, np.float32) / max_depth_m, 0, 1)
    rgb = turbo[(level * 255).round().astype(np.int64)]
    rgb[np.asarray(alpha) < min_alpha] = BACKGROUND_RGB
    return rgb


def rig_mosaic(images: np.ndarray) -> np.ndarray:
    """Per-camera images [V, H, W, 3] -> [2 H, 3 W, 3] for the six cameras (front on top), else one row [H, V W, 3]."""
    rows = RIG_ROWS if len(images) == len(CAMERA_NAMES) else (tuple(range(len(images))),)
    return np.concatenate([np.concatenate([images[v] for v in row], axis=1) for row in rows], axis=0)


def preview_image(semantic: np.ndarray, depth_m: np.ndarray, alpha: np.ndarray, min_alpha: float) -> np.ndarray:
    """One frame's maps [V, H, W] -> uint8 image ([4 H, 3 W, 3] for six cameras): semantic rig over depth rig."""
    return np.concatenate([rig_mosaic(semantic_rgb(semantic)), rig_mosaic(depth_rgb(depth_m, alpha, min_alpha))], axis=0)


def save_png(path, image: np.ndarray) -> Path:
    """Write an RGB image [H, W, 3] uint8 as PNG, atomically."""
    from PIL import Image

    with atomic_file(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp)
    return Path(path)
