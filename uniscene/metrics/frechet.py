"""Frechet distances (FID on frames, FVD on clips) on the features of a local TorchScript network.

The distance between two sets of features, each summarised by its mean mu and covariance S:

    d^2 = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))

with the matrix square root from scipy's `sqrtm` (its imaginary part, numerical noise, dropped;
a singular product retried with 1e-6 added to both diagonals, as pytorch-fid does). It is
implemented once here and used for both figures.

The feature network is a TorchScript archive (torch.jit.save) named by a config key and pinned by
its sha256 (uniscene.metrics.pinned): no architecture is rebuilt here, so a bare state dict
cannot be used (export it with torch.jit.script / torch.jit.trace). Frames reach it resized
(bilinear) to its input size and mapped linearly from 0..255 to its input range; images go in
as [N, 3, H, W], clips as [N, 3, T, H, W]; its output (the first, where it returns several) is
averaged over any dims past the second into features [N, D].
"""

from dataclasses import dataclass

import numpy as np

from uniscene.errors import UserError
from uniscene.metrics.pinned import pinned_file, sha256_of


def gaussian_stats(features: np.ndarray) -> tuple:
    """Features [N, D] -> (mean [D], covariance [D, D]) in float64 (N - 1 in the denominator)."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"gaussian_stats needs features [N >= 2, D], got shape {features.shape}")
    return features.mean(0), np.atleast_2d(np.cov(features, rowvar=False))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Frechet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2) (means [D], covariances [D, D])."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"frechet_distance: shapes differ: mu {mu1.shape} {mu2.shape}, sigma {sigma1.shape} {sigma2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(mu1)) * 1e-6
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def features_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between two feature sets [N, D] and [M, D]."""
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


@dataclass(frozen=True)
class FeatureNetworkSpec:
    """One `video_metrics.fid` / `video_metrics.fvd` config entry."""

    key: str  # the config section, e.g. video_metrics.fid
    network: str | None
    sha256: str | None
    input_size: tuple  # (height, width)
    input_range: tuple  # (value of 0, value of 255)
    kwargs: dict

    @classmethod
    def from_config(cls, key: str, entry: dict) -> "FeatureNetworkSpec":
        return cls(key, entry.get("network"), entry.get("sha256"), tuple(entry["input_size"]), tuple(entry["input_range"]),
                   dict(entry.get("kwargs") or {}))


class FeatureNetwork:
    """A pinned TorchScript feature network: uint8 frames in, features [N, D] float64 out."""

    def __init__(self, spec: FeatureNetworkSpec, device: str = "cpu", batch: int = 16):
        import torch

        path = pinned_file(spec.network, spec.sha256, f"{spec.key}.network")
        try:
            self.module = torch.jit.load(str(path), map_location=device).eval()
        except (RuntimeError, ValueError) as error:
            raise UserError(f"{path} (config key {spec.key}.network) is not a TorchScript archive ({str(error).splitlines()[0]}): "
                            "save the feature network with torch.jit.save(torch.jit.script(net)) (a bare state dict cannot be used)") from None
        self.spec, self.device, self.batch = spec, device, batch
        self.path, self.sha256 = str(path), sha256_of(path)

    def describe(self) -> dict:
        return {"network": self.path, "sha256": self.sha256, "input_size": list(self.spec.input_size),
                "input_range": list(self.spec.input_range), "kwargs": self.spec.kwargs}

    def _prepare(self, frames: np.ndarray):
        """uint8 [..., h, w, 3] -> float [..., 3, H, W] at the input size and range (on the device)."""
        import torch
        from torch.nn import functional as F

        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).float()
        lead = x.shape[:-3]
        x = x.reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2)
        if tuple(x.shape[-2:]) != self.spec.input_size:
            x = F.interpolate(x, size=self.spec.input_size, mode="bilinear", align_corners=False, antialias=True)
        low, high = self.spec.input_range
        x = low + x * ((high - low) / 255.0)
        return x.reshape(*lead, *x.shape[1:])

    def _run(self, x) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = self.module(x, **self.spec.kwargs)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor) or out.ndim < 2 or out.shape[0] != x.shape[0]:
            raise UserError(f"{self.path} (config key {self.spec.key}.network) returned {type(out).__name__} "
                            f"{tuple(getattr(out, 'shape', ()))} for {x.shape[0]} inputs: it must return features [N, D]")
        if out.ndim > 2:
            out = out.flatten(2).mean(2)
        return out.double().cpu().numpy()

    def image_features(self, images: np.ndarray) -> np.ndarray:
        """Images [N, h, w, 3] uint8 -> features [N, D]."""
        return np.concatenate([self._run(self._prepare(images[s:s + self.batch])) for s in range(0, len(images), self.batch)])

    def clip_features(self, clips: np.ndarray) -> np.ndarray:
        """Clips [N, T, h, w, 3] uint8 -> features [N, D] (the network sees [N, 3, T, H, W])."""
        out = []
        for start in range(0, len(clips), max(1, self.batch // 4)):
            x = self._prepare(clips[start:start + max(1, self.batch // 4)])  # [n, T, 3, H, W]
            out.append(self._run(x.permute(0, 2, 1, 3, 4).contiguous()))
        return np.concatenate(out)
