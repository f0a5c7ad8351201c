"""The pure ray-cast baseline (no learning): every beam returns at the first occupied voxel.

As the reference's Open3D ray-cast: the point is where the ray enters the first occupied voxel,
its intensity is the mean intensity of that class in the training sweeps, and every ray that
hits something between the beam's min and max range returns (no ray drop).

Letters: B sweeps, H beams, W azimuths, N rays.
"""

import torch

from uniscene.models.lidar.beams import BeamPattern
from uniscene.models.lidar.prior import NUM_CLASSES_WITH_FREE, RayPrior


def fit_class_intensity(
    hit_class: torch.Tensor,  # [N] uint8 prior class of rays that truly returned
    intensity: torch.Tensor,  # [N] their true intensity
) -> torch.Tensor:
    """Mean true intensity per prior class, [18] float32 (the overall mean for classes never seen)."""
    index = hit_class.long().reshape(-1)
    intensity = intensity.float().reshape(-1)
    total = torch.zeros(NUM_CLASSES_WITH_FREE).index_add_(0, index, intensity)
    count = torch.zeros(NUM_CLASSES_WITH_FREE).index_add_(0, index, torch.ones_like(intensity))
    overall = intensity.mean() if intensity.numel() else torch.tensor(0.0)
    return torch.where(count > 0, total / count.clamp(min=1), overall)


def raycast_range_image(
    prior: RayPrior, pattern: BeamPattern, class_intensity: torch.Tensor  # [18]
) -> tuple:
    """(range_m, intensity), each [B, H, W] float32 and 0 where the ray returns nothing."""
    returned = prior.hit & (prior.range_m >= pattern.min_range_m) & (prior.range_m <= pattern.max_range_m)
    intensity = class_intensity.to(prior.range_m.device)[prior.hit_class.long()]
    return torch.where(returned, prior.range_m, 0.0), torch.where(returned, intensity, 0.0)
