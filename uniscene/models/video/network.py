"""MultiViewVideoModel: a UNet of the Stable Video Diffusion family conditioned on rendered maps, cameras and boxes,
with attention between neighbouring cameras.

The UNet is diffusers' `UNetSpatioTemporalConditionModel`, unchanged, so that a user's SVD `unet/`
folder loads into it: its input is the noisy latents concatenated with a second latent (SVD's
image latent; here the clean context frames of a chained clip, zero elsewhere), its
encoder_hidden_states are cross-attended in every transformer, and its `added_time_ids` are SVD's
(fps, motion bucket, noise augmentation). Everything new lives in `MultiViewAdapter`, a model of its
own (saved as `adapter/`):

- the condition encoder (ControlNet-style): the rendered semantic map (one-hot, background its own
  channel), the depth map, a "maps given" flag and the context mask, at the video size, convolved
  down to the latent size and added to the UNet's conv_in output through a zero-initialised
  convolution, so that the UNet starts as it was;
- tokens: one per camera (intrinsics normalised by the image size, `ego_from_cam`) and one per box
  in view (class, its eight projected corners, depth), a learned null token for empty box slots;
- cross-view attention after every spatio-temporal transformer: each camera's tokens attend to
  their own and their two ring neighbours' (nuScenes' cameras in `sensors.CAMERA_NAMES` order make
  a ring: FRONT, FRONT_RIGHT, BACK_RIGHT, BACK, BACK_LEFT, FRONT_LEFT and round again) at the same
  frame; the output projection starts at zero, so the block starts as the identity. The config's
  `cross_view` false builds none (the comparison the reference ships switched off).

`MultiViewVideoModel.forward` walks the UNet's blocks itself (the loops of diffusers' own forward,
with the condition features added after conv_in and cross-view attention after each transformer)
rather than patching the UNet with hooks. Classifier-free guidance drops the occupancy conditions:
maps zeroed with the "maps given" flag off and every box slot the null token; the cameras stay.

Letters: B clips, V cameras, F frames per clip, C latent channels, h w latent size, H W image size,
M box slots per camera and frame, D token width, N = h w tokens of one image.
"""

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, ConfigMixin, ModelMixin, UNetSpatioTemporalConditionModel
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from uniscene.classes import NUM_RENDER_CLASSES
from uniscene.sensors import CAMERA_NAMES

CAMERA_FEATURES = 16  # fx / W, fy / H, cx / W, cy / H, ego_from_cam's rotation (9) and translation / 2 m (3)
BOX_FEATURES = 10 + 16 + 1  # detection class one-hot, 8 corners (u, v) in [-1, 1] image units, mean depth / 50 m
MAP_CHANNELS = NUM_RENDER_CLASSES + 1 + 3  # one-hot classes and background, depth, maps-given flag, context mask
ADDED_TIME_IDS = (12.0, 127.0, 0.0)  # SVD's (fps, motion bucket id, noise augmentation): 12 Hz, its default motion, none

_CROSS_DOWN, _CROSS_UP = "CrossAttnDownBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"
_DOWN, _UP = "DownBlockSpatioTemporal", "UpBlockSpatioTemporal"  # resnets only
MODEL_CONFIGS = {
    # 96 x 160 images, a 16x autoencoder with 8 channels (6 x 10 latents): what 2 CPU cores sample a scene with in under a minute
    "tiny": {
        "vae": dict(block_out_channels=(8, 16, 32, 64, 64), layers_per_block=1, latent_channels=8, norm_num_groups=8),
        "unet": dict(block_out_channels=(32, 64), down_block_types=(_CROSS_DOWN,) * 2, up_block_types=(_CROSS_UP,) * 2,
                     layers_per_block=1, num_attention_heads=(1, 2), cross_attention_dim=32, addition_time_embed_dim=16,
                     projection_class_embeddings_input_dim=48),
        "adapter": dict(condition_channels=(32, 64), head_dim=32),  # 8 x 8 patches, then one stride-2 stage
    },
    # GPUs, 256 x 512 images (32 x 64 latents): SVD's block layout at 0.4x its widths, but no transformers at the full
    # latent size (as SDXL): there a frame is 2048 tokens, and their self- and cross-view attention (each token against
    # three frames) took 43 % of a guided step's FLOPs (382 -> 218 TFLOP a 25-step clip). The bottom level, 4 x 8
    # tokens, is 640 wide (SVD's is as wide as the one above it): capacity where it costs little (~290 M parameters
    # with the adapter, 225 TFLOP a clip)
    "paper": {
        "vae": dict(block_out_channels=(64, 128, 256, 256), layers_per_block=2, latent_channels=4, norm_num_groups=32),
        "unet": dict(block_out_channels=(128, 256, 512, 640), down_block_types=(_DOWN, _CROSS_DOWN, _CROSS_DOWN, _DOWN),
                     up_block_types=(_UP, _CROSS_UP, _CROSS_UP, _UP), layers_per_block=2, num_attention_heads=(2, 4, 8, 8),
                     cross_attention_dim=512, addition_time_embed_dim=256, projection_class_embeddings_input_dim=768),
        "adapter": dict(condition_channels=(64, 128, 256), head_dim=64),  # 2 x 2 patches, then two stride-2 stages
    },
}


def autoencoder(model: str) -> AutoencoderKL:
    """A fresh image autoencoder of MODEL_CONFIGS[model] (downsampling 2^(levels - 1))."""
    config = MODEL_CONFIGS[model]["vae"]
    levels = len(config["block_out_channels"])
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * levels,
                         up_block_types=("UpDecoderBlock2D",) * levels, **config)


def spatio_temporal_unet(model: str, latent_channels: int, num_frames: int) -> UNetSpatioTemporalConditionModel:
    """A fresh UNet of MODEL_CONFIGS[model]: input the noisy and the context latents (2C channels), output C."""
    return UNetSpatioTemporalConditionModel(in_channels=2 * latent_channels, out_channels=latent_channels, num_frames=num_frames,
                                            **MODEL_CONFIGS[model]["unet"])


def unet_downsampling(unet: UNetSpatioTemporalConditionModel) -> int:
    """How many times the UNet halves the latent frame (a latent size must divide by 2 to this power)."""
    return len(unet.config.block_out_channels) - 1


def transformer_channels(unet: UNetSpatioTemporalConditionModel) -> tuple:
    """Channels of each spatio-temporal transformer, in the order MultiViewVideoModel.forward visits them."""
    blocks = [*unet.down_blocks, unet.mid_block, *unet.up_blocks]
    return tuple(attn.in_channels for block in blocks for attn in getattr(block, "attentions", []))


@dataclass
class MultiViewVideoOutput(BaseOutput):
    """
    sample: (batch_size, num_views, num_frames, num_channels, height, width), the prediction (noise or
    velocity, as the scheduler's prediction_type says) for every latent image of the clips.
    """

    sample: torch.Tensor


@dataclass
class VideoConditions:
    """The conditions of B clips of V cameras and F frames, as the network reads them.

    context_mask [B, F] bool (the frame is given as context); semantic [B, V, F, H, W] uint8 render
    classes, 255 background; depth [B, V, F, H, W] in [0, 1] (conditions.depth_feature); cameras
    [B, V, F, CAMERA_FEATURES]; boxes [B, V, F, M, BOX_FEATURES]; box_valid [B, V, F, M] bool;
    dropped [B] bool: no maps and boxes (classifier-free guidance's unconditional clips).
    """

    context_mask: torch.Tensor
    semantic: torch.Tensor
    depth: torch.Tensor
    cameras: torch.Tensor
    boxes: torch.Tensor
    box_valid: torch.Tensor
    dropped: torch.Tensor

    def to(self, device) -> "VideoConditions":
        return VideoConditions(*(getattr(self, name).to(device) for name in self.__dataclass_fields__))


@dataclass
class EncodedConditions:
    """VideoConditions through the adapter (constant over a clip's denoising steps, so computed once):
    features [B V F, c0, h, w] added after conv_in, tokens [B V F, 1 + M, D]."""

    features: torch.Tensor
    tokens: torch.Tensor


class CrossViewAttention(nn.Module):
    """Each camera's tokens attend to those of itself and its two ring neighbours at the same frame.

    x [B, V, F, C, h, w] -> the same shape. Keys carry a learned embedding of their slot (left
    neighbour, self, right neighbour). The output projection is zero-initialised: the identity at first.
    """

    def __init__(self, channels: int, head_dim: int = 32):
        super().__init__()
        self.num_heads = max(1, channels // head_dim)
        self.norm = nn.GroupNorm(min(32, channels), channels, eps=1e-6)
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_kv = nn.Linear(channels, 2 * channels, bias=False)
        self.slot_embedding = nn.Parameter(torch.randn(3, channels) * 0.02)  # left, self, right
        self.to_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, views, frames, channels, height, width = x.shape
        heads, n = self.num_heads, height * width
        tokens = self.norm(x.flatten(0, 2)).flatten(2).transpose(1, 2)  # [B V F, N, C]
        tokens = tokens.view(batch, views, frames, n, channels)
        # keys and values of view v: views v - 1, v, v + 1 (roll by +1 puts view v - 1 at v)
        ring = torch.stack([tokens.roll(1, dims=1), tokens, tokens.roll(-1, dims=1)], 3)  # [B, V, F, 3, N, C]
        ring = (ring + self.slot_embedding[:, None].to(ring.dtype)).flatten(3, 4)  # [B, V, F, 3 N, C]
        q = self.to_q(tokens).view(-1, n, heads, channels // heads).transpose(1, 2)  # [B V F, heads, N, C / heads]
        k, v = self.to_kv(ring).view(-1, 3 * n, 2, heads, channels // heads).unbind(2)  # [B V F, 3 N, heads, C / heads]
        out = F.scaled_dot_product_attention(q, k.transpose(1, 2), v.transpose(1, 2))  # [B V F, heads, N, C / heads]
        out = self.to_out(out.transpose(1, 2).reshape(-1, n, channels))  # [B V F, N, C]
        return x + out.transpose(1, 2).reshape(x.shape)


class ConditionEncoder(nn.Module):
    """Maps at the image size [S, MAP_CHANNELS, H, W] -> features at the latent size [S, out_channels, H / f, W / f].

    A patch embedding (p x p patches, stride p) then one stride-2 stage per entry of `channels` after
    the first: f = p 2^(len(channels) - 1). Work at the image size is one strided convolution, cheap
    on a CPU. The last convolution is zero-initialised, so the features start at zero (ControlNet's
    zero convolution).
    """

    def __init__(self, channels: tuple, out_channels: int, patch: int):
        super().__init__()
        layers = [nn.Conv2d(MAP_CHANNELS, channels[0], patch, stride=patch), nn.SiLU(), nn.Conv2d(channels[0], channels[0], 3, padding=1),
                  nn.SiLU()]
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, padding=1), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.zero_conv = nn.Conv2d(channels[-1], out_channels, 1)
        nn.init.zeros_(self.zero_conv.weight)
        nn.init.zeros_(self.zero_conv.bias)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.zero_conv(self.body(maps))


class MultiViewAdapter(ModelMixin, ConfigMixin):
    """What MultiViewVideoModel adds to the UNet: the condition encoder, the camera and box tokens, cross-view attention.

    `num_frames` / `context_frames`: the clip length and the leading context frames it was trained
    with (the pipeline's defaults); `image_size` (H, W) the video size; `downsample_factor` the
    autoencoder's (H / h).
    """

    @register_to_config
    def __init__(
        self,
        unet_channels: int = 64,  # the UNet's conv_in output channels (block_out_channels[0])
        cross_attention_dim: int = 64,  # the UNet's token width D
        cross_view_channels: tuple = (),  # channels of each UNet transformer (transformer_channels)
        cross_view: bool = True,
        head_dim: int = 32,
        condition_channels: tuple = (32, 64),
        num_views: int = len(CAMERA_NAMES),
        max_boxes: int = 16,
        image_size: tuple = (96, 160),
        downsample_factor: int = 8,
        num_frames: int = 8,
        context_frames: int = 1,
    ):
        super().__init__()
        patch = downsample_factor // 2 ** (len(condition_channels) - 1)
        if patch < 1 or patch * 2 ** (len(condition_channels) - 1) != downsample_factor:
            raise ValueError(f"condition_channels {tuple(condition_channels)} give {len(condition_channels) - 1} stride-2 stages, which "
                             f"with a patch embedding must make downsample_factor {downsample_factor}")
        if image_size[0] % downsample_factor or image_size[1] % downsample_factor:
            raise ValueError(f"image_size {tuple(image_size)} must divide by downsample_factor {downsample_factor}")
        # 1. maps -> features added to conv_in's output
        self.condition_encoder = ConditionEncoder(tuple(condition_channels), unet_channels, patch)
        # 2. tokens cross-attended by the UNet's transformers
        width = cross_attention_dim
        self.camera_embed = nn.Sequential(nn.Linear(CAMERA_FEATURES, width), nn.SiLU(), nn.Linear(width, width))
        self.box_embed = nn.Sequential(nn.Linear(BOX_FEATURES, width), nn.SiLU(), nn.Linear(width, width))
        self.null_box = nn.Parameter(torch.randn(width) * 0.02)
        # 3. cross-view attention, one per UNet transformer
        self.cross_view_attention = nn.ModuleList(CrossViewAttention(c, head_dim) for c in cross_view_channels) if cross_view else None

    def map_features(self, semantic, depth, context_mask, dropped) -> torch.Tensor:
        """semantic [S, H, W] uint8 (255 background), depth [S, H, W] in [0, 1], context_mask [S] bool,
        dropped [S] bool -> features [S, unet_channels, h, w]."""
        classes = torch.where(semantic == 255, NUM_RENDER_CLASSES, semantic.long().clamp_max(NUM_RENDER_CLASSES))
        given = (~dropped).to(depth.dtype)[:, None, None, None]  # [S, 1, 1, 1]
        one_hot = F.one_hot(classes, NUM_RENDER_CLASSES + 1).permute(0, 3, 1, 2).to(depth.dtype)  # [S, K + 1, H, W]
        flags = torch.stack([torch.ones_like(depth), context_mask.to(depth.dtype)[:, None, None].expand_as(depth)], 1)
        maps = torch.cat([one_hot * given, depth[:, None] * given, flags[:, :1] * given, flags[:, 1:]], 1)  # [S, MAP_CHANNELS, H, W]
        return self.condition_encoder(maps)

    def tokens(self, cameras, boxes, box_valid, dropped) -> torch.Tensor:
        """cameras [S, CAMERA_FEATURES], boxes [S, M, BOX_FEATURES], box_valid [S, M] bool, dropped [S] bool
        -> encoder_hidden_states [S, 1 + M, D]."""
        camera = self.camera_embed(cameras)[:, None]  # [S, 1, D]
        box = self.box_embed(boxes)  # [S, M, D]
        keep = box_valid & ~dropped[:, None]
        box = torch.where(keep[..., None], box, self.null_box.to(box.dtype))
        return torch.cat([camera, box], 1)


class MultiViewVideoModel(nn.Module):
    """The denoiser: UNet + adapter. (noisy latents, context latents, maps, cameras, boxes) -> prediction.

    Not a saved model itself: its two parts are (`unet/`, `adapter/` of the pipeline); training and
    the pipeline build it around them.
    """

    def __init__(self, unet: UNetSpatioTemporalConditionModel, adapter: MultiViewAdapter):
        super().__init__()
        self.unet, self.adapter = unet, adapter
        self.gradient_checkpointing = False
        channels = transformer_channels(unet)
        if adapter.config.cross_view and tuple(adapter.config.cross_view_channels) != channels:
            raise ValueError(f"the adapter's cross_view_channels {tuple(adapter.config.cross_view_channels)} do not match the UNet's "
                             f"transformers {channels}")
        if unet.config.in_channels != 2 * unet.config.out_channels:
            raise ValueError(f"the UNet takes {unet.config.in_channels} channels and gives {unet.config.out_channels}: it must take "
                             "the noisy and the context latents (twice its output)")

    def _run(self, module, *args, **kwargs):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(module, *args, use_reentrant=False, **kwargs)
        return module(*args, **kwargs)

    def encode_conditions(self, conditions: VideoConditions) -> EncodedConditions:
        """The adapter's features and tokens of `conditions` (the pipeline encodes a clip's once for all its steps)."""
        c = conditions
        batch, views, frames = c.semantic.shape[:3]
        adapter = self.adapter
        if c.semantic.shape[-2:] != tuple(adapter.config.image_size):
            raise ValueError(f"semantic must be [B, V, F, {', '.join(map(str, adapter.config.image_size))}], got {tuple(c.semantic.shape)}")
        if views != adapter.config.num_views:
            raise ValueError(f"the model was built for {adapter.config.num_views} cameras, got {views}")
        per_image = lambda x: x.flatten(0, 2)  # [B, V, F, ...] -> [B V F, ...]
        dropped = c.dropped[:, None, None].expand(batch, views, frames)
        mask = c.context_mask[:, None].expand(batch, views, frames)
        tokens = adapter.tokens(per_image(c.cameras).float(), per_image(c.boxes).float(), per_image(c.box_valid), per_image(dropped))
        features = adapter.map_features(per_image(c.semantic), per_image(c.depth).float(), per_image(mask), per_image(dropped))
        return EncodedConditions(features=features, tokens=tokens)

    def forward(
        self,
        sample: torch.Tensor,  # [B, V, F, C, h, w] noisy latents
        timestep: torch.Tensor,  # [B] diffusion timestep of each clip
        context: torch.Tensor,  # [B, V, F, C, h, w] clean latents of the context frames, zero elsewhere
        conditions: VideoConditions | EncodedConditions,
        return_dict: bool = True,
    ):
        batch, views, frames, channels, height, width = sample.shape
        unet, adapter = self.unet, self.adapter
        if channels != unet.config.out_channels or context.shape != sample.shape:
            raise ValueError(f"sample and context must be [B, V, F, {unet.config.out_channels}, h, w] alike, got "
                             f"{tuple(sample.shape)} and {tuple(context.shape)}")
        if isinstance(conditions, VideoConditions):
            if conditions.semantic.shape[:3] != (batch, views, frames):
                raise ValueError(f"conditions.semantic must be [{batch}, {views}, {frames}, H, W], got {tuple(conditions.semantic.shape)}")
            conditions = self.encode_conditions(conditions)
        clips = batch * views  # the UNet's batch: one clip per camera
        per_image = lambda x: x.flatten(0, 2)  # [B, V, F, ...] -> [B V F, ...]

        # 1. time: the clip's timestep and SVD's added time ids -> emb [B V F, 4 c0]
        timestep = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(batch)
        emb = unet.time_embedding(unet.time_proj(timestep).to(sample.dtype))  # [B, 4 c0]
        added = torch.tensor(ADDED_TIME_IDS, device=sample.device).repeat(batch)
        emb = emb + unet.add_embedding(unet.add_time_proj(added).reshape(batch, -1).to(emb.dtype))
        emb = emb.repeat_interleave(views * frames, dim=0)

        # 2. tokens (camera + boxes) [B V F, 1 + M, D], cross-attended by every transformer
        tokens = conditions.tokens

        # 3. conv_in over [noisy, context] + the maps' features -> [B V F, c0, h, w]
        x = unet.conv_in(torch.cat([per_image(sample), per_image(context)], 1)) + conditions.features

        # 4. the UNet's blocks, cross-view attention after each transformer
        indicator = torch.zeros(clips, frames, dtype=x.dtype, device=x.device)  # SVD's image_only_indicator: all video
        cross_view = iter(adapter.cross_view_attention) if adapter.cross_view_attention is not None else None

        def transformer(attn, h):
            h = self._run(attn, h, encoder_hidden_states=tokens, image_only_indicator=indicator, return_dict=False)[0]
            if cross_view is None:
                return h
            h = next(cross_view)(h.view(batch, views, frames, *h.shape[1:]))  # [B, V, F, c, h', w']
            return h.flatten(0, 2)

        skips = [x]
        for block in unet.down_blocks:
            attentions = getattr(block, "attentions", [None] * len(block.resnets))
            for resnet, attn in zip(block.resnets, attentions):
                x = self._run(resnet, x, emb, image_only_indicator=indicator)
                if attn is not None:
                    x = transformer(attn, x)
                skips.append(x)
            for downsampler in block.downsamplers or []:
                x = downsampler(x)
                skips.append(x)
        mid = unet.mid_block
        x = self._run(mid.resnets[0], x, emb, image_only_indicator=indicator)
        for attn, resnet in zip(mid.attentions, mid.resnets[1:]):
            x = transformer(attn, x)
            x = self._run(resnet, x, emb, image_only_indicator=indicator)
        for i, block in enumerate(unet.up_blocks):
            attentions = getattr(block, "attentions", [None] * len(block.resnets))
            for resnet, attn in zip(block.resnets, attentions):
                x = torch.cat([x, skips.pop()], 1)
                x = self._run(resnet, x, emb, image_only_indicator=indicator)
                if attn is not None:
                    x = transformer(attn, x)
            for upsampler in block.upsamplers or []:
                x = upsampler(x, skips[-1].shape[2:] if skips else None)

        # 5. output [B V F, C, h, w] -> [B, V, F, C, h, w]
        x = unet.conv_out(unet.conv_act(unet.conv_norm_out(x)))
        x = x.view(batch, views, frames, *x.shape[1:])
        return MultiViewVideoOutput(sample=x) if return_dict else (x,)


def build_adapter(unet: UNetSpatioTemporalConditionModel, model: str, cross_view: bool, image_size, downsample_factor: int,
                  num_frames: int, context_frames: int, max_boxes: int) -> MultiViewAdapter:
    """A fresh adapter fitted to `unet` (its widths), of MODEL_CONFIGS[model]'s adapter sizes."""
    config = dict(MODEL_CONFIGS[model]["adapter"])
    channels = tuple(config.pop("condition_channels"))
    cross_dim = unet.config.cross_attention_dim
    cross_dim = cross_dim[0] if isinstance(cross_dim, (list, tuple)) else cross_dim
    return MultiViewAdapter(unet_channels=unet.config.block_out_channels[0], cross_attention_dim=cross_dim,
                            cross_view_channels=transformer_channels(unet), cross_view=cross_view, condition_channels=channels,
                            max_boxes=max_boxes, image_size=tuple(image_size), downsample_factor=downsample_factor,
                            num_frames=num_frames, context_frames=context_frames, **config)
