"""OccVAE: semantic occupancy clips <-> continuous latent frames (UniScene's occupancy VAE).

Encoder (per frame): each voxel's label (0..16, 17 free) is embedded, the height is folded into
the channels ([X, Y, Z, E] -> [Z * E, X, Y]), cut into p x p patches where patch_size p > 1 (the
tiny size, to spare a CPU the full-resolution layers), and a 2D convolutional encoder with axial attention
(along x, then along y) at its lowest resolution maps the frame to a diagonal Gaussian over a
latent [C, h, w]. Decoder (per clip): the mirror of the encoder, with temporal attention across
the clip's frames at every level, back to per-voxel logits over the 18 labels.

Latent API (what the occupancy DiT uses):
    latent_dist = vae.encode(semantics).latent_dist      # semantics [B, T, X, Y, Z] long
    latents = latent_dist.sample(generator)              # [B, T, C, h, w], h = X / d, w = Y / d
    logits = vae.decode(latents).logits                  # [B, T, 18, X, Y, Z]
with C = config.latent_channels and d = config.downsample_factor; `vae.latent_shape()` gives
(C, h, w) for the model's grid and `config.scaling_factor` scales latents to about unit variance
(set after training, as diffusers' AutoencoderKL).

Compression ratio: grid voxels per latent element, X * Y * Z / (C * h * w) (200 x 200 x 16 into
4 x 50 x 50: 64). It is written into the config.

Letters: B clips, T frames per clip, X Y Z grid, E embedding width, C channels, h w latent grid,
L = 18 labels (17 classes + free).
"""

import math
from dataclasses import dataclass

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention_processor import Attention, AttnProcessor
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from diffusers.utils import BaseOutput
from torch import nn
from torch.nn import functional as F

from uniscene.classes import FREE

NUM_LABELS = FREE + 1  # 18: the 17 classes and free

# Network sizes by config name (occ_vae.model). `paper` is the reference's: channel multipliers
# (1, 2, 4), 4 latent channels at a quarter of the grid (4 x 50 x 50 for 200 x 200 x 16).
MODEL_CONFIGS = {
    "tiny": dict(embed_dim=4, base_channels=16, channel_multipliers=(1, 2), layers_per_block=1, latent_channels=8,
                 downsample_factor=4, patch_size=2, attention_heads=2, norm_num_groups=8),
    "paper": dict(embed_dim=8, base_channels=64, channel_multipliers=(1, 2, 4), layers_per_block=2, latent_channels=4,
                  downsample_factor=4, patch_size=1, attention_heads=8, norm_num_groups=32),
}


@dataclass
class OccLatentDistribution:
    """Diagonal Gaussian over latent frames.

    mean, logvar: (batch_size, num_frames, latent_channels, height, width); `logvar` is the log of
    the variance (the reference read its sigma output as one; here it is one by name).
    """

    mean: torch.Tensor
    logvar: torch.Tensor

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(N(mean, exp(logvar)) || N(0, 1)) per latent element, same shape as `mean`."""
        return 0.5 * (self.mean.square() + self.logvar.exp() - 1.0 - self.logvar)


@dataclass
class OccVAEEncoderOutput(BaseOutput):
    """latent_dist: OccLatentDistribution over (batch_size, num_frames, latent_channels, height, width)."""

    latent_dist: OccLatentDistribution


@dataclass
class OccVAEDecoderOutput(BaseOutput):
    """logits: (batch_size, num_frames, 18, grid_x, grid_y, grid_z) over the 17 classes and free (17)."""

    logits: torch.Tensor


@dataclass
class OccVAEOutput(BaseOutput):
    """
    logits: (batch_size, num_frames, 18, grid_x, grid_y, grid_z).
    latent_dist: OccLatentDistribution over (batch_size, num_frames, latent_channels, height, width).
    """

    logits: torch.Tensor
    latent_dist: OccLatentDistribution


def _attention(channels: int, heads: int) -> Attention:
    """Self-attention over [N, L, C] sequences whose output projection starts at zero (the block starts as identity)."""
    attention = Attention(query_dim=channels, heads=heads, dim_head=channels // heads, bias=True, out_bias=True)
    nn.init.zeros_(attention.to_out[0].weight)
    nn.init.zeros_(attention.to_out[0].bias)
    return attention


class AxialAttention(nn.Module):
    """Self-attention along x (the cells of each y column), then along y, of [N, C, X, Y] feature maps.

    Two 1D attentions see a whole row and a whole column of the grid at O(X + Y) cost per cell.
    """

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.norm_x = nn.GroupNorm(groups, channels, eps=1e-6)
        self.attn_x = _attention(channels, heads)
        self.norm_y = nn.GroupNorm(groups, channels, eps=1e-6)
        self.attn_y = _attention(channels, heads)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # [N, C, X, Y]
        n, c, x, y = hidden.shape
        # 1. along x: one sequence of X cells per (frame, y)
        seq = self.norm_x(hidden).permute(0, 3, 2, 1).reshape(n * y, x, c)
        hidden = hidden + self.attn_x(seq).reshape(n, y, x, c).permute(0, 3, 2, 1)
        # 2. along y: one sequence of Y cells per (frame, x)
        seq = self.norm_y(hidden).permute(0, 2, 3, 1).reshape(n * x, y, c)
        return hidden + self.attn_y(seq).reshape(n, x, y, c).permute(0, 3, 1, 2)


class TemporalAttention(nn.Module):
    """Self-attention across the T frames of a clip at every cell of [B * T, C, h, w] feature maps.

    Frames are told apart by a sinusoidal embedding of their index within the clip. The attention is
    plain batched matrix products: a full-resolution level makes B * X * Y sequences of T frames, far more
    than the fused SDPA kernels take (cuDNN's failed in backward at 160 000 of them on an H100).
    """

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.attn = _attention(channels, heads)
        self.attn.set_processor(AttnProcessor())

    def forward(self, hidden: torch.Tensor, num_frames: int) -> torch.Tensor:  # [B * T, C, h, w]
        bt, c, h, w = hidden.shape
        b = bt // num_frames
        # [B * T, C, h, w] -> [B * h * w, T, C]
        seq = self.norm(hidden).reshape(b, num_frames, c, h, w).permute(0, 3, 4, 1, 2).reshape(b * h * w, num_frames, c)
        position = get_timestep_embedding(torch.arange(num_frames, device=hidden.device), c).to(seq.dtype)  # [T, C]
        out = self.attn(seq + position)
        return hidden + out.reshape(b, h, w, num_frames, c).permute(0, 3, 4, 1, 2).reshape(bt, c, h, w)


def _resnet(in_channels: int, out_channels: int, groups: int) -> ResnetBlock2D:
    return ResnetBlock2D(in_channels=in_channels, out_channels=out_channels, temb_channels=None, groups=groups, eps=1e-6)


class OccVAE(ModelMixin, ConfigMixin):
    """Semantic occupancy [B, T, X, Y, Z] (labels 0..17) <-> latents [B, T, C, h, w] <-> logits [B, T, 18, X, Y, Z].

    grid_shape: (X, Y, Z) of the occupancy the model is trained for; the height Z is folded into the
    channels, X and Y must be multiples of `downsample_factor` d (X = h * d, Y = w * d): a patch_size p
    stride, then log2(d / p) halvings, after the first levels of `channel_multipliers`. Encoding works per
    frame; decoding attends across the frames of a clip, of any length T.
    """

    @register_to_config
    def __init__(
        self,
        grid_shape: tuple = (200, 200, 16),
        embed_dim: int = 8,
        base_channels: int = 64,
        channel_multipliers: tuple = (1, 2, 4),
        layers_per_block: int = 2,
        latent_channels: int = 4,
        downsample_factor: int = 4,
        patch_size: int = 1,
        attention_heads: int = 8,
        norm_num_groups: int = 32,
        scaling_factor: float = 1.0,
        compression_ratio: float | None = None,
    ):
        super().__init__()
        grid_x, grid_y, grid_z = (int(v) for v in grid_shape)
        levels = len(channel_multipliers)
        steps = downsample_factor // patch_size if patch_size >= 1 and downsample_factor % patch_size == 0 else 0
        num_down = round(math.log2(steps)) if steps >= 1 else -1
        if num_down < 0 or 2**num_down != steps or num_down > levels:
            raise ValueError(
                f"downsample_factor {downsample_factor} must be patch_size {patch_size} times a power of two of at most "
                f"2 ** len(channel_multipliers) = {2 ** levels} (channel_multipliers {tuple(channel_multipliers)})"
            )
        if grid_x % downsample_factor or grid_y % downsample_factor:
            raise ValueError(f"grid_shape {tuple(grid_shape)}: X and Y must be multiples of downsample_factor {downsample_factor}")
        channels = [base_channels * m for m in channel_multipliers]
        for c in channels:
            if c % norm_num_groups or c % attention_heads:
                raise ValueError(f"channels {channels} must be multiples of norm_num_groups {norm_num_groups} "
                                 f"and attention_heads {attention_heads}")
        ratio = grid_x * grid_y * grid_z / (latent_channels * (grid_x // downsample_factor) * (grid_y // downsample_factor))
        if compression_ratio is not None and not math.isclose(compression_ratio, ratio):
            raise ValueError(f"compression_ratio {compression_ratio} does not follow from grid_shape {tuple(grid_shape)}, "
                             f"latent_channels {latent_channels} and downsample_factor {downsample_factor} ({ratio})")
        self.register_to_config(compression_ratio=ratio)
        self.num_down = num_down
        groups = norm_num_groups

        # encoder: embedding -> conv_in -> levels (downsampling after the first num_down) -> mid -> moments
        self.embed = nn.Embedding(NUM_LABELS, embed_dim)
        self.enc_in = (nn.Conv2d(grid_z * embed_dim, channels[0], 3, padding=1) if patch_size == 1
                       else nn.Conv2d(grid_z * embed_dim, channels[0], patch_size, stride=patch_size))
        self.enc_levels = nn.ModuleList()
        previous = channels[0]
        for i, c in enumerate(channels):
            blocks = nn.ModuleList()
            for _ in range(layers_per_block):
                blocks.append(_resnet(previous, c, groups))
                previous = c
            down = Downsample2D(c, use_conv=True, out_channels=c, padding=1, name="op") if i < num_down else nn.Identity()  # "op": no aliased weights (safetensors refuses them)
            self.enc_levels.append(nn.ModuleDict({"blocks": blocks, "down": down}))
        self.enc_mid = nn.ModuleList([_resnet(previous, previous, groups), AxialAttention(previous, attention_heads, groups),
                                      _resnet(previous, previous, groups)])
        self.enc_norm = nn.GroupNorm(groups, previous, eps=1e-6)
        self.enc_out = nn.Conv2d(previous, 2 * latent_channels, 3, padding=1)

        # decoder: conv_in -> mid (axial + temporal) -> levels reversed (upsampling before the first num_down) -> logits
        self.dec_in = nn.Conv2d(latent_channels, channels[-1], 3, padding=1)
        top = channels[-1]
        self.dec_mid = nn.ModuleList([_resnet(top, top, groups), AxialAttention(top, attention_heads, groups),
                                      TemporalAttention(top, attention_heads, groups), _resnet(top, top, groups)])
        self.dec_levels = nn.ModuleList()
        previous = top
        for i in reversed(range(levels)):
            c = channels[i]
            up = Upsample2D(previous, use_conv=True, out_channels=previous) if i < num_down else nn.Identity()
            blocks = nn.ModuleList()
            for _ in range(layers_per_block + 1):
                blocks.append(_resnet(previous, c, groups))
                previous = c
            self.dec_levels.append(nn.ModuleDict({"up": up, "blocks": blocks, "temporal": TemporalAttention(c, attention_heads, groups)}))
        self.dec_norm = nn.GroupNorm(groups, previous, eps=1e-6)
        self.dec_out = nn.Conv2d(previous, grid_z * NUM_LABELS * patch_size**2, 1)

    def latent_shape(self, grid_shape: tuple | None = None) -> tuple:
        """(C, h, w) of one frame's latent for `grid_shape` (default: the model's)."""
        grid_x, grid_y, _ = grid_shape or self.config.grid_shape
        d = self.config.downsample_factor
        return (self.config.latent_channels, grid_x // d, grid_y // d)

    def _check_grid(self, shape: tuple) -> None:
        """X and Y may differ from the model's grid (training crops) but must divide; Z is fixed by the channels."""
        d, z = self.config.downsample_factor, self.config.grid_shape[2]
        if shape[2] != z or shape[0] % d or shape[1] % d:
            raise ValueError(f"occupancy grid {tuple(shape)} does not fit this OccVAE (grid_shape {tuple(self.config.grid_shape)}: "
                             f"Z must be {z}, X and Y multiples of {d})")

    def encode(self, semantics: torch.Tensor, return_dict: bool = True):
        """semantics [B, T, X, Y, Z] integer labels 0..17 -> latent distribution over [B, T, C, h, w]."""
        if semantics.ndim != 5:
            raise ValueError(f"semantics must be [B, T, X, Y, Z], got shape {tuple(semantics.shape)}")
        b, t, x, y, z = semantics.shape
        self._check_grid((x, y, z))
        # 1. embed and fold the height into channels: [B * T, X, Y, Z, E] -> [B * T, Z * E, X, Y]
        hidden = self.embed(semantics.reshape(b * t, x, y, z).long())
        hidden = hidden.permute(0, 3, 4, 1, 2).reshape(b * t, z * self.config.embed_dim, x, y)
        # 2. levels down to [B * T, C_top, h, w]
        hidden = self.enc_in(hidden)
        for level in self.enc_levels:
            for block in level["blocks"]:
                hidden = block(hidden, None)
            hidden = level["down"](hidden)
        hidden = self.enc_mid[0](hidden, None)
        hidden = self.enc_mid[1](hidden)
        hidden = self.enc_mid[2](hidden, None)
        # 3. moments: [B * T, 2C, h, w] -> mean, logvar [B, T, C, h, w]
        moments = self.enc_out(F.silu(self.enc_norm(hidden)))
        moments = moments.reshape(b, t, *moments.shape[1:])
        mean, logvar = moments.chunk(2, dim=2)
        dist = OccLatentDistribution(mean, logvar.clamp(-30.0, 20.0))
        return OccVAEEncoderOutput(latent_dist=dist) if return_dict else (dist,)

    def decode(self, latents: torch.Tensor, return_dict: bool = True):
        """latents [B, T, C, h, w] -> logits [B, T, 18, X, Y, Z] (X = h * d, Y = w * d, Z of the model's grid)."""
        if latents.ndim != 5 or latents.shape[2] != self.config.latent_channels:
            raise ValueError(f"latents must be [B, T, {self.config.latent_channels}, h, w], got shape {tuple(latents.shape)}")
        b, t, c, h, w = latents.shape
        z = self.config.grid_shape[2]
        # 1. mid block at the latent resolution: [B * T, C_top, h, w]
        hidden = self.dec_in(latents.reshape(b * t, c, h, w))
        hidden = self.dec_mid[0](hidden, None)
        hidden = self.dec_mid[1](hidden)
        hidden = self.dec_mid[2](hidden, t)
        hidden = self.dec_mid[3](hidden, None)
        # 2. levels up to [B * T, C_0, X, Y], frames of a clip attending to each other at each level
        for level in self.dec_levels:
            hidden = level["up"](hidden)
            for block in level["blocks"]:
                hidden = block(hidden, None)
            hidden = level["temporal"](hidden, t)
        # 3. unfold the patches and the height: [B * T, Z * 18 * p * p, X / p, Y / p] -> [B, T, 18, X, Y, Z]
        logits = F.pixel_shuffle(self.dec_out(F.silu(self.dec_norm(hidden))), self.config.patch_size)
        x, y = logits.shape[-2:]
        logits = logits.reshape(b, t, z, NUM_LABELS, x, y).permute(0, 1, 3, 4, 5, 2)
        return OccVAEDecoderOutput(logits=logits) if return_dict else (logits,)

    def forward(self, semantics: torch.Tensor, sample_posterior: bool = True, generator: torch.Generator | None = None,
                return_dict: bool = True):
        """semantics [B, T, X, Y, Z] -> logits [B, T, 18, X, Y, Z] through a sampled (or the mean) latent."""
        dist = self.encode(semantics).latent_dist
        latents = dist.sample(generator) if sample_posterior else dist.mode()
        logits = self.decode(latents).logits
        return OccVAEOutput(logits=logits, latent_dist=dist) if return_dict else (logits, dist)

    @torch.no_grad()
    def reconstruct(self, semantics: torch.Tensor) -> torch.Tensor:
        """semantics [B, T, X, Y, Z] -> the most likely labels [B, T, X, Y, Z] uint8, decoded from the latent mean."""
        return self.decode(self.encode(semantics).latent_dist.mode()).logits.argmax(2).to(torch.uint8)
