"""Maximum mean discrepancy between two sample sets with a Gaussian (RBF) kernel, implemented once here.

    k(a, b) = exp(-||a - b||^2 / (2 sigma^2))
    biased (V-statistic):    MMD^2_b = mean_ij k(x_i, x_j) + mean_ij k(y_i, y_j) - 2 mean_ij k(x_i, y_j)
    unbiased (U-statistic):  MMD^2_u = sum_(i != j) k(x_i, x_j) / (m (m - 1)) + sum_(i != j) k(y_i, y_j) / (n (n - 1))
                                       - 2 mean_ij k(x_i, y_j)

(Gretton et al. 2012, eq. 3 and 5). The unbiased estimate is centred on the true MMD^2, so it
can be slightly negative when the two distributions are alike. `median_bandwidth` is the median
heuristic: sigma = the median distance between distinct samples of a set.

The LiDAR metrics (uniscene/metrics/lidar.py) use the biased form with a fixed sigma on BEV
histograms; the occupancy metrics (uniscene/metrics/occ_gen.py) the unbiased one with the median
heuristic on autoencoder features.

Letters: m, n samples of each set, D dimensions.
"""

import numpy as np


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """||a_i - b_j||^2 of samples a [m, D] and b [n, D] -> [m, n] float64 (clipped at 0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0.0)


def median_bandwidth(samples: np.ndarray) -> float:
    """The median heuristic: the median Euclidean distance between distinct samples of [N >= 2, D]."""
    samples = np.asarray(samples, np.float64)
    if samples.ndim != 2 or len(samples) < 2:
        raise ValueError(f"median_bandwidth needs samples [N >= 2, D], got shape {samples.shape}")
    upper = np.triu_indices(len(samples), k=1)
    return float(np.median(np.sqrt(squared_distances(samples, samples)[upper])))


def mmd_rbf(x: np.ndarray, y: np.ndarray, sigma: float, unbiased: bool = True) -> float:
    """MMD^2 between samples x [m, D] and y [n, D] with the Gaussian kernel of bandwidth `sigma` (the formulas above)."""
    x, y = np.atleast_2d(np.asarray(x, np.float64)), np.atleast_2d(np.asarray(y, np.float64))
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"mmd_rbf: the sets differ in dimension: x {x.shape}, y {y.shape}")
    if not sigma > 0:
        raise ValueError(f"mmd_rbf needs a bandwidth sigma > 0, got {sigma}")
    if unbiased and min(len(x), len(y)) < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples in each set, got {len(x)} and {len(y)}")

    def kernel(a, b):
        return np.exp(-squared_distances(a, b) / (2 * sigma**2))

    if not unbiased:
        return float(kernel(x, x).mean()) + float(kernel(y, y).mean()) - 2 * float(kernel(x, y).mean())
    m, n = len(x), len(y)
    kxx, kyy = kernel(x, x), kernel(y, y)
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * kernel(x, y).mean())
