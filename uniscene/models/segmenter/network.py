"""SegmenterNet: a small fully convolutional U-Net reading the class of every pixel of a camera image.

It scores the video generator's condition consistency (uniscene/metrics/video.py): trained on
the synthetic dataset's true images and their true classes, it reads the class of each pixel of
a generated frame. Classes: the 17 occupancy classes (`classes.OCC_CLASS_NAMES`) and SKY_INDEX
(17) for sky.

Input: RGB in [0, 1]; any height and width (padded to a multiple of 2 ** (levels - 1) inside,
cropped back). Letters: B images, C channels, H W pixels, K classes.
"""

from dataclasses import dataclass

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from torch import nn
from torch.nn import functional as F

from uniscene.classes import NUM_OCC_CLASSES

SKY_INDEX = NUM_OCC_CLASSES  # the class after the 17 occupancy classes: sky (the truth's 255)
NUM_SEGMENTER_CLASSES = NUM_OCC_CLASSES + 1

MODEL_CONFIGS = {
    "tiny": {"block_out_channels": (16, 32, 48), "layers_per_block": 1},  # ~60 k weights: a minute on 2 CPU cores
    "paper": {"block_out_channels": (32, 64, 128, 256), "layers_per_block": 2},  # for GPUs and 900 x 1600 images
}


@dataclass
class SegmenterOutput(BaseOutput):
    """
    logits: (batch_size, num_classes, height, width) unnormalised class scores of every pixel.
    """

    logits: torch.Tensor


class _Block(nn.Module):
    """conv 3x3 -> GroupNorm -> SiLU, `layers` times."""

    def __init__(self, in_channels: int, out_channels: int, layers: int, groups: int):
        super().__init__()
        parts = []
        for i in range(layers):
            parts += [nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1),
                      nn.GroupNorm(min(groups, out_channels), out_channels), nn.SiLU()]
        self.body = nn.Sequential(*parts)

    def forward(self, x):
        return self.body(x)


class SegmenterNet(ModelMixin, ConfigMixin):
    """U-Net from RGB images [B, 3, H, W] in [0, 1] to class logits [B, K, H, W]."""

    @register_to_config
    def __init__(
        self,
        num_classes: int = NUM_SEGMENTER_CLASSES,
        block_out_channels: tuple = (16, 32, 48),
        layers_per_block: int = 1,
        norm_num_groups: int = 8,
    ):
        super().__init__()
        if len(block_out_channels) < 1:
            raise ValueError(f"block_out_channels must name at least one level, got {block_out_channels}")
        if layers_per_block < 1:
            raise ValueError(f"layers_per_block must be >= 1, got {layers_per_block}")
        channels = list(block_out_channels)
        self.down = nn.ModuleList()
        previous = 3
        for c in channels:
            self.down.append(_Block(previous, c, layers_per_block, norm_num_groups))
            previous = c
        self.up = nn.ModuleList(
            _Block(channels[i + 1] + channels[i], channels[i], layers_per_block, norm_num_groups) for i in reversed(range(len(channels) - 1))
        )
        self.head = nn.Conv2d(channels[0], num_classes, 1)

    def forward(self, images: torch.Tensor) -> SegmenterOutput:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"SegmenterNet takes RGB images [B, 3, H, W], got shape {tuple(images.shape)}")
        # 1. normalise and pad to a multiple of the coarsest level's stride
        h, w = images.shape[-2:]
        multiple = 2 ** (len(self.down) - 1)
        x = (images - 0.5) / 0.25
        x = F.pad(x, (0, -w % multiple, 0, -h % multiple), mode="replicate")
        # 2. encoder: full, 1/2, 1/4 ... resolution
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        # 3. decoder: upsample, join the skip of the same resolution
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return SegmenterOutput(logits=self.head(x)[..., :h, :w])  # [B, K, H, W]
