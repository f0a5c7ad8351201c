"""Training the occupancy VAE on clips of scene sequences, with the shared trainer (uniscene.training).

`ClipDataset` lists every clip of T consecutive frames of every sequence and reads a clip's
frames only when it is drawn. Each step crops the batch to a random `crop_cells` square in x, y
(the network is convolutional; crops cut the cost of a step on small machines) and takes the
loss of loss.py. After training the latent scale (1 / std of the training latents, diffusers'
`scaling_factor`) is written into the model's config for the DiT.

Letters: B clips, T frames per clip, X Y Z grid, N frames.
"""

import numpy as np
import torch
from torch.utils.data import Dataset

from uniscene.models.occ_vae.loss import class_weights, vae_loss
from uniscene.models.occ_vae.network import NUM_LABELS, OccVAE
from uniscene.models.occ_vae.settings import OccVAESettings
from uniscene.training import Trainer, TrainingConfig, unwrap_model

COUNT_FRAMES = 256  # frames (evenly spread over the sequences) that the class frequencies are counted on
SCALE_FRAMES = 64  # training frames whose latents set the scaling factor


class ClipDataset(Dataset):
    """Every run of `clip_frames` consecutive frames of each sequence; item: {"semantics": [T, X, Y, Z] uint8}."""

    def __init__(self, sequences: list, clip_frames: int):
        self.sequences = list(sequences)
        self.clip_frames = clip_frames
        self.clips = [(i, start) for i, sequence in enumerate(self.sequences)
                      for start in range(sequence.num_frames - clip_frames + 1)]

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict:
        i, start = self.clips[index]
        frames = self.sequences[i].read(start, start + self.clip_frames)
        return {"semantics": torch.from_numpy(frames["semantics"])}


def label_counts(sequences: list, max_frames: int = COUNT_FRAMES) -> np.ndarray:
    """Voxels per label [18] int64 over at most `max_frames` frames spread evenly over all sequences."""
    total = sum(s.num_frames for s in sequences)
    chosen = set(np.unique(np.linspace(0, total - 1, min(max_frames, total)).round().astype(int)).tolist())
    counts, offset = np.zeros(NUM_LABELS, np.int64), 0
    for sequence in sequences:
        for t in range(sequence.num_frames):
            if offset + t in chosen:
                counts += np.bincount(sequence.read(t, t + 1)["semantics"].reshape(-1), minlength=NUM_LABELS)[:NUM_LABELS]
        offset += sequence.num_frames
    return counts


def random_crop(semantics: torch.Tensor, cells: int) -> torch.Tensor:
    """semantics [B, T, X, Y, Z] -> [B, T, cells, cells, Z] at an offset drawn from torch's global generator."""
    x, y = semantics.shape[2:4]
    if cells <= 0 or (cells >= x and cells >= y):
        return semantics
    x0 = int(torch.randint(0, x - cells + 1, ()))
    y0 = int(torch.randint(0, y - cells + 1, ()))
    return semantics[:, :, x0:x0 + cells, y0:y0 + cells]


def make_loss_fn(weights: torch.Tensor, settings: OccVAESettings):
    """loss_fn(model, batch) for the trainer: a random crop, a posterior sample, the VAE loss."""

    def loss_fn(model, batch):
        semantics = random_crop(batch["semantics"], settings.crop_cells).long()
        out = model(semantics)
        return vae_loss(out.logits, semantics, out.latent_dist, weights, settings.lovasz_weight, settings.kl_weight,
                        settings.lovasz_voxels)

    return loss_fn


@torch.no_grad()
def latent_scale(vae: OccVAE, dataset: ClipDataset, max_frames: int = SCALE_FRAMES) -> float:
    """1 / std of the latent means of up to `max_frames` training frames (clips spread over the set)."""
    vae.eval()
    count = max(1, min(len(dataset), -(-max_frames // dataset.clip_frames)))
    picks = np.unique(np.linspace(0, len(dataset) - 1, count).round().astype(int))
    latents = [vae.encode(dataset[int(i)]["semantics"][None].to(vae.device).long()).latent_dist.mode().float().cpu() for i in picks]
    return float(1.0 / torch.cat(latents).std().clamp_min(1e-6))


def training_config(settings: OccVAESettings, seed: int) -> TrainingConfig:
    return TrainingConfig(batch_size=settings.batch_size, learning_rate=settings.learning_rate, steps=settings.steps,
                          ema_decay=settings.ema_decay, seed=seed, num_workers=settings.num_workers, log_every=max(1, min(50, settings.steps // 20)),
                          checkpoint_every=max(1, min(500, settings.steps // 4)))


def train_vae(vae: OccVAE, sequences: list, settings: OccVAESettings, *, seed: int, device: str, work_dir, run_hash: str,
              training: TrainingConfig | None = None, description: str = "train-occ-vae") -> tuple:
    """Train `vae` on the clips of `sequences`; returns (the trainer: `final_model()`, `save_final(out)`; the
    cross-entropy class weights [18]). The model's config gets `scaling_factor` from the final weights.
    """
    dataset = ClipDataset(sequences, settings.clip_frames)
    if len(dataset) == 0:
        longest = max((s.num_frames for s in sequences), default=0)
        raise ValueError(f"no clip of {settings.clip_frames} frames: the longest sequence has {longest} frames")
    weights = class_weights(label_counts(sequences), settings.class_weights)
    trainer = Trainer(vae, dataset, make_loss_fn(weights, settings), training or training_config(settings, seed), work_dir,
                      run_hash, device=device, description=description)
    trainer.fit()
    final = trainer.final_model()
    unwrap_model(trainer.raw_model).register_to_config(scaling_factor=latent_scale(final, dataset))
    if final is not trainer.raw_model:
        final.register_to_config(scaling_factor=trainer.raw_model.config.scaling_factor)
    return trainer, weights
