"""OccDiT: a diffusion transformer over the occupancy VAE's latent frames, conditioned on BEV layouts.

Tokens are p x p patches of each latent frame. The layout (18 channels, at the occupancy grid's
x-y resolution) is area-pooled to the latent's h x w and patch-embedded by its own projection,
whose tokens are added to the latent tokens (a learned null token replaces them where the layout
is dropped, for classifier-free guidance). Sinusoidal embeddings of (t, y, x) are added once.
Blocks alternate attention within a frame (spatial, N tokens) and across frames (temporal, T
tokens at one patch position). Every block is modulated adaLN-Zero style by the embedding of
its frame's diffusion timestep (one per frame, so that frames given clean as context carry
timestep 0), plus an optional "meta" vector; all modulations and the output projection start at
zero, so the network's output is zero at initialisation.

Letters: B clips, T frames, C latent channels, h w latent size, L layout channels, X Y grid
cells, p patch edge, N = (h / p) (w / p) tokens per frame, D hidden size, M meta numbers.
"""

import math
from dataclasses import dataclass

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.utils import BaseOutput
from torch import nn
from torch.nn import functional as F

from uniscene.classes import LAYOUT_CHANNEL_NAMES

MODEL_CONFIGS = {
    # trains in minutes on 2 CPU cores (the default run and the tests)
    "tiny": dict(hidden_size=64, depth=4, num_heads=4, patch_size=2, mlp_ratio=2.0),
    # the method's size (GPUs): hidden 512, 12 blocks (6 spatial + 6 temporal), 16 heads, patch 2
    "paper": dict(hidden_size=512, depth=12, num_heads=16, patch_size=2, mlp_ratio=4.0),
}


@dataclass
class OccDiTOutput(BaseOutput):
    """
    sample: (batch_size, num_frames, num_channels, height, width), the prediction (noise or
    velocity, as the scheduler's prediction_type says) for every latent frame.
    """

    sample: torch.Tensor


def sincos_embedding(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer sinusoids of positions [...] -> [..., dim] (dim even; periods up to 10000)."""
    if dim % 2:
        raise ValueError(f"sinusoidal embedding needs an even dim, got {dim}")
    frequency = torch.exp(-math.log(10000.0) * torch.arange(dim // 2, device=positions.device, dtype=torch.float32) / (dim // 2))
    angle = positions.float()[..., None] * frequency
    return torch.cat([torch.sin(angle), torch.cos(angle)], -1)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class _Attention(nn.Module):
    """Multi-head self-attention over the second-to-last axis, through F.scaled_dot_product_attention
    (flash / memory-efficient kernels where the device has them); RMS-normalised queries and keys
    keep the logits bounded in bf16."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.norm_q = nn.RMSNorm(dim // num_heads, eps=1e-6)
        self.norm_k = nn.RMSNorm(dim // num_heads, eps=1e-6)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [S, n, D] -> [S, n, D]
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.num_heads, dim // self.num_heads).unbind(2)  # [S, n, heads, D / heads]
        q, k, v = self.norm_q(q).transpose(1, 2), self.norm_k(k).transpose(1, 2), v.transpose(1, 2)  # normalised before the transpose: contiguous rows
        out = F.scaled_dot_product_attention(q, k, v)  # [S, heads, n, D / heads]
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class OccDiTBlock(nn.Module):
    """Attention (within a frame or across frames) + MLP, each gated by adaLN-Zero modulation."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, temporal: bool):
        super().__init__()
        self.temporal = temporal
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = _Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x [B, T, N, D] tokens, c [B, T, D] conditioning of each frame -> [B, T, N, D]."""
        batch, frames, tokens, dim = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c)[:, :, None].chunk(6, -1)  # [B, T, 1, D] each
        h = _modulate(self.norm1(x), shift1, scale1)
        if self.temporal:  # [B, T, N, D] -> [B N, T, D]: each patch position attends across frames
            h = self.attn(h.permute(0, 2, 1, 3).reshape(batch * tokens, frames, dim))
            h = h.view(batch, tokens, frames, dim).permute(0, 2, 1, 3)
        else:  # [B T, N, D]: each frame attends within itself
            h = self.attn(h.reshape(batch * frames, tokens, dim)).view(batch, frames, tokens, dim)
        x = x + gate1 * h
        return x + gate2 * self.mlp(_modulate(self.norm2(x), shift2, scale2))


class OccDiT(ModelMixin, ConfigMixin):
    """Layout-conditioned latent-video DiT: (noisy latents [B, T, C, h, w], per-frame timesteps,
    layouts [B, T, L, X, Y]) -> prediction [B, T, C, h, w].

    `sample_size` is the whole latent frame; training may pass crops (with `position_offset`, and
    layouts already pooled and cropped alike), which the sinusoidal positions make consistent.

    `num_frames` / `context_frames`: the clip length and the leading frames given clean as context
    that the network was trained with (the pipeline's defaults). `latent_mean` / `latent_std` (per channel) are the statistics of the VAE's latents on the
    training set; the pipeline normalises latents with them before the network sees them.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        sample_size: tuple = (50, 50),
        num_frames: int = 5,
        context_frames: int = 1,
        layout_channels: int = len(LAYOUT_CHANNEL_NAMES),
        meta_channels: int = 4,
        hidden_size: int = 64,
        depth: int = 4,
        num_heads: int = 4,
        patch_size: int = 1,
        mlp_ratio: float = 2.0,
        latent_mean: tuple = (),
        latent_std: tuple = (),
    ):
        super().__init__()
        height, width = sample_size
        if height % patch_size or width % patch_size:
            raise ValueError(f"sample_size {tuple(sample_size)} must be divisible by patch_size {patch_size}")
        if hidden_size % num_heads or (hidden_size // num_heads) % 2:
            raise ValueError(f"hidden_size {hidden_size} must split into num_heads {num_heads} heads of even width")
        if hidden_size % 4:
            raise ValueError(f"hidden_size {hidden_size} must be divisible by 4 (sinusoids of y and x, two halves each)")
        if depth < 2 or depth % 2:
            raise ValueError(f"depth {depth} must be even and >= 2: blocks alternate spatial and temporal attention")
        self.gradient_checkpointing = False
        # 1. embeddings
        self.patch_embed = nn.Conv2d(in_channels, hidden_size, patch_size, stride=patch_size)
        self.layout_embed = nn.Conv2d(layout_channels, hidden_size, patch_size, stride=patch_size)
        self.null_layout = nn.Parameter(torch.zeros(hidden_size))
        self.time_proj = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(256, hidden_size)
        if meta_channels:
            self.meta_embed = nn.Sequential(nn.Linear(meta_channels, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))
            self.null_meta = nn.Parameter(torch.zeros(hidden_size))
        # 2. blocks: spatial, temporal, spatial, ...
        self.blocks = nn.ModuleList(OccDiTBlock(hidden_size, num_heads, mlp_ratio, temporal=bool(i % 2)) for i in range(depth))
        # 3. output
        self.norm_out = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.adaLN_out = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))
        self.proj_out = nn.Linear(hidden_size, patch_size * patch_size * in_channels)
        self._init_weights()

    def _init_weights(self):
        """Xavier linears, a normal timestep MLP, and adaLN-Zero: every modulation and the output projection zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for conv in (self.patch_embed, self.layout_embed):
            nn.init.xavier_uniform_(conv.weight.view(conv.weight.shape[0], -1))
            nn.init.zeros_(conv.bias)
        for linear in (self.time_embed.linear_1, self.time_embed.linear_2):
            nn.init.normal_(linear.weight, std=0.02)
        for modulation in [block.adaLN_modulation[-1] for block in self.blocks] + [self.adaLN_out[-1], self.proj_out]:
            nn.init.zeros_(modulation.weight)
            nn.init.zeros_(modulation.bias)

    def pool_layout(self, layout: torch.Tensor) -> torch.Tensor:
        """Area-pool layouts [B, T, L, X, Y] to the latent size -> [B, T, L, h, w] (share of each latent cell set)."""
        batch, frames = layout.shape[:2]
        pooled = F.adaptive_avg_pool2d(layout.flatten(0, 1).float(), tuple(self.config.sample_size))
        return pooled.view(batch, frames, *pooled.shape[1:])

    def _positions(self, frames: int, height: int, width: int, offset: tuple, device) -> torch.Tensor:
        """Sinusoids of (t, y, x): [T, N, D]; t on all D channels, y and x on half each; `offset` (latent
        cells) places a crop of h x w latent cells where it lies in the whole latent frame."""
        p, dim = self.config.patch_size, self.config.hidden_size
        rows = torch.arange(height // p, device=device) + offset[0] // p
        cols = torch.arange(width // p, device=device) + offset[1] // p
        ys, xs = torch.meshgrid(rows, cols, indexing="ij")
        spatial = torch.cat([sincos_embedding(ys.reshape(-1), dim // 2), sincos_embedding(xs.reshape(-1), dim // 2)], -1)  # [N, D]
        temporal = sincos_embedding(torch.arange(frames, device=device), dim)  # [T, D]
        return temporal[:, None] + spatial[None]

    def forward(
        self,
        sample: torch.Tensor,  # [B, T, C, h, w] noisy normalised latents
        timestep: torch.Tensor,  # [B] or [B, T] diffusion timestep of each clip or frame
        layout: torch.Tensor,  # [B, T, L, X, Y] layout (any X, Y: area-pooled to h x w) or [B, T, L, h, w]
        layout_dropped: torch.Tensor | None = None,  # [B] bool: use the null layout (classifier-free guidance)
        meta: torch.Tensor | None = None,  # [B, M] scene statistics (off by default: None = the null meta)
        meta_dropped: torch.Tensor | None = None,  # [B] bool: use the null meta for these clips
        position_offset: tuple = (0, 0),  # latent cells (multiples of p) where a training crop starts in the whole frame
        return_dict: bool = True,
    ):
        batch, frames, channels, height, width = sample.shape
        p, dim = self.config.patch_size, self.config.hidden_size
        if channels != self.config.in_channels or height % p or width % p:
            raise ValueError(f"sample must be [B, T, {self.config.in_channels}, h, w] with h, w multiples of patch_size {p} "
                             f"(the whole frame: {tuple(self.config.sample_size)}), got {tuple(sample.shape)}")
        if layout.shape[:3] != (batch, frames, self.config.layout_channels):
            raise ValueError(f"layout must be [B, T, {self.config.layout_channels}, X, Y] with B, T = {batch}, {frames}, "
                             f"got {tuple(layout.shape)}")

        # 1. conditioning of each frame: timestep (+ meta) -> c [B, T, D]
        timestep = torch.as_tensor(timestep, device=sample.device)
        timestep = timestep.reshape(-1, 1).expand(batch, frames) if timestep.ndim < 2 else timestep
        c = self.time_embed(self.time_proj(timestep.reshape(-1)).to(sample.dtype)).view(batch, frames, dim)
        if self.config.meta_channels:
            if meta is None:
                c = c + self.null_meta
            else:
                embedded = self.meta_embed(meta.to(sample.dtype))  # [B, D]
                if meta_dropped is not None:
                    embedded = torch.where(meta_dropped[:, None], self.null_meta.to(embedded.dtype), embedded)
                c = c + embedded[:, None]

        # 2. tokens: latent patches + layout patches (or the null layout) + (t, y, x) sinusoids -> [B, T, N, D]
        x = self.patch_embed(sample.flatten(0, 1)).flatten(2).transpose(1, 2)  # [B T, N, D]
        pooled = layout.float() if layout.shape[-2:] == (height, width) else self.pool_layout(layout)
        if pooled.shape[-2:] != (height, width):
            raise ValueError(f"layout {tuple(layout.shape)} pools to {tuple(pooled.shape[-2:])}, the sample is {height} x {width}: "
                             "pass crops of pooled layouts with crops of latents")
        cond = self.layout_embed(pooled.flatten(0, 1).to(x.dtype)).flatten(2).transpose(1, 2)  # [B T, N, D]
        x = x.view(batch, frames, -1, dim)
        cond = cond.view(batch, frames, -1, dim)
        if layout_dropped is not None:
            cond = torch.where(layout_dropped.view(batch, 1, 1, 1), self.null_layout.to(cond.dtype), cond)
        x = x + cond + self._positions(frames, height, width, position_offset, sample.device).to(x.dtype)

        # 3. blocks alternating spatial and temporal attention
        for block in self.blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                x = self._gradient_checkpointing_func(block, x, c)
            else:
                x = block(x, c)

        # 4. adaLN output head, unpatchify [B, T, N, p p C] -> [B, T, C, h, w]
        shift, scale = self.adaLN_out(c)[:, :, None].chunk(2, -1)
        out = self.proj_out(_modulate(self.norm_out(x), shift, scale))
        out = out.view(batch, frames, height // p, width // p, p, p, channels)
        out = out.permute(0, 1, 6, 2, 4, 3, 5).reshape(batch, frames, channels, height, width)
        if not return_dict:
            return (out,)
        return OccDiTOutput(sample=out)
