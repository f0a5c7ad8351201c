"""Camera images read from a dataset and resized, one way for every reader (segmenter training, video metrics).

Resizing rules (the video metrics write them into their protocol):
- images: bilinear, with antialiasing where they shrink (torch `interpolate(mode="bilinear",
  antialias=True, align_corners=False)`), rounded back to uint8;
- per-pixel classes and depths: nearest pixel centre (each output pixel takes the input pixel
  under its centre), so no class or depth is invented between two surfaces.

Letters: N images, H W pixels (input), h w pixels (output).
"""

from pathlib import Path

import numpy as np

from uniscene.errors import UserError

IMAGE_RESIZE = "bilinear, antialiased where shrinking (torch interpolate, align_corners=False), rounded to uint8"
LABEL_RESIZE = "nearest pixel centre"


def read_images(dataroot, paths, size_hw=None) -> np.ndarray:
    """RGB images at `paths` (relative to `dataroot`), [N, h, w, 3] uint8, resized to `size_hw` where given."""
    from PIL import Image

    images = []
    for path in paths:
        full = Path(dataroot) / str(path)
        if not full.is_file():
            raise UserError(f"camera image {full} is missing: restore it from the dataset archive (or rerun `uniscene synth`)")
        try:
            with Image.open(full) as image:
                images.append(np.asarray(image.convert("RGB")))
        except OSError as error:
            raise UserError(f"camera image {full} cannot be decoded ({error}): restore it from the dataset archive") from None
    if len({image.shape for image in images}) > 1:
        if size_hw is None:
            raise UserError(f"camera images under {dataroot} differ in size ({sorted({i.shape for i in images})}): give a size to resize them to")
        return np.stack([resize_images(image, size_hw) for image in images])
    stacked = np.stack(images) if images else np.zeros((0, 1, 1, 3), np.uint8)
    return stacked if size_hw is None else resize_images(stacked, size_hw)


def resize_images(images: np.ndarray, size_hw) -> np.ndarray:
    """uint8 RGB images [..., H, W, 3] -> [..., h, w, 3] (IMAGE_RESIZE)."""
    import torch
    from torch.nn import functional as F

    images = np.asarray(images)
    if images.shape[-1] != 3 or images.ndim < 3:
        raise ValueError(f"resize_images takes [..., H, W, 3] images, got shape {images.shape}")
    size_hw = (int(size_hw[0]), int(size_hw[1]))
    if images.shape[-3:-1] == size_hw:
        return images.copy()
    lead = images.shape[:-3]
    x = torch.from_numpy(np.ascontiguousarray(images.reshape(-1, *images.shape[-3:]))).permute(0, 3, 1, 2).float()
    out = F.interpolate(x, size=size_hw, mode="bilinear", align_corners=False, antialias=True)
    out = out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out.reshape(*lead, *size_hw, 3)


def resize_nearest(maps: np.ndarray, size_hw) -> np.ndarray:
    """[..., H, W] maps (classes, depths) -> [..., h, w], each output pixel taking the input pixel under its centre."""
    h, w = maps.shape[-2:]
    rows = np.minimum(((np.arange(size_hw[0]) + 0.5) * h / size_hw[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size_hw[1]) + 0.5) * w / size_hw[1]).astype(np.int64), w - 1)
    return maps[..., rows[:, None], cols[None, :]]


def scale_intrinsics(intrinsics: np.ndarray, from_hw, to_hw) -> np.ndarray:
    """K [..., 3, 3] of images of size `from_hw` -> K of the same cameras resized to `to_hw` (pixel-centre convention)."""
    scale = np.diag([to_hw[1] / from_hw[1], to_hw[0] / from_hw[0], 1.0])
    return scale @ np.asarray(intrinsics, dtype=np.float64)
