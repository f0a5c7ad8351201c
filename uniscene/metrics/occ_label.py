"""Scores of the occupancy labels against the synthetic truth, per densification backend.

For every selected scene the stored labels (occ_label.zarr, made with `occ_label.backend`) are
compared with truth/<scene>.zarr on all frames, inside the truth's `mask_camera` (as Occ3D
scores inside its camera mask):
- mIoU: the mean over the 17 semantic classes of TP / (TP + FP + FN), classes that occur in
  neither truth nor labels left out (named in `classes_scored`);
- geometric IoU: occupied (any class) against free.
Each backend in `occ_label.compare_backends` (Poisson, NKSR where importable) is run here from
the frames store on `occ_label.compare_frames` evenly spaced frames per scene, and scored on those
frames beside the stored backend on the same frames; a backend that cannot run is listed under
`skipped` with the reason. The label agreement of our mask_camera with the truth's is reported too.
"""

import time

import numpy as np

from uniscene.classes import FREE, NUM_OCC_CLASSES, OCC_CLASS_NAMES
from uniscene.config import resolve_device
from uniscene.data.scenes import selected_scenes
from uniscene.errors import UserError
from uniscene.grid import OccGrid
from uniscene.occ_label.inputs import load_scene
from uniscene.occ_label.label import LabelOptions, build_surface, label_frames
from uniscene.paths import scene_store, truth_store
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


def _truth(dataroot, scene: str, grid: OccGrid):
    truth = open_store(truth_store(dataroot, scene))
    if tuple(truth["semantics"].shape[1:]) != grid.shape:
        raise UserError(
            f"truth store {truth_store(dataroot, scene)} has grid {tuple(truth['semantics'].shape[1:])}, the config's grid is "
            f"{grid.shape}: rerun `uniscene synth` with this config's grid"
        )
    return truth


def _frame_rows(truth, timestamp_us: np.ndarray) -> np.ndarray:
    rows = np.searchsorted(truth["timestamp_us"].values, timestamp_us)
    if np.any(rows >= truth.sizes["frame"]) or np.any(truth["timestamp_us"].values[np.minimum(rows, truth.sizes["frame"] - 1)] != timestamp_us):
        raise UserError("occ_label frames do not match the truth's frames by timestamp: rerun `uniscene frames` and `uniscene occ-label`")
    return rows


def evaluate(config: dict, results) -> dict:
    grid = OccGrid.from_config(config)
    dataroot = config["dataset"]["dataroot"]
    section = config["occ_label"]
    compare, compare_frames = list(section["compare_backends"]), int(section["compare_frames"])
    stored_backend = LabelOptions.from_config(config).backend
    total = np.zeros((NUM_LABELS, NUM_LABELS), np.int64)
    camera_agreement = np.zeros(3, np.int64)  # both, ours only, truth only
    subset = {name: np.zeros((NUM_LABELS, NUM_LABELS), np.int64) for name in [stored_backend, *compare]}
    seconds = {name: 0.0 for name in compare}
    skipped, subset_frames = {}, 0
    scenes = selected_scenes(config)
    for scene in scenes:
        truth = _truth(dataroot, scene, grid)
        labels = open_store(scene_store(results, scene, "occ_label"), stage="occ_label")
        rows = _frame_rows(truth, labels["timestamp_us"].values)
        for t, row in enumerate(rows):
            visible = truth["mask_camera"][row].values
            ours = labels["semantics"][t].values
            total += confusion(truth["semantics"][row].values, ours, visible)
            ours_visible = labels["mask_camera"][t].values
            camera_agreement += [np.sum(ours_visible & visible), np.sum(ours_visible & ~visible), np.sum(~ours_visible & visible)]
        # Other backends on a subset of frames, scored beside the stored labels on the same frames.
        count = labels.sizes["frame"] if compare_frames == 0 else min(compare_frames, labels.sizes["frame"])
        frames = np.unique(np.linspace(0, labels.sizes["frame"] - 1, count).round().astype(int))
        subset_frames += len(frames)
        for t in frames:
            subset[stored_backend] += confusion(truth["semantics"][rows[t]].values, labels["semantics"][t].values,
                                                truth["mask_camera"][rows[t]].values)
        frames_path = scene_store(results, scene, "frames")
        for backend in compare:
            if backend in skipped or backend == stored_backend:
                continue
            options = LabelOptions.from_config({**config, "occ_label": {**section, "backend": backend}})
            start = time.perf_counter()
            try:
                scene_arrays = load_scene(frames_path, options, grid)
                surface = build_surface(scene_arrays, grid, options, resolve_device(config))
                for batch in label_frames(surface, scene_arrays, grid, options, frames):
                    for f, semantics in zip(batch.frames, batch.semantics):
                        subset[backend] += confusion(truth["semantics"][rows[f]].values, semantics, truth["mask_camera"][rows[f]].values)
            except UserError as error:
                skipped[backend] = str(error)
                continue
            seconds[backend] += time.perf_counter() - start
    both, ours_only, truth_only = camera_agreement
    payload = {
        "stage": "occ_label",
        "grid": {"range_m": list(grid.range_m), "voxel_size_m": grid.voxel_size_m},
        "scenes": scenes,
        "inside": "truth mask_camera",
        "goal": "default backend: miou >= 90 and iou_geometric >= 90 at 0.4 m",
        "backends": {stored_backend: {"frames": "all", **scores(total)}},
        "subset": {
            "frames_per_scene": compare_frames or "all",
            "frames": subset_frames,
            "backends": {
                name: {**scores(matrix), **({"seconds": round(seconds[name], 2)} if name in seconds else {})}
                for name, matrix in subset.items() if name not in skipped
            },
        },
        "skipped": skipped,
        "mask_camera_iou_vs_truth": 100 * float(both / max(both + ours_only + truth_only, 1)),
    }
    main = payload["backends"][stored_backend]
    payload["goal_met"] = bool(main["miou"] >= 90 and main["iou_geometric"] >= 90) if grid.voxel_size_m == 0.4 else None
    return payload
