"""Whole scenes through the VAE: frames encoded in batches, latents decoded in clips.

Encoding is per frame, so a scene's frames are encoded `batch_frames` at a time. Decoding attends
across a clip's frames, so a scene of N frames is cut into clips of T frames starting at 0, T,
2T, ...; the last clip is the scene's last T frames (overlapping the one before), of which only
the frames not decoded yet are kept. Every clip thus has the length the model was trained on.

Letters: N frames of a scene, T frames per clip, C latent channels, h w latent grid, X Y Z grid.
"""

import torch

from uniscene.models.clips import clip_starts
from uniscene.models.occ_vae.network import OccVAE



def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


@torch.no_grad()
def encode_frames(vae: OccVAE, semantics: torch.Tensor, batch_frames: int, autocast: bool = False) -> torch.Tensor:
    """semantics [N, X, Y, Z] (labels 0..17, any device) -> latent means [N, C, h, w] float32 on the VAE's device."""
    device = vae.device
    latents = []
    for start in range(0, semantics.shape[0], batch_frames):
        chunk = semantics[start:start + batch_frames].to(device).long()
        with _autocast(device, autocast):
            latents.append(vae.encode(chunk[None]).latent_dist.mode()[0].float())
    return torch.cat(latents)


@torch.no_grad()
def decode_scene(vae: OccVAE, latents: torch.Tensor, clip_frames: int, batch_clips: int, autocast: bool = False) -> torch.Tensor:
    """latents [N, C, h, w] -> labels [N, X, Y, Z] uint8 on the VAE's device, decoded clip by clip."""
    device = vae.device
    latents = latents.to(device)
    num_frames = latents.shape[0]
    starts = clip_starts(num_frames, clip_frames)
    length = min(clip_frames, num_frames)
    labels, done = None, 0  # frames [0, done) are decoded
    for first in range(0, len(starts), batch_clips):
        group = starts[first:first + batch_clips]
        clips = torch.stack([latents[s:s + length] for s in group])  # [B, T, C, h, w]
        with _autocast(device, autocast):
            decoded = vae.decode(clips).logits.argmax(2).to(torch.uint8)  # [B, T, X, Y, Z]
        if labels is None:
            labels = torch.empty((num_frames, *decoded.shape[2:]), dtype=torch.uint8, device=device)
        for clip, start in zip(decoded, group):
            labels[done:start + length] = clip[done - start:]
            done = start + length
    return labels


def reconstruct_scene(vae: OccVAE, semantics: torch.Tensor, clip_frames: int, batch_clips: int,
                      autocast: bool = False) -> torch.Tensor:
    """semantics [N, X, Y, Z] -> the VAE's reconstruction [N, X, Y, Z] uint8 (through the latent means)."""
    latents = encode_frames(vae, semantics, batch_frames=batch_clips * clip_frames, autocast=autocast)
    return decode_scene(vae, latents, clip_frames, batch_clips, autocast=autocast)
