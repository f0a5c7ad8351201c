"""MultiViewVideoPipeline: a scene's rendered maps, cameras and boxes -> six-camera video of every frame.

A scene of any length is generated in clips of `clip_frames` frames that overlap by
`context_frames`: the first clip from its conditions alone, every later one with its first frames'
latents given as context (the UNet's second input, SVD's image-latent slot, with the context mask
in the condition encoder) from the clip before, so that what was generated carries over. Each clip
is sampled with classifier-free guidance on the occupancy conditions (the network run with and
without the maps and boxes in one batch; the cameras and the context stay) by whatever diffusers
scheduler the pipeline holds, and its new frames are decoded by the autoencoder.

Ground truth enters only through `first_frame_latents` (the option `video.first_frame`, off by
default): the scene's real first images, encoded, given as the first clip's context.

Letters: T frames of the scene, F frames per clip, k context frames, V cameras, C latent channels,
h w latent size, H W image size.
"""

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import (AutoencoderKL, AutoencoderKLTemporalDecoder, DDIMScheduler, DDPMScheduler, DiffusionPipeline,
                       DPMSolverMultistepScheduler, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel)
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from uniscene.models.clips import clip_starts
from uniscene.models.video.conditions import SceneConditions
from uniscene.models.video.network import MultiViewAdapter, MultiViewVideoModel, VideoConditions

# Samplers by config name, on the training noise schedule.
SAMPLERS = {
    "ddim": (DDIMScheduler, {}),
    "dpmsolver++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "euler": (EulerDiscreteScheduler, {}),
}


def training_scheduler(num_train_timesteps: int = 1000) -> DDPMScheduler:
    """The noise schedule the network trains on: Stable Diffusion's scaled-linear betas, v-prediction."""
    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                         clip_sample=False, prediction_type="v_prediction", timestep_spacing="trailing")


def sampler_scheduler(config, name: str):
    """A sampler named `name` (SAMPLERS) on the noise schedule of the scheduler config `config`."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}: choose one of {sorted(SAMPLERS)}")
    cls, extra = SAMPLERS[name]
    return cls.from_config(config, **extra)



@dataclass
class VideoClip:
    """The frames one clip adds: frames (a slice of the scene), rgb (frames, V, H, W, 3) uint8."""

    frames: slice
    rgb: np.ndarray


@dataclass
class VideoPipelineOutput(BaseOutput):
    """
    rgb: (num_frames, num_views, height, width, 3) uint8 images.
    clip_of_frame: (num_frames,) int64, the clip in which each frame was generated (-1: given, the first-frame option).
    """

    rgb: np.ndarray
    clip_of_frame: np.ndarray


class MultiViewVideoPipeline(DiffusionPipeline):
    """Rendered maps -> multi-view video: image autoencoder + spatio-temporal UNet + adapter + a diffusers scheduler."""

    model_cpu_offload_seq = "adapter->unet->vae"

    def __init__(self, vae: AutoencoderKL, unet: UNetSpatioTemporalConditionModel, adapter: MultiViewAdapter, scheduler):
        super().__init__()
        self.register_modules(vae=vae, unet=unet, adapter=adapter, scheduler=scheduler)

    @property
    def denoiser(self) -> MultiViewVideoModel:
        return MultiViewVideoModel(self.unet, self.adapter)

    def compile(self, mode: str | None = "default") -> None:
        """Run the denoiser's forward under torch.compile(mode) from now on (None: eager again). The UNet is walked
        block by block (MultiViewVideoModel.forward), so compiling `self.unet` alone would not reach that walk."""
        self._compiled = None if mode is None else torch.compile(self.denoiser, mode=mode, dynamic=False)

    # 1. the autoencoder's latent space (scaled as its config says)

    def _scale(self) -> tuple:
        config = self.vae.config
        return float(config.scaling_factor), float(getattr(config, "shift_factor", None) or 0.0)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_images: int = 32) -> torch.Tensor:
        """images [N, H, W, 3] uint8 -> scaled latents [N, C, h, w] (the posterior's mode)."""
        scale, shift = self._scale()
        device = self._execution_device
        out = []
        for start in range(0, len(images), batch_images):
            x = images[start:start + batch_images].to(device).permute(0, 3, 1, 2).to(self.vae.dtype) / 127.5 - 1
            out.append((self.vae.encode(x).latent_dist.mode().float() - shift) * scale)
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, frames: int, batch_images: int = 48) -> torch.Tensor:
        """Scaled latents [N, C, h, w] (N = clips x frames, frame-minor) -> images [N, H, W, 3] uint8."""
        scale, shift = self._scale()
        out = []
        temporal = isinstance(self.vae, AutoencoderKLTemporalDecoder)
        step = frames * max(1, batch_images // frames) if temporal else batch_images
        for start in range(0, len(latents), step):
            z = (latents[start:start + step] / scale + shift).to(self.vae.dtype)
            x = self.vae.decode(z, num_frames=frames).sample if temporal else self.vae.decode(z).sample
            out.append(((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1))
        return torch.cat(out)

    # 2. the denoising loop of one clip

    def denoise(self, noise, context, conditions: VideoConditions, num_inference_steps: int, guidance_scale: float, generator=None,
                autocast: bool = False):
        """noise [1, V, F, C, h, w]; context [1, V, F, C, h, w] (zero outside the context frames); conditions of one
        clip (batch 1) -> clean latents [1, V, F, C, h, w]."""
        guided = guidance_scale != 1.0
        denoiser = self.denoiser
        compiled = getattr(self, "_compiled", None)
        forward = denoiser if compiled is None else compiled
        if guided:  # the second half: without maps and boxes
            conditions = VideoConditions(
                *(torch.cat([getattr(conditions, name)] * 2) for name in conditions.__dataclass_fields__ if name != "dropped"),
                dropped=torch.tensor([False, True], device=noise.device))
            context = torch.cat([context, context])
        with torch.autocast(noise.device.type, dtype=torch.bfloat16, enabled=autocast):
            encoded = denoiser.encode_conditions(conditions)
        self.scheduler.set_timesteps(num_inference_steps, device=noise.device)
        latents = noise
        for t in self.scheduler.timesteps:
            model_input = self.scheduler.scale_model_input(latents, t)
            model_input = torch.cat([model_input] * 2) if guided else model_input
            timestep = t.to(noise.device).reshape(1).expand(len(model_input))
            with torch.autocast(noise.device.type, dtype=torch.bfloat16, enabled=autocast):
                prediction = forward(model_input, timestep, context, encoded).sample.float()
            if guided:
                conditional, unconditional = prediction.chunk(2)
                prediction = unconditional + guidance_scale * (conditional - unconditional)
            latents = self.scheduler.step(prediction, t, latents, generator=generator).prev_sample
        return latents

    # 3. a whole scene, clip by clip

    @torch.no_grad()
    def clips(
        self,
        conditions: SceneConditions,
        num_inference_steps: int = 25,
        guidance_scale: float = 2.0,
        clip_frames: int | None = None,
        context_frames: int | None = None,
        generator: torch.Generator | None = None,
        first_frame_latents: torch.Tensor | None = None,  # [V, C, h, w] the real first images (the first-frame option)
        autocast: bool | None = None,
    ):
        """Yield VideoClip after VideoClip, in frame order, covering every frame of the scene once."""
        device = self._execution_device
        config = self.adapter.config
        views, num_frames = config.num_views, len(conditions)
        if conditions.semantic.shape[1] != views or conditions.semantic.shape[-2:] != tuple(config.image_size):
            raise ValueError(f"conditions must be [T, {views}, {', '.join(map(str, config.image_size))}], "
                             f"got {tuple(conditions.semantic.shape)}")
        clip_frames = min(clip_frames or config.num_frames, num_frames)
        context_frames = min(config.context_frames if context_frames is None else context_frames, clip_frames - 1)
        autocast = device.type == "cuda" if autocast is None else autocast
        channels = self.unet.config.out_channels
        latent_hw = [s // config.downsample_factor for s in config.image_size]
        latents = torch.zeros((num_frames, views, channels, *latent_hw), device=device)  # every frame's, for the next clips' context
        done = 0  # frames generated (or given) so far
        if first_frame_latents is not None:
            latents[0] = first_frame_latents.to(device)
            done = 1
            yield VideoClip(slice(0, 1), self.decode(latents[0], 1).cpu().numpy()[None])
        for start in clip_starts(num_frames, clip_frames, context_frames):
            frames = slice(start, start + clip_frames)
            k = max(done - start, 0)  # frames of this clip already made: given as context
            if k >= clip_frames:
                continue
            context = torch.zeros((1, views, clip_frames, channels, *latent_hw), device=device)
            context[0, :, :k] = latents[start:start + k].transpose(0, 1)
            parts = {name: torch.from_numpy(np.ascontiguousarray(a))[None].to(device) for name, a in conditions.frames(frames).items()}
            mask = (torch.arange(clip_frames, device=device) < k)[None]
            clip_conditions = VideoConditions(context_mask=mask, dropped=torch.zeros(1, dtype=torch.bool, device=device), **parts)
            noise = randn_tensor(context.shape, generator=generator, device=device, dtype=torch.float32) * self.scheduler.init_noise_sigma
            clean = self.denoise(noise, context, clip_conditions, num_inference_steps, guidance_scale, generator, autocast)[0]
            latents[start + k:start + clip_frames] = clean[:, k:].transpose(0, 1)
            new = clean[:, k:]  # [V, F - k, C, h, w]
            images = self.decode(new.flatten(0, 1), clip_frames - k)  # [V (F - k), H, W, 3]
            images = images.view(views, clip_frames - k, *images.shape[1:]).transpose(0, 1)  # [F - k, V, H, W, 3]
            done = start + clip_frames
            yield VideoClip(slice(start + k, start + clip_frames), images.cpu().numpy())

    def __call__(self, conditions: SceneConditions, **options) -> VideoPipelineOutput:
        """Every frame of the scene at once (`clips` streams them); options as `clips`."""
        config = self.adapter.config
        rgb = np.zeros((len(conditions), config.num_views, *config.image_size, 3), np.uint8)
        clip_of_frame = np.full(len(conditions), -1, np.int64)
        for index, clip in enumerate(self.clips(conditions, **options)):
            rgb[clip.frames] = clip.rgb
            clip_of_frame[clip.frames] = index - int(options.get("first_frame_latents") is not None)
        return VideoPipelineOutput(rgb=rgb, clip_of_frame=clip_of_frame)
