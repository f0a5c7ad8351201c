"""Reconstruction scores of the occupancy VAE on held-out scenes (results/metrics/occ_vae.json).

Every frame of each scene goes through the VAE (encoded to the latent means, decoded in clips:
models/occ_vae/scenes.py) and is compared with its input as Occ3D's metric does: inside the
input's `mask_camera`, mIoU over the 17 classes (free left out; classes in neither input nor
reconstruction left out and named in `classes_scored`), per-class IoU and geometric IoU
(occupied against free). The same over all voxels is reported apart, as is a constant-class
baseline (every voxel the most frequent class inside the mask: the mIoU a model that learned
nothing would get) and the encode + decode time per frame.
"""

import time

import numpy as np
import torch

from uniscene.classes import NUM_OCC_CLASSES, OCC_CLASS_NAMES
from uniscene.metrics.occ_label import NUM_LABELS, confusion, scores
from uniscene.models.clips import clip_starts
from uniscene.models.occ_vae.network import OccVAE
from uniscene.models.occ_vae.scenes import reconstruct_scene


def constant_class_baseline(matrix: np.ndarray) -> dict:
    """mIoU of labelling every voxel with one class, the best such class, from the input's label counts in `matrix` [18, 18]."""
    counts = matrix.sum(1)[:NUM_OCC_CLASSES].astype(np.float64)
    present = int(np.count_nonzero(counts))
    if present == 0:
        return {"class": None, "miou": float("nan")}
    best = int(np.argmax(counts))
    return {"class": OCC_CLASS_NAMES[best], "miou": 100 * float(counts[best] / matrix.sum()) / present}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def score_sequences(vae: OccVAE, sequences: list, clip_frames: int, batch_clips: int, autocast: bool = False) -> dict:
    """Scores of reconstructing every frame of `sequences` (sources.py) with `vae`."""
    device = vae.device
    vae.eval()
    camera = np.zeros((NUM_LABELS, NUM_LABELS), np.int64)
    everywhere = np.zeros_like(camera)
    per_scene, seconds, frames = {}, 0.0, 0
    if sequences:  # warm-up (kernel choice, allocator) outside the timing
        first = sequences[0].read(0, min(clip_frames, sequences[0].num_frames))["semantics"]
        reconstruct_scene(vae, torch.from_numpy(first), clip_frames, 1, autocast)
    for sequence in sequences:
        data = sequence.read(0, sequence.num_frames)
        semantics = torch.from_numpy(data["semantics"])
        _sync(device)
        start = time.perf_counter()
        recon = reconstruct_scene(vae, semantics, clip_frames, batch_clips, autocast)
        _sync(device)
        seconds += time.perf_counter() - start
        recon = recon.cpu().numpy()
        matrix = confusion(data["semantics"], recon, data["mask_camera"])
        camera += matrix
        everywhere += confusion(data["semantics"], recon, np.ones(recon.shape, bool))
        scene = scores(matrix)
        per_scene[sequence.name] = {"frames": sequence.num_frames, "clips": len(clip_starts(sequence.num_frames, clip_frames)),
                                    "miou": round(scene["miou"], 2), "iou_geometric": round(scene["iou_geometric"], 2)}
        frames += sequence.num_frames
    inside = scores(camera)
    return {
        "frames": frames,
        "inside": "input mask_camera",
        **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in inside.items()},
        "all_voxels": {k: (round(v, 2) if isinstance(v, float) else v) for k, v in scores(everywhere).items()},
        "constant_class_baseline": constant_class_baseline(camera),
        "scenes": per_scene,
        "encode_decode_ms_per_frame": round(1000 * seconds / max(frames, 1), 3),
        "device": str(device),
    }


def model_summary(vae: OccVAE) -> dict:
    """What the metrics file says about the model: its size, latent shape and compression ratio."""
    config = vae.config
    return {
        "compression_ratio": float(config.compression_ratio),
        "latent_shape_per_frame": list(vae.latent_shape()),
        "grid_shape": list(config.grid_shape),
        "parameters": int(sum(p.numel() for p in vae.parameters())),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(config).items() if not k.startswith("_")},
    }
