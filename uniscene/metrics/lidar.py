"""LiDAR generation scored against the recorded sweeps of the held-out scenes.

The rule gives, for each held-out scene (`val_scenes`; every scene where there is none), its
frames.zarr, its lidar.zarr (method learned: the trained LidarPipeline) and its
lidar_raycast.zarr (method raycast: the no-learning baseline, `uniscene lidar --method
raycast`), and where given its gen/lidar.zarr (method learned, from the generated chain's
occupancy). Each holds a sweep per 12 Hz frame from the same sensor pose as the recorded one,
made from the occupancy its `source` attribute names (label: occ_label.zarr; generated:
occ_gen.zarr); the figures below compare them with the recorded sweeps, per source and method.

Distribution figures (the UltraLiDAR / LiDARDM protocol):
- BEV histogram of a sweep: its points' sensor-frame (x, y) binned into 100 x 100 cells over
  [-51.2, 51.2]^2 m (1.024 m cells; points outside are ignored), divided by the number of points
  inside, so each histogram sums to 1 (a flattened vector h of 10,000 bins).
- MMD between the set of generated histograms {g_i} and the set of recorded ones {r_j}, Gaussian
  kernel k(a, b) = exp(-||a - b||^2 / (2 sigma^2)), sigma = 0.5, biased (V-statistic) estimate:
  mean_ij k(g_i, g_j) + mean_ij k(r_i, r_j) - 2 mean_ij k(g_i, r_j).
- JSD between the set-averaged histograms G = mean_i g_i and R = mean_j r_j, in bits (log base 2,
  so 0..1), the divergence itself (not its square root): JSD = KL(G||M)/2 + KL(R||M)/2, M = (G + R)/2.
Per-sweep figures, averaged over sweeps:
- chamfer_m: mean distance from each generated point to the nearest recorded point plus mean
  distance from each recorded point to the nearest generated point (metres, not squared).
Per-ray figures on the range images (uniscene.models.lidar.beams; a pixel per beam and azimuth):
- range_mae_m / range_median_ae_m: |generated - recorded| range over rays that return in both.
- ray_drop precision / recall / f1: 'dropped' (no return) is the positive class, over all rays.
- intensity_mae: |generated - recorded| intensity over rays that return in both (sweep units).
"""

import numpy as np
from scipy.spatial import cKDTree

from uniscene.data.files import read_sweep
from uniscene.data.scenes import val_scenes
from uniscene.errors import UserError
from uniscene.metrics import SceneStores
from uniscene.metrics.mmd import mmd_rbf
from uniscene.models.lidar.beams import RangeImage, beam_pattern, sweep_to_range_image
from uniscene.models.lidar.inputs import recorded_sweep_paths
from uniscene.models.lidar.pipeline import METHODS

BEV_EXTENT_M = 51.2
BEV_BINS = 100
MMD_SIGMA = 0.5
SOURCES = ("label", "generated")
# store kind -> the method its sweeps must be made by (lidar_gen: the generated chain's gen/lidar.zarr, optional)
METHOD_OF_KIND = {"lidar": "learned", "lidar_raycast": "raycast", "lidar_gen": "learned"}


def bev_histograms(sweeps) -> np.ndarray:
    """Per-sweep normalised BEV histograms of S sweeps (each [N, >=2], sensor frame) -> [S, 100 * 100]."""
    edges = np.linspace(-BEV_EXTENT_M, BEV_EXTENT_M, BEV_BINS + 1)
    out = np.zeros((len(sweeps), BEV_BINS * BEV_BINS))
    for i, points in enumerate(sweeps):
        counts, _, _ = np.histogram2d(points[:, 0], points[:, 1], bins=(edges, edges))
        out[i] = counts.reshape(-1) / max(counts.sum(), 1.0)
    return out


def mmd_gaussian(x: np.ndarray, y: np.ndarray, sigma: float = MMD_SIGMA) -> float:
    """Biased MMD^2 estimate between sample sets x [S, D] and y [R, D] with a Gaussian kernel (uniscene.metrics.mmd)."""
    return mmd_rbf(x, y, sigma, unbiased=False)


def jsd_bits(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (base 2) between two histograms [D] (normalised here)."""
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a):
        nonzero = a > 0
        return float((a[nonzero] * np.log2(a[nonzero] / m[nonzero])).sum())

    return kl(p) / 2 + kl(q) / 2


def chamfer_m(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Chamfer distance between point sets a [N, >=3] and b [M, >=3] (sum of the two mean NN distances)."""
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    return float(cKDTree(b[:, :3]).query(a[:, :3])[0].mean() + cKDTree(a[:, :3]).query(b[:, :3])[0].mean())


def ray_metrics(generated: RangeImage, recorded: RangeImage) -> dict:
    """Per-ray figures over range images [..., H, W] of the same rays."""
    both = generated.returned & recorded.returned
    error = np.abs(generated.range_m[both] - recorded.range_m[both])
    dropped, truly_dropped = ~generated.returned, ~recorded.returned
    true_positive = float((dropped & truly_dropped).sum())
    precision = true_positive / max(float(dropped.sum()), 1.0)
    recall = true_positive / max(float(truly_dropped.sum()), 1.0)
    return {
        "range_mae_m": float(error.mean()) if error.size else float("nan"),
        "range_median_ae_m": float(np.median(error)) if error.size else float("nan"),
        "ray_drop_precision": precision,
        "ray_drop_recall": recall,
        "ray_drop_f1": 2 * precision * recall / max(precision + recall, 1e-12),
        "intensity_mae": float(np.abs(generated.intensity[both] - recorded.intensity[both]).mean()) if both.any() else float("nan"),
        "rays_returned_fraction": float(generated.returned.mean()),
    }


def score_sweeps(generated: list, recorded: list, pattern) -> dict:
    """All figures of S generated sweeps against the S recorded ones (each [N, 5], sensor frame)."""
    generated_images = [sweep_to_range_image(s, pattern) for s in generated]
    recorded_images = [sweep_to_range_image(s, pattern) for s in recorded]
    stack = lambda images: RangeImage(np.stack([i.range_m for i in images]), np.stack([i.intensity for i in images]))  # noqa: E731
    generated_bev, recorded_bev = bev_histograms(generated), bev_histograms(recorded)
    return {
        "mmd_bev": mmd_gaussian(generated_bev, recorded_bev),
        "jsd_bev": jsd_bits(generated_bev.mean(0), recorded_bev.mean(0)),
        "chamfer_m": float(np.nanmean([chamfer_m(g, r) for g, r in zip(generated, recorded)])),
        **ray_metrics(stack(generated_images), stack(recorded_images)),
        "points_per_sweep": float(np.mean([len(s) for s in generated])),
        "recorded_points_per_sweep": float(np.mean([len(s) for s in recorded])),
        "num_sweeps": len(generated),
    }


def _stored_sweeps(stores: SceneStores, kind: str, timestamp_us: np.ndarray) -> tuple:
    """(source, sweeps [N_t, 5] per frame) of a scene's lidar store of `kind`, checked against its method and frames."""
    store, path = stores.open(kind), stores.paths[kind]
    if store.attrs["method"] != METHOD_OF_KIND[kind]:
        raise UserError(f"store {path} holds {store.attrs['method']} sweeps, --{kind.replace('_', '-')} takes "
                        f"{METHOD_OF_KIND[kind]} ones: check the argument")
    if not np.array_equal(store["timestamp_us"].values, timestamp_us):
        raise UserError(f"store {path} holds other frames than {stores.paths['frames']}: rerun `uniscene lidar` on that frames store")
    points, offsets = store["points"].values, store["frame_offsets"].values
    return str(store.attrs["source"]), [points[offsets[t]:offsets[t + 1]] for t in range(len(offsets) - 1)]


def evaluate(config: dict, scenes: list[SceneStores]) -> dict:
    pattern = beam_pattern(config)
    names = [stores.scene for stores in scenes]
    held_out = set(val_scenes(config))
    recorded, generated, origin = [], {}, {}  # generated, origin: (source, method) -> sweeps, store paths
    for stores in scenes:
        frames = stores.open("frames")
        recorded += [read_sweep(path) for path in recorded_sweep_paths(frames)]
        for kind, method in METHOD_OF_KIND.items():
            if kind not in stores.paths:
                continue
            source, sweeps = _stored_sweeps(stores, kind, frames["timestamp_us"].values)
            generated.setdefault((source, method), []).extend(sweeps)
            origin.setdefault((source, method), []).append(str(stores.paths[kind]))
    payload = {
        "scenes": names,
        "held_out": bool(held_out) and held_out >= set(names),
        "protocol": __doc__.split("Distribution figures", 1)[1].strip(),
        "goal": "learned mmd_bev at least 3x lower than raycast mmd_bev (reference: 1.53 vs 8.15)",
        "sources": {},
    }
    for source in SOURCES:
        entry = {}
        for method in METHODS:
            sweeps = generated.get((source, method))
            if sweeps is None:
                continue
            if len(sweeps) != len(recorded):
                raise UserError(f"the {method} stores {origin[source, method]} are made from {source} occupancy for some scenes "
                                f"only: make every scene's store from the same occupancy (the label chain's lidar.zarr of every scene)")
            entry[method] = {**score_sweeps(sweeps, recorded, pattern), "from": origin[source, method]}
        if not entry:
            payload["sources"][source] = {"status": f"not scored: no lidar store made from {source} occupancy was given"}
            continue
        if len(entry) == len(METHODS):
            entry["mmd_ratio_raycast_over_learned"] = entry["raycast"]["mmd_bev"] / max(entry["learned"]["mmd_bev"], 1e-30)
        payload["sources"][source] = entry
    return payload
