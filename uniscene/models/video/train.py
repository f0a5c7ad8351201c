"""Training the video model on the training scenes' camera images, with the shared training loop (uniscene.training).

1. The image autoencoder (from scratch, unless the pretrained folder holds one): AutoencoderKL on
   random crops of the training images at the video size, L1 reconstruction + a small KL term. Its latent scale
   (scaling_factor, shift_factor in its config) is then set from the training latents' statistics.
2. Every training image is encoded once (the posterior's mode, scaled); a sample is a clip of F
   consecutive frames of all six cameras with the scene's conditions (maps, cameras, boxes).
3. The UNet and adapter: the DDPM forward process of `training_scheduler` (v-prediction), one
   timestep per clip; per clip, drawn from one checkpointed generator: with `context_share` its
   first k frames are given clean as context and carry no loss (how clips are chained at
   generation); with `condition_dropout` no maps and boxes (classifier-free guidance).

Letters: B clips, V cameras, F frames per clip, k context frames, C latent channels, h w latent
size, H W image size, T frames of a scene.
"""

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from uniscene.models.clips import clip_windows
from uniscene.models.video.conditions import SceneConditions
from uniscene.models.video.network import VideoConditions
from uniscene.models.video.settings import VideoTraining

KL_WEIGHT = 1e-6  # the autoencoder's KL term, small as Stable Diffusion's


class ImageDataset(Dataset):
    """Every image of `images` ([N, H, W, 3] uint8 array-like, read an item at a time) as [3, c, c] in [-1, 1]: a random
    c x c crop (c = `crop`; the autoencoder is convolutional, so crops train it for whole images at a fraction of the cost),
    placed by torch's global generator (seeded per rank by the trainer). crop 0: whole images [3, H, W]."""

    def __init__(self, images, crop: int = 0):
        self.images, self.crop = images, crop

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        image = torch.from_numpy(np.asarray(self.images[i])).permute(2, 0, 1).float() / 127.5 - 1  # [3, H, W]
        height, width = image.shape[1:]
        if 0 < self.crop < min(height, width):
            y0, x0 = (int(torch.randint(0, n - self.crop + 1, ())) for n in (height, width))
            image = image[:, y0:y0 + self.crop, x0:x0 + self.crop]
        return {"image": image}


def autoencoder_loss(model, batch):
    """loss_fn for uniscene.training.Trainer: L1 reconstruction of a sampled latent + KL_WEIGHT x KL."""
    x = batch["image"]
    posterior = model.encode(x).latent_dist
    recon = model.decode(posterior.sample()).sample
    l1 = F.l1_loss(recon.float(), x)
    kl = posterior.kl().mean() / x[0].numel()
    loss = l1 + KL_WEIGHT * kl
    return loss, {"l1": float(l1.detach()), "kl": float(kl.detach())}


@torch.no_grad()
def latent_scale(latents: torch.Tensor) -> tuple:
    """(scaling_factor, shift_factor) that give `latents` [N, C, h, w] (unscaled) zero mean and unit variance."""
    mean = float(latents.mean())
    return 1.0 / max(float(latents.std()), 1e-6), mean


class ClipDataset(Dataset):
    """Every window of `clip_frames` consecutive frames of every scene: latents [V, F, C, h, w] and conditions."""

    def __init__(self, latents: list, conditions: list, clip_frames: int):
        """latents: per scene [T, V, C, h, w] float16 tensors (scaled); conditions: per scene SceneConditions."""
        self.latents, self.conditions, self.clip_frames = latents, conditions, clip_frames
        self.index = clip_windows([len(scene) for scene in latents], clip_frames)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        s, start = self.index[i]
        frames = slice(start, start + self.clip_frames)
        scene: SceneConditions = self.conditions[s]
        return {"latents": self.latents[s][frames].transpose(0, 1).float(),  # [V, F, C, h, w]
                **{name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in scene.frames(frames).items()}}


def make_loss_fn(scheduler, settings: VideoTraining, generator: torch.Generator):
    """loss_fn(model, batch) for uniscene.training.Trainer: the masked v-prediction MSE of the module docstring."""
    k = settings.context_frames

    def loss_fn(model, batch):
        x0 = batch["latents"]  # [B, V, F, C, h, w]
        device, batch_size, frames = x0.device, x0.shape[0], x0.shape[2]
        draws = torch.rand(batch_size, 2, generator=generator)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), generator=generator).to(device)
        noise = torch.randn(x0.shape, generator=generator).to(device)
        with_context = (draws[:, 0] < settings.context_share).to(device)
        dropped = (draws[:, 1] < settings.condition_dropout).to(device)

        # 1. forward process; the context frames' clean latents in the UNet's second input
        noisy = scheduler.add_noise(x0, noise, timesteps)
        context_mask = with_context[:, None] & (torch.arange(frames, device=device) < k)[None]  # [B, F]
        context = x0 * context_mask[:, None, :, None, None, None]
        conditions = VideoConditions(context_mask=context_mask, semantic=batch["semantic"], depth=batch["depth"],
                                     cameras=batch["cameras"], boxes=batch["boxes"], box_valid=batch["box_valid"], dropped=dropped)

        # 2. prediction and target, the loss over the frames not given
        prediction = model(noisy, timesteps, context, conditions).sample.float()
        target = scheduler.get_velocity(x0, noise, timesteps)
        error = F.mse_loss(prediction, target, reduction="none").mean((1, 3, 4, 5))  # [B, F]
        weight = (~context_mask).float()
        loss = (error * weight).sum() / weight.sum()
        return loss, {"mse": float(loss.detach())}

    return loss_fn
