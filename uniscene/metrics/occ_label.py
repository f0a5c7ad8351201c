"""Scores of the occupancy labels against the synthetic truth.

For every scene given, its labels (occ_label.zarr, made by the backend its `backend` attribute
names) are compared with truth/<scene>.zarr on all frames, inside the truth's `mask_camera` (as
Occ3D scores inside its camera mask):
- mIoU: the mean over the 17 semantic classes of TP / (TP + FP + FN), classes that occur in
  neither truth nor labels left out (named in `classes_scored`);
- geometric IoU: occupied (any class) against free.
The agreement of our mask_camera with the truth's is reported too. The other labelling backends
(Poisson, NKSR) are compared on the same frames by benchmarks/bench_occ_label.py, not here.
"""

import numpy as np

from uniscene.classes import FREE, NUM_OCC_CLASSES, OCC_CLASS_NAMES
from uniscene.errors import UserError
from uniscene.grid import OccGrid
from uniscene.metrics import SceneStores
from uniscene.paths import truth_store
from uniscene.store import open_store

NUM_LABELS = FREE + 1  # 18


def confusion(truth: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[18, 18] counts (truth row, label column) of the voxels inside `mask` (all [..., X, Y, Z])."""
    pairs = truth[mask].astype(np.int64) * NUM_LABELS + labels[mask]
    return np.bincount(pairs, minlength=NUM_LABELS * NUM_LABELS).reshape(NUM_LABELS, NUM_LABELS)


def scores(matrix: np.ndarray) -> dict:
    """mIoU over the 17 classes, per-class IoU and geometric IoU from an [18, 18] confusion matrix."""
    tp = np.diag(matrix)[:NUM_OCC_CLASSES].astype(np.float64)
    fp = matrix[:, :NUM_OCC_CLASSES].sum(0) - tp
    fn = matrix[:NUM_OCC_CLASSES, :].sum(1) - tp
    union = tp + fp + fn
    scored = union > 0
    per_class = {OCC_CLASS_NAMES[c]: float(tp[c] / union[c]) for c in np.flatnonzero(scored)}
    occupied_tp = matrix[:FREE, :FREE].sum()
    occupied_union = occupied_tp + matrix[:FREE, FREE].sum() + matrix[FREE, :FREE].sum()
    return {
        "miou": 100 * float(np.mean(list(per_class.values()))) if per_class else float("nan"),
        "iou_geometric": 100 * float(occupied_tp / max(occupied_union, 1)),
        "iou_per_class": {name: round(100 * value, 2) for name, value in per_class.items()},
        "classes_scored": len(per_class),
        "voxels_scored": int(matrix.sum()),
    }


def truth_of(dataroot, scene: str, grid: OccGrid):
    """The scene's truth store, checked to be on `grid`."""
    path = truth_store(dataroot, scene)
    truth = open_store(path)
    grid.check_store(truth, path)
    return truth


def truth_rows(truth, timestamp_us: np.ndarray) -> np.ndarray:
    """[T] rows of the truth store at the labels' frame times (UserError where one is missing)."""
    rows = np.searchsorted(truth["timestamp_us"].values, timestamp_us)
    if np.any(rows >= truth.sizes["frame"]) or np.any(truth["timestamp_us"].values[np.minimum(rows, truth.sizes["frame"] - 1)] != timestamp_us):
        raise UserError("occ_label frames do not match the truth's frames by timestamp: rerun `uniscene frames` and `uniscene occ-label`")
    return rows


def evaluate(config: dict, scenes: list[SceneStores]) -> dict:
    grid = OccGrid.from_config(config)
    dataroot = config["dataset"]["dataroot"]
    total = np.zeros((NUM_LABELS, NUM_LABELS), np.int64)
    camera_agreement = np.zeros(3, np.int64)  # both, ours only, truth only
    backends = set()
    for stores in scenes:
        truth = truth_of(dataroot, stores.scene, grid)
        labels = stores.open("occ_label")
        backends.add(str(labels.attrs["backend"]))
        rows = truth_rows(truth, labels["timestamp_us"].values)
        for t, row in enumerate(rows):
            visible = truth["mask_camera"][row].values
            ours = labels["semantics"][t].values
            total += confusion(truth["semantics"][row].values, ours, visible)
            ours_visible = labels["mask_camera"][t].values
            camera_agreement += [np.sum(ours_visible & visible), np.sum(ours_visible & ~visible), np.sum(~ours_visible & visible)]
    both, ours_only, truth_only = camera_agreement
    backend = "+".join(sorted(backends))
    payload = {
        "stage": "occ_label",
        "grid": {"range_m": list(grid.range_m), "voxel_size_m": grid.voxel_size_m},
        "scenes": [stores.scene for stores in scenes],
        "inside": "truth mask_camera",
        "goal": "default backend: miou >= 90 and iou_geometric >= 90 at 0.4 m",
        "backends": {backend: {"frames": "all", **scores(total)}},
        "mask_camera_iou_vs_truth": 100 * float(both / max(both + ours_only + truth_only, 1)),
        "other_backends": "benchmarks/bench_occ_label.py --compare-backends poisson nksr (same frames, same truth)",
    }
    main = payload["backends"][backend]
    payload["goal_met"] = bool(main["miou"] >= 90 and main["iou_geometric"] >= 90) if grid.voxel_size_m == 0.4 else None
    return payload
