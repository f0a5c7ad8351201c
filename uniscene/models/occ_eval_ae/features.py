"""Features [N, D] of occupancy frames through a trained OccEvalAE (what F3D and MMD compare).

Letters: N frames, X Y Z grid, D feature width.
"""

import numpy as np
import torch

from uniscene.models.occ_eval_ae.network import OccEvalAE

FEATURE_BATCH = 8  # frames encoded together


@torch.no_grad()
def frame_features(model: OccEvalAE, semantics, batch: int = FEATURE_BATCH) -> np.ndarray:
    """Labels [N, X, Y, Z] (0..17; a numpy array or a lazy xarray/dask array, read `batch` frames at a time) ->
    features [N, D] float64."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(semantics), batch):
        frames = np.asarray(semantics[start:start + batch], np.uint8)
        out.append(model.features(torch.from_numpy(np.ascontiguousarray(frames)).to(device)).double().cpu().numpy())
    if not out:
        return np.zeros((0, int(model.config.feature_dim)))
    return np.concatenate(out)
