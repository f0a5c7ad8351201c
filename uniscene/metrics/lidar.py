"""LiDAR generation scored against the recorded sweeps of the held-out scenes.

For each occupancy source (label: occ_label.zarr; generated: occ_gen.zarr, when it exists) and
each method (learned: the trained LidarPipeline; raycast: the no-learning baseline), every
12 Hz frame of the held-out scenes (`val_scenes`) gets a generated sweep from the same sensor
pose as the recorded one, and the figures below compare the two.

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

import time

import numpy as np
from scipy.spatial import cKDTree

from uniscene.config import resolve_device
from uniscene.data.files import read_sweep
from uniscene.data.scenes import selected_scenes, val_scenes
from uniscene.grid import OccGrid
from uniscene.models.lidar.beams import RangeImage, beam_pattern, sweep_to_range_image
from uniscene.models.lidar.inputs import load_scene_inputs
from uniscene.models.lidar.pipeline import METHODS, LidarPipeline, sweeps_from_range_images
from uniscene.models.lidar.settings import LidarSampling
from uniscene.paths import model_dir, scene_store
from uniscene.store import open_store

BEV_EXTENT_M = 51.2
BEV_BINS = 100
MMD_SIGMA = 0.5
SOURCES = {"label": "occ_label", "generated": "occ_gen"}


def bev_histograms(sweeps) -> np.ndarray:
    """Per-sweep normalised BEV histograms of S sweeps (each [N, >=2], sensor frame) -> [S, 100 * 100]."""
    edges = np.linspace(-BEV_EXTENT_M, BEV_EXTENT_M, BEV_BINS + 1)
    out = np.zeros((len(sweeps), BEV_BINS * BEV_BINS))
    for i, points in enumerate(sweeps):
        counts, _, _ = np.histogram2d(points[:, 0], points[:, 1], bins=(edges, edges))
        out[i] = counts.reshape(-1) / max(counts.sum(), 1.0)
    return out


def mmd_gaussian(x: np.ndarray, y: np.ndarray, sigma: float = MMD_SIGMA) -> float:
    """Biased MMD^2 estimate between sample sets x [S, D] and y [R, D] with a Gaussian kernel."""

    def mean_kernel(a, b):
        squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
        return float(np.exp(-np.maximum(squared, 0) / (2 * sigma**2)).mean())

    return mean_kernel(x, x) + mean_kernel(y, y) - 2 * mean_kernel(x, y)


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


def _split(points, offsets) -> list:
    return [points[offsets[t]:offsets[t + 1]] for t in range(len(offsets) - 1)]


def _lidar_store_sweeps(results, scene: str, source: str):
    """The stage's own output for `scene` if it was made from `source`, else None."""
    path = scene_store(results, scene, "lidar")
    if not path.exists():
        return None
    store = open_store(path, "lidar")
    if store.attrs.get("source") != source:
        return None
    return _split(store["points"].values, store["frame_offsets"].values), str(path)


def evaluate(config: dict, results) -> dict:
    grid, pattern, device = OccGrid.from_config(config), beam_pattern(config), resolve_device(config)
    settings, seed = LidarSampling.from_config(config), int(config["seed"])
    scenes = val_scenes(config)
    held_out = bool(scenes)
    scenes = scenes or selected_scenes(config)
    pipeline = LidarPipeline.from_pretrained(model_dir(results, "lidar"), grid, pattern, device)
    payload = {
        "scenes": scenes,
        "held_out": held_out,
        "device": device,
        "protocol": __doc__.split("Distribution figures", 1)[1].strip(),
        "goal": "learned mmd_bev at least 3x lower than raycast mmd_bev (reference: 1.53 vs 8.15)",
        "sources": {},
    }
    for source, store_name in SOURCES.items():
        missing = [str(scene_store(results, s, store_name)) for s in scenes if not scene_store(results, s, store_name).exists()]
        if missing:
            payload["sources"][source] = {"status": f"not scored: {', '.join(missing)} not written yet (stage {store_name})"}
            continue
        recorded, generated, origin, seconds = [], {m: [] for m in METHODS}, {}, {m: 0.0 for m in METHODS}
        for scene in scenes:
            inputs = load_scene_inputs(scene_store(results, scene, "frames"), scene_store(results, scene, store_name), grid)
            recorded += [read_sweep(p) for p in inputs.sweep_paths]
            stored = _lidar_store_sweeps(results, scene, source)
            for method in METHODS:
                if method == "learned" and stored is not None:
                    generated[method] += stored[0]
                    origin.setdefault(method, []).append(stored[1])
                    continue
                start = time.perf_counter()
                output = pipeline(inputs.semantics, inputs.ego_from_sensor, method=method, ray_drop=settings.ray_drop,
                                  batch_frames=settings.cast_batch, seed=seed, device=device)
                seconds[method] += time.perf_counter() - start
                generated[method] += _split(*sweeps_from_range_images(output.range_images(), pattern))
                origin.setdefault(method, []).append(f"generated in-process from {scene_store(results, scene, store_name)}")
        entry = {method: {**score_sweeps(generated[method], recorded, pattern), "from": origin[method]} for method in METHODS}
        for method in METHODS:
            if seconds[method]:
                entry[method]["ms_per_sweep_in_process"] = round(1000 * seconds[method] / len(recorded), 2)
        entry["mmd_ratio_raycast_over_learned"] = entry["raycast"]["mmd_bev"] / max(entry["learned"]["mmd_bev"], 1e-30)
        payload["sources"][source] = entry
    return payload
