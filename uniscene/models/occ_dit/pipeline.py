"""OccGenPipeline: a BEV layout sequence -> semantic occupancy of every frame, through OccDiT and the OccVAE.

A scene of any length is generated in clips of `clip_frames` frames that overlap by
`context_frames`: the first clip from noise alone, every later one with its first frames given
clean as the last frames of the clip before (timestep 0 for those frames, replaced after every
scheduler step), so the static world carries over from clip to clip. Each clip is sampled with
classifier-free guidance (the network run with the layout and with the learned null layout in
one batch) by whatever diffusers scheduler the pipeline holds, then decoded by the VAE (its
temporal decoder sees the whole clip) and arg-maxed to labels.

Ground truth enters only through the explicit leak options of `__call__` (`meta`,
`noise_prior`), which the reference's evaluation used; both are None by default.

Letters: T frames of the scene, Tc frames per clip, k context frames, C latent channels, h w
latent size, L layout channels, X Y Z grid, M meta numbers.
"""

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from uniscene.classes import FREE, OCC_CLASS_ID
from uniscene.models.clips import clip_starts
from uniscene.models.occ_dit.network import OccDiT
from uniscene.models.occ_vae.network import OccVAE
from uniscene.models.occ_vae.scenes import encode_frames

# Samplers by config name: the reference (DDIM, eta 0) and a faster multistep solver (DPM-Solver++).
SAMPLERS = {
    "ddim": (DDIMScheduler, {}),
    "dpmsolver++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "euler": (EulerDiscreteScheduler, {}),
}
PREDICTION_TYPES = ("epsilon", "v_prediction")

# The reference's "meta" vector: voxel counts of four groups, each divided by a typical count (here
# a share of the grid's voxels: the reference's 25,000 / 7,000 / 16,000 / 20,000 of 640,000) and clipped at 1.
META_GROUPS = (
    ("other", None, 25000 / 640000),
    ("terrain", OCC_CLASS_ID["terrain"], 7000 / 640000),
    ("manmade", OCC_CLASS_ID["manmade"], 16000 / 640000),
    ("vegetation", OCC_CLASS_ID["vegetation"], 20000 / 640000),
)


def training_scheduler(prediction_type: str = "v_prediction", num_train_timesteps: int = 1000) -> DDPMScheduler:
    """The DDPM noise schedule the network trains on (DiT's: linear betas 1e-4 .. 0.02 over 1000 steps)."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                         clip_sample=False, prediction_type=prediction_type, timestep_spacing="trailing")


def sampler_scheduler(config, name: str):
    """A sampler named `name` (SAMPLERS) on the noise schedule of the scheduler config `config`."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}: choose one of {sorted(SAMPLERS)}")
    cls, extra = SAMPLERS[name]
    return cls.from_config(config, **extra)


def occupancy_meta(semantics: np.ndarray) -> np.ndarray:
    """The reference's meta vector of each frame: semantics [T, X, Y, Z] -> [T, 4] float32 (META_GROUPS)."""
    frames = semantics.reshape(semantics.shape[0], -1)
    voxels = frames.shape[1]
    occupied = (frames != FREE).sum(1)
    counts = [(frames == c).sum(1) for _, c, _ in META_GROUPS[1:]]
    other = occupied - sum(counts)
    shares = [other / (voxels * META_GROUPS[0][2])] + [n / (voxels * s) for n, (_, _, s) in zip(counts, META_GROUPS[1:])]
    return np.minimum(np.stack(shares, 1), 1.0).astype(np.float32)



@dataclass
class OccGenPipelineOutput(BaseOutput):
    """
    semantics: (num_frames, grid_x, grid_y, grid_z) uint8 labels 0..16, 17 free.
    latents: (num_frames, latent_channels, height, width) float32, the generated latents (normalised).
    clip_of_frame: (num_frames,) int64, the clip in which each frame was generated (not given as context).
    """

    semantics: np.ndarray
    latents: np.ndarray
    clip_of_frame: np.ndarray


@dataclass
class GeneratedClip:
    """The frames one clip of a scene adds (its context frames, generated before, left out).

    index: the clip's number in the scene; frames: their slice of the scene's frames;
    semantics: (frames, grid_x, grid_y, grid_z) uint8; latents: (frames, latent_channels, height, width) float32.
    """

    index: int
    frames: slice
    semantics: np.ndarray
    latents: np.ndarray


class OccGenPipeline(DiffusionPipeline):
    """Layout-conditioned occupancy generation: OccVAE (latent space) + OccDiT (denoiser) + a diffusers scheduler."""

    model_cpu_offload_seq = "transformer->vae"

    def __init__(self, vae: OccVAE, transformer: OccDiT, scheduler):
        super().__init__()
        self.register_modules(vae=vae, transformer=transformer, scheduler=scheduler)

    # 1. latent normalisation (statistics in the transformer's config)

    def _stats(self, device) -> tuple:
        config = self.transformer.config
        if not config.latent_mean:
            return torch.zeros(config.in_channels, device=device), torch.ones(config.in_channels, device=device)
        return (torch.tensor(config.latent_mean, device=device).float(), torch.tensor(config.latent_std, device=device).float())

    def normalise(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE latents [..., C, h, w] -> the network's scale (per-channel zero mean, unit variance on the training set)."""
        mean, std = self._stats(latents.device)
        return (latents - mean[:, None, None]) / std[:, None, None]

    def denormalise(self, latents: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(latents.device)
        return latents * std[:, None, None] + mean[:, None, None]

    def encode(self, semantics: torch.Tensor, batch_frames: int = 8) -> torch.Tensor:
        """semantics [T, X, Y, Z] -> normalised latent means [T, C, h, w] (the noise-prior leak)."""
        return self.normalise(encode_frames(self.vae, semantics, batch_frames))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B, T, C, h, w] -> labels [B, T, X, Y, Z] uint8 (arg-max of the VAE's logits)."""
        logits = self.vae.decode(self.denormalise(latents).to(self.vae.dtype)).logits
        return logits.argmax(2).to(torch.uint8)

    # 2. the denoising loop

    def denoise(self, latents, context, layout, meta=None, num_inference_steps: int = 50, guidance_scale: float = 2.0,
                generator=None, autocast: bool = False):
        """Sample B clips at once. latents [B, Tc, C, h, w]: the starting noise; context [B, k, C, h, w]: clean
        leading frames (k may be 0); layout [B, Tc, L, h, w] pooled; meta [B, M] or None. Returns [B, Tc, C, h, w]."""
        k, (batch, frames) = context.shape[1], latents.shape[:2]
        guided = guidance_scale != 1.0
        self.scheduler.set_timesteps(num_inference_steps, device=latents.device)
        layout_in = torch.cat([layout, layout]) if guided else layout
        dropped = torch.arange(2 * batch, device=latents.device) >= batch if guided else None  # the second half: null layout
        meta_in = None if meta is None else (torch.cat([meta, meta]) if guided else meta)
        for t in self.scheduler.timesteps:
            model_input = self.scheduler.scale_model_input(latents, t)
            model_input[:, :k] = context  # context frames enter clean, at timestep 0
            timestep = torch.full((batch, frames), float(t), device=latents.device)
            timestep[:, :k] = 0
            if guided:
                model_input, timestep = torch.cat([model_input, model_input]), torch.cat([timestep, timestep])
            with torch.autocast(latents.device.type, dtype=torch.bfloat16, enabled=autocast):
                prediction = self.transformer(model_input, timestep, layout_in, layout_dropped=dropped, meta=meta_in).sample.float()
            if guided:
                conditional, unconditional = prediction.chunk(2)
                prediction = unconditional + guidance_scale * (conditional - unconditional)
            latents = self.scheduler.step(prediction, t, latents, generator=generator).prev_sample
            latents[:, :k] = context
        return latents

    # 3. a whole scene

    @torch.no_grad()
    def __call__(self, layout, **kwargs) -> OccGenPipelineOutput:
        """Generate every frame of a layout sequence [T, L, X, Y]; the keywords are `clips`'. The whole scene in memory:
        a command writing a store takes `clips` one by one instead."""
        num_frames = len(layout)
        semantics = np.empty((num_frames, *self.vae.config.grid_shape), np.uint8)
        latents = np.empty((num_frames, self.transformer.config.in_channels, *self.transformer.config.sample_size), np.float32)
        clip_of_frame = np.zeros(num_frames, np.int64)
        for clip in self.clips(layout, **kwargs):
            semantics[clip.frames], latents[clip.frames], clip_of_frame[clip.frames] = clip.semantics, clip.latents, clip.index
        return OccGenPipelineOutput(semantics=semantics, latents=latents, clip_of_frame=clip_of_frame)

    @torch.no_grad()
    def clips(
        self,
        layout,  # [T, L, X, Y] bool or float (numpy or torch)
        num_inference_steps: int = 50,
        guidance_scale: float = 2.0,
        clip_frames: int | None = None,
        context_frames: int | None = None,
        generator: torch.Generator | None = None,
        meta=None,  # [T, M] per-frame meta vectors (the meta leak; None: the null meta)
        noise_prior=None,  # [T, C, h, w] normalised latents of the scene's labels (the noise-prior leak; None: pure noise)
        noise_prior_weight: float = 0.05,
        autocast: bool | None = None,
        progress: bool = True,
    ):
        """Yield the scene's clips as they are generated (chained as the module docstring says), each a
        GeneratedClip of the frames it adds; together they cover every frame once, in order."""
        device = self._execution_device
        layout = torch.as_tensor(np.asarray(layout) if not isinstance(layout, torch.Tensor) else layout)
        config = self.transformer.config
        if layout.ndim != 4 or layout.shape[1] != config.layout_channels:
            raise ValueError(f"layout must be [T, {config.layout_channels}, X, Y], got {tuple(layout.shape)}")
        num_frames = layout.shape[0]
        clip_frames = min(clip_frames or config.num_frames, num_frames)
        context_frames = min(config.context_frames if context_frames is None else context_frames, clip_frames - 1)
        autocast = device.type == "cuda" if autocast is None else autocast
        pooled = self.transformer.pool_layout(layout[None].to(device))  # [1, T, L, h, w]
        meta = None if meta is None else torch.as_tensor(np.asarray(meta), dtype=torch.float32, device=device)
        prior = None if noise_prior is None else torch.as_tensor(noise_prior, dtype=torch.float32, device=device)  # numpy or a tensor on any device
        shape = (1, clip_frames, config.in_channels, *config.sample_size)

        latents = torch.zeros((num_frames, *shape[2:]), device=device)
        done = 0  # frames generated so far
        starts = clip_starts(num_frames, clip_frames, context_frames)
        for clip, start in enumerate(self.progress_bar(starts) if progress else starts):
            frames = slice(start, start + clip_frames)
            k = done - start  # frames of this clip already generated: given as context
            noise = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32) * self.scheduler.init_noise_sigma
            if prior is not None:
                noise = noise + noise_prior_weight * prior[None, frames]
            clip_meta = None if meta is None else meta[frames].mean(0, keepdim=True)
            clean = self.denoise(noise, latents[None, start:start + k], pooled[:, frames], clip_meta, num_inference_steps,
                                 guidance_scale, generator, autocast)
            latents[frames] = clean[0]
            new = slice(start + k, start + clip_frames)
            yield GeneratedClip(clip, new, self.decode(clean)[0, k:].cpu().numpy(), clean[0, k:].cpu().numpy())
            done = start + clip_frames
