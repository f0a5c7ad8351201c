"""Training OccDiT on the latents of the trained OccVAE, with the shared training loop (uniscene.training).

Data: every training scene's label occupancy is encoded once by the VAE (latent means, per
frame) and its layouts area-pooled once to the latent size; a sample is a clip of Tc
consecutive frames. Objective: the DDPM forward process of `training_scheduler` (diffusers'
`add_noise`), with the network predicting v (v-prediction, the default) or the noise, MSE over
the clip's frames. Per clip, drawn from one checkpointed generator: a timestep shared by its
frames; with probability `context_share` its first k frames are given clean at timestep 0 and
carry no loss (how clips are chained at generation); with `layout_dropout` the null layout
(classifier-free guidance); with `meta_dropout` the null meta vector. With `crop_latent`, each
batch is cut to one random square of latent cells (and its layout alike), placed by the
network's positional embedding where it lies: fewer tokens per step on small machines.

Letters: B clips, Tc frames per clip, k context frames, C latent channels, h w latent size,
L layout channels, M meta numbers, T frames of a scene.
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from uniscene.models.clips import clip_windows
from uniscene.models.occ_dit.network import OccDiT
from uniscene.models.occ_dit.pipeline import occupancy_meta
from uniscene.models.occ_dit.settings import OccDiTTraining
from uniscene.models.occ_vae.scenes import encode_frames
from uniscene.training import unwrap_model


@dataclass
class SceneClips:
    """One scene's training data. latents [T, C, h, w] float32 (VAE latent means, not normalised);
    layout [T, L, h, w] float16 (area-pooled); meta [T, M] float32."""

    latents: np.ndarray
    layout: np.ndarray
    meta: np.ndarray


class ClipDataset(Dataset):
    """Every window of `clip_frames` consecutive frames of every scene, normalised with (mean, std) per channel."""

    def __init__(self, scenes: list, clip_frames: int, latent_mean: np.ndarray, latent_std: np.ndarray):
        self.scenes = scenes
        self.clip_frames = clip_frames
        self.mean = latent_mean.astype(np.float32)[:, None, None]
        self.std = latent_std.astype(np.float32)[:, None, None]
        self.index = clip_windows([len(scene.latents) for scene in scenes], clip_frames)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        s, start = self.index[i]
        scene, frames = self.scenes[s], slice(start, start + self.clip_frames)
        return {
            "latents": torch.from_numpy((scene.latents[frames] - self.mean) / self.std),  # [Tc, C, h, w]
            "layout": torch.from_numpy(scene.layout[frames].astype(np.float32)),  # [Tc, L, h, w]
            "meta": torch.from_numpy(scene.meta[frames].mean(0)),  # [M]
        }


def latent_statistics(scenes: list) -> tuple:
    """Per-channel mean and std of all training latents: ([C], [C]) float64."""
    latents = np.concatenate([s.latents for s in scenes])  # [sum T, C, h, w]
    return latents.mean((0, 2, 3)).astype(np.float64), np.maximum(latents.std((0, 2, 3)), 1e-6).astype(np.float64)


@torch.no_grad()
def encode_scene(vae, network: OccDiT, semantics, layout, device: str, batch_frames: int = 8) -> SceneClips:
    """semantics [T, X, Y, Z] uint8 and layout [T, L, X, Y] bool (array-likes, read a batch at a time) -> SceneClips."""
    latents, pooled, metas = [], [], []
    for start in range(0, len(semantics), batch_frames):
        frames = slice(start, start + batch_frames)
        labels = np.asarray(semantics[frames])
        latents.append(encode_frames(vae, torch.from_numpy(labels), batch_frames, autocast=device == "cuda").cpu().numpy())
        lay = torch.from_numpy(np.asarray(layout[frames])).to(device)[None]
        pooled.append(network.pool_layout(lay)[0].cpu().numpy().astype(np.float16))
        metas.append(occupancy_meta(labels))
    return SceneClips(np.concatenate(latents), np.concatenate(pooled), np.concatenate(metas))


def random_crop(batch: dict, cells: int, patch: int, generator: torch.Generator) -> tuple:
    """(latents, layout) of `batch` cut to one cells x cells square at an offset on the patch grid, and the offset."""
    height, width = batch["latents"].shape[-2:]
    if cells <= 0 or (cells >= height and cells >= width):
        return batch["latents"], batch["layout"], (0, 0)
    cells = min(cells, height, width) // patch * patch
    y0, x0 = (int(torch.randint(0, (n - cells) // patch + 1, (), generator=generator)) * patch for n in (height, width))
    crop = (..., slice(y0, y0 + cells), slice(x0, x0 + cells))
    return batch["latents"][crop], batch["layout"][crop], (y0, x0)


def make_loss_fn(scheduler, settings: OccDiTTraining, generator: torch.Generator):
    """loss_fn(model, batch) for uniscene.training.Trainer: the masked MSE of the module docstring."""
    k = settings.context_frames

    def loss_fn(model, batch):
        x0, layout, offset = random_crop(batch, settings.crop_latent, unwrap_model(model).config.patch_size, generator)
        device, batch_size, frames = x0.device, x0.shape[0], x0.shape[1]  # x0 [B, Tc, C, h, w]
        draws = torch.rand(batch_size, 3, generator=generator)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator).to(device)
        with_context = (draws[:, 0] < settings.context_share).to(device)
        layout_dropped = (draws[:, 1] < settings.layout_dropout).to(device)
        meta_dropped = (draws[:, 2] < settings.meta_dropout).to(device)
        timesteps = timesteps.to(device)

        # 1. forward process; context frames clean at timestep 0
        noisy = scheduler.add_noise(x0, noise, timesteps)
        context = with_context[:, None] & (torch.arange(frames, device=device) < k)[None]  # [B, Tc]
        noisy = torch.where(context[:, :, None, None, None], x0, noisy)
        frame_timesteps = torch.where(context, 0, timesteps[:, None])

        # 2. prediction and target
        meta = batch["meta"] if unwrap_model(model).config.meta_channels else None
        prediction = model(noisy, frame_timesteps, layout, layout_dropped=layout_dropped, meta=meta, meta_dropped=meta_dropped,
                           position_offset=offset).sample.float()
        target = noise if scheduler.config.prediction_type == "epsilon" else scheduler.get_velocity(x0, noise, timesteps)
        error = F.mse_loss(prediction, target, reduction="none").mean((2, 3, 4))  # [B, Tc]
        weight = (~context).float()
        loss = (error * weight).sum() / weight.sum()
        return loss, {"mse": float(loss.detach())}

    return loss_fn
