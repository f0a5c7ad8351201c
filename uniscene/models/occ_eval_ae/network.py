"""OccEvalAE: a small 3D-convolutional occupancy autoencoder whose bottleneck vector is the feature of F3D and MMD.

It is the ruler of results/metrics/occ_gen.json's distribution figures, so it is a network apart
from the generator's OccVAE (own module, own weights, own seed) and is trained on the training
scenes' label occupancy only.

Encoder (per frame): the grid is padded with free up to a multiple of the total stride and cut
into patches of patch_size voxels; each patch is read as the shares of its voxels of each of the
18 labels [L, x, y, z] (with patch_size (1, 1, 1): one label per voxel), which a 1x1x1
convolution embeds (the mean of the label embeddings over the patch) [E, x, y, z]; one strided
3x3x3 convolution per level (stride 2; 1 along an axis already one cell thick), each with
GroupNorm and SiLU, gives [C, x', y', z']; the mean and the maximum over x' y' z', concatenated,
go through a linear layer to the feature vector [D]. Decoder: a linear layer from the feature
vector to the coarsest map and the mirror of the encoder (transposed convolutions with kernel =
stride, each but the last followed by a 3x3x3 convolution) back to label scores per patch
[L, x, y, z]: every voxel of a patch reads its patch's scores. Only the 1x1x1 embedding and head
work at the patch grid's resolution, which keeps the tiny model at ~30 ms a 200 x 200 x 16
frame (forward and backward) on one CPU core. The loss (train.py) is the per-voxel
cross-entropy, taken through the patches' label counts. The decoder reads the feature vector
alone, so training it to reconstruct makes the vector hold the frame's layout of classes.

    out = model(semantics)          # semantics [B, X, Y, Z] long (0..17)
    out.logits                      # [B, L, x, y, z]: per patch (x = padded X / patch x, ...)
    out.features                    # [B, D]
    out.label_shares                # [B, L, x, y, z]: the input's share of each label per patch (the target)
    model.features(semantics)       # [B, D], the encoder alone
    model.reconstruct(semantics)    # [B, X, Y, Z] labels: each voxel its patch's argmax

Letters: B frames, X Y Z grid, x y z patches, E embedding width, C channels, D feature width
(config.feature_dim), L = 18 labels (17 classes + free).
"""

import math
from dataclasses import dataclass

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from torch import nn
from torch.nn import functional as F

from uniscene.classes import FREE

NUM_LABELS = FREE + 1  # 18: the 17 classes and free

# Network sizes by config name (occ_eval_ae.model). tiny: patches of 4 x 4 x 2 voxels (1.6 x 1.6 x 0.8 m on the
# default grid), a CPU minute; paper: patches of 2 x 2 x 1, wider and deeper, for GPUs.
MODEL_CONFIGS = {
    "tiny": dict(embed_dim=8, patch_size=(4, 4, 2), block_out_channels=(16, 32, 64), feature_dim=128, norm_num_groups=8),
    "paper": dict(embed_dim=16, patch_size=(2, 2, 1), block_out_channels=(32, 64, 128, 256), feature_dim=256, norm_num_groups=16),
}


@dataclass
class OccEvalAEOutput(BaseOutput):
    """
    logits: (batch_size, num_labels, x, y, z) unnormalised label scores of each patch of the padded grid (every voxel
        of a patch reads its patch's; x = padded X / patch_size x, ...).
    features: (batch_size, feature_dim) the bottleneck vector the decoder read.
    label_shares: (batch_size, num_labels, x, y, z) each patch's share of each label in the input (the target).
    """

    logits: torch.Tensor
    features: torch.Tensor
    label_shares: torch.Tensor


def level_strides(patches: tuple, levels: int) -> list:
    """The (x, y, z) stride of each level over a grid of `patches`: 2 per axis (1 along an axis already one cell thick)."""
    strides, size = [], list(patches)
    for _ in range(levels):
        stride = tuple(2 if s > 1 else 1 for s in size)
        strides.append(stride)
        size = [math.ceil(s / t) for s, t in zip(size, stride)]
    return strides


def label_shares(semantics: torch.Tensor, patch_size: tuple, num_labels: int) -> torch.Tensor:
    """Labels [B, X, Y, Z] (X, Y, Z multiples of patch_size) -> each patch's share of each label [B, L, x, y, z] float32."""
    b, gx, gy, gz = semantics.shape
    px, py, pz = patch_size
    x, y, z = gx // px, gy // py, gz // pz
    voxels = semantics.view(b, x, px, y, py, z, pz).permute(0, 1, 3, 5, 2, 4, 6).reshape(b, x, y, z, px * py * pz)
    counts = torch.zeros(b, x, y, z, num_labels, device=semantics.device)
    counts.scatter_add_(4, voxels.long(), torch.ones(voxels.shape, device=semantics.device))  # [B, x, y, z, L]
    return counts.permute(0, 4, 1, 2, 3) / (px * py * pz)


def _norm_act(channels: int, groups: int) -> nn.Sequential:
    return nn.Sequential(nn.GroupNorm(math.gcd(groups, channels), channels), nn.SiLU())


class OccEvalAE(ModelMixin, ConfigMixin):
    """Labels [B, X, Y, Z] -> features [B, D] -> label scores per patch [B, 18, x, y, z]."""

    @register_to_config
    def __init__(
        self,
        grid_shape: tuple = (200, 200, 16),
        num_labels: int = NUM_LABELS,
        embed_dim: int = 8,
        patch_size: tuple = (4, 4, 2),
        block_out_channels: tuple = (16, 32, 64),
        feature_dim: int = 128,
        norm_num_groups: int = 8,
    ):
        super().__init__()
        if len(grid_shape) != 3 or min(grid_shape) < 1:
            raise ValueError(f"grid_shape must be (X, Y, Z) cells, got {tuple(grid_shape)}")
        if len(patch_size) != 3 or min(patch_size) < 1:
            raise ValueError(f"patch_size must be (x, y, z) cells >= 1, got {tuple(patch_size)}")
        if len(block_out_channels) < 1 or feature_dim < 1:
            raise ValueError(f"block_out_channels must name at least one level ({tuple(block_out_channels)}) and feature_dim "
                             f"must be >= 1 ({feature_dim})")
        channels = [int(c) for c in block_out_channels]
        patches = [math.ceil(g / p) for g, p in zip(grid_shape, patch_size)]
        self.strides = level_strides(tuple(patches), len(channels))
        total = [math.prod(s[axis] for s in self.strides) for axis in range(3)]
        self.patch_grid = tuple(math.ceil(n / t) * t for n, t in zip(patches, total))  # [x, y, z] patches of the padded grid
        self.padded_shape = tuple(n * p for n, p in zip(self.patch_grid, patch_size))  # the grid padded with free
        self.coarse_shape = tuple(n // t for n, t in zip(self.patch_grid, total))  # [x', y', z'] of the last level

        # 1. encoder
        self.embedding = nn.Conv3d(num_labels, embed_dim, 1)  # label shares -> mean label embedding of the patch
        self.down = nn.ModuleList()
        previous = embed_dim
        for c, stride in zip(channels, self.strides):
            self.down.append(nn.Sequential(nn.Conv3d(previous, c, 3, stride=stride, padding=1), _norm_act(c, norm_num_groups)))
            previous = c
        self.to_features = nn.Linear(2 * channels[-1], feature_dim)  # [mean, max] over the coarsest map

        # 2. decoder: the feature vector alone, back to the patches
        self.from_features = nn.Linear(feature_dim, channels[-1] * math.prod(self.coarse_shape))
        self.from_features_norm = _norm_act(channels[-1], norm_num_groups)
        self.up = nn.ModuleList()
        widths = [embed_dim, *channels]  # the patch grid's width, then each level's
        for i in reversed(range(len(channels))):  # level i's map [w_(i+1)] -> the map above it [w_i]
            parts = [nn.ConvTranspose3d(widths[i + 1], widths[i], self.strides[i], stride=self.strides[i]),
                     _norm_act(widths[i], norm_num_groups)]
            if i > 0:  # a 3x3x3 convolution at every level but the patch grid's (the costliest)
                parts += [nn.Conv3d(widths[i], widths[i], 3, padding=1), _norm_act(widths[i], norm_num_groups)]
            self.up.append(nn.Sequential(*parts))
        self.head = nn.Conv3d(embed_dim, num_labels, 1)

    def label_shares(self, semantics: torch.Tensor) -> torch.Tensor:
        """Labels [B, X, Y, Z] (0..17) on the model's grid -> each patch's label shares [B, L, x, y, z] (padding free)."""
        if semantics.ndim != 4 or tuple(semantics.shape[1:]) != tuple(self.config.grid_shape):
            raise ValueError(f"OccEvalAE takes labels [B, X, Y, Z] on its grid {tuple(self.config.grid_shape)}, got shape "
                             f"{tuple(semantics.shape)}")
        padded = F.pad(semantics.long(), _pad_amounts(semantics.shape[1:], self.padded_shape), value=FREE)  # [B, X', Y', Z']
        return label_shares(padded, tuple(self.config.patch_size), self.config.num_labels)

    def encode_shares(self, shares: torch.Tensor) -> torch.Tensor:
        """Label shares [B, L, x, y, z] -> features [B, D]."""
        x = self.embedding(shares)  # [B, E, x, y, z]
        for block in self.down:
            x = block(x)  # [B, C, x', y', z']
        return self.to_features(torch.cat([x.mean((2, 3, 4)), x.amax((2, 3, 4))], 1))  # [B, 2C] -> [B, D]

    def features(self, semantics: torch.Tensor) -> torch.Tensor:
        """Labels [B, X, Y, Z] (0..17) -> features [B, D] (the encoder alone)."""
        return self.encode_shares(self.label_shares(semantics))

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """Features [B, D] -> label scores per patch [B, L, x, y, z]."""
        x = self.from_features(features).view(features.shape[0], -1, *self.coarse_shape)  # [B, C, x', y', z']
        x = self.from_features_norm(x)
        for block in self.up:
            x = block(x)
        return self.head(x)

    def forward(self, semantics: torch.Tensor) -> OccEvalAEOutput:
        shares = self.label_shares(semantics)  # [B, L, x, y, z]
        features = self.encode_shares(shares)  # [B, D]
        return OccEvalAEOutput(logits=self.decode(features), features=features, label_shares=shares)

    @torch.no_grad()
    def reconstruct(self, semantics: torch.Tensor) -> torch.Tensor:
        """Labels [B, X, Y, Z] -> reconstructed labels [B, X, Y, Z] uint8: every voxel its patch's most likely label."""
        labels = self.decode(self.features(semantics)).argmax(1)  # [B, x, y, z]
        for axis, p in enumerate(self.config.patch_size):
            labels = labels.repeat_interleave(p, dim=axis + 1)
        gx, gy, gz = self.config.grid_shape
        return labels[:, :gx, :gy, :gz].to(torch.uint8)


def _pad_amounts(shape: tuple, padded: tuple) -> list:
    """F.pad's amounts (last dim first) that pad [.., X, Y, Z] at the far end to `padded`."""
    amounts = []
    for size, target in zip(reversed(tuple(shape)), reversed(tuple(padded))):
        amounts += [0, target - size]
    return amounts
