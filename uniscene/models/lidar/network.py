"""LidarRangeNet: a 2D U-Net over the range image of the occupancy prior.

Input: the per-ray prior features (`prior.prior_features`, C channels on the H x W range image).
Output per ray: a correction to the prior's range, the intensity, and the logit of the ray
returning nothing (ray drop). Convolutions wrap around in azimuth (the image is a cylinder)
and pad with zeros across beams. Downsampling halves both axes, so H must be divisible by
2 ** (len(block_out_channels) - 1); W is wrapped round to a multiple of it and cropped back.

Letters: B sweeps, C channels, H beams, W azimuths.
"""

from dataclasses import dataclass

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from torch import nn
from torch.nn import functional as F

from uniscene.models.lidar.prior import NUM_PRIOR_FEATURES


@dataclass
class LidarRangeNetOutput(BaseOutput):
    """
    range_correction_m: (batch_size, height, width) metres added to the prior's range.
    intensity: (batch_size, height, width) intensity in the sweep's units.
    drop_logit: (batch_size, height, width) logit of the probability that the ray returns nothing.
    """

    range_correction_m: torch.Tensor
    intensity: torch.Tensor
    drop_logit: torch.Tensor


class _CylinderConv(nn.Conv2d):
    """3x3 convolution that wraps around in width (azimuth) and zero-pads in height (beams)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__(in_channels, out_channels, 3, stride=stride, padding=0)

    def forward(self, x):
        x = F.pad(x, (1, 1, 0, 0), mode="circular")
        x = F.pad(x, (0, 0, 1, 1))
        return super().forward(x)


class _ResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, in_channels), in_channels)
        self.conv1 = _CylinderConv(in_channels, out_channels)
        self.norm2 = nn.GroupNorm(min(groups, out_channels), out_channels)
        self.conv2 = _CylinderConv(out_channels, out_channels)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class LidarRangeNet(ModelMixin, ConfigMixin):
    """U-Net from prior features [B, C, H, W] to range correction, intensity and ray-drop logit [B, H, W]."""

    @register_to_config
    def __init__(
        self,
        in_channels: int = NUM_PRIOR_FEATURES,
        block_out_channels: tuple = (16, 32, 64),
        layers_per_block: int = 1,
        norm_num_groups: int = 8,
        intensity_scale: float = 255.0,
        range_correction_scale_m: float = 1.0,
    ):
        super().__init__()
        if len(block_out_channels) < 1:
            raise ValueError(f"block_out_channels must name at least one level, got {block_out_channels}")
        self.conv_in = _CylinderConv(in_channels, block_out_channels[0])
        self.down_blocks = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        channels = block_out_channels[0]
        for level, out_channels in enumerate(block_out_channels):
            blocks = [_ResBlock(channels if i == 0 else out_channels, out_channels, norm_num_groups) for i in range(layers_per_block)]
            self.down_blocks.append(nn.Sequential(*blocks))
            channels = out_channels
            if level < len(block_out_channels) - 1:
                self.downsamplers.append(_CylinderConv(channels, channels, stride=2))
        self.up_blocks = nn.ModuleList()
        for out_channels in reversed(block_out_channels[:-1]):
            blocks = [_ResBlock(channels + out_channels if i == 0 else out_channels, out_channels, norm_num_groups) for i in range(layers_per_block)]
            self.up_blocks.append(nn.Sequential(*blocks))
            channels = out_channels
        self.norm_out = nn.GroupNorm(min(norm_num_groups, channels), channels)
        self.conv_out = nn.Conv2d(channels, 3, 1)

    def forward(self, features: torch.Tensor, return_dict: bool = True):
        """features: [B, C, H, W] from `prior_features`."""
        levels = len(self.config.block_out_channels)
        factor = 2 ** (levels - 1)
        if features.ndim != 4 or features.shape[1] != self.config.in_channels:
            raise ValueError(f"features must be [B, {self.config.in_channels}, H, W], got {tuple(features.shape)}")
        if features.shape[2] % factor:
            raise ValueError(f"H = {features.shape[2]} beams must be divisible by {factor} for {levels} levels")
        # 1. wrap the azimuth round to a multiple of the downsampling factor
        width = features.shape[3]
        features = F.pad(features, (0, -width % factor, 0, 0), mode="circular")  # [B, C, H, W']
        # 2. encoder, keeping each level's output for the skips
        h = self.conv_in(features)
        skips = []
        for level, block in enumerate(self.down_blocks):
            h = block(h)
            if level < levels - 1:
                skips.append(h)
                h = self.downsamplers[level](h)  # [B, C, H / 2, W / 2]
        # 3. decoder
        for block in self.up_blocks:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(torch.cat([h, skip], 1))
        # 4. heads
        out = self.conv_out(F.silu(self.norm_out(h)))[..., :width]  # [B, 3, H, W]
        result = LidarRangeNetOutput(
            range_correction_m=out[:, 0] * self.config.range_correction_scale_m,
            intensity=out[:, 1] * self.config.intensity_scale,
            drop_logit=out[:, 2],
        )
        return result if return_dict else result.to_tuple()


MODEL_CONFIGS = {
    # trains in a minute or two on 2 CPU cores (the default run and the tests)
    "tiny": dict(block_out_channels=(16, 32, 48), layers_per_block=1, norm_num_groups=8),
    # for GPUs: wider and deeper, still a 2D network (milliseconds per sweep)
    "paper": dict(block_out_channels=(64, 128, 256, 256), layers_per_block=2, norm_num_groups=32),
}
