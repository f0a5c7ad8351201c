"""Layout against the synthetic truth occupancy: per-channel BEV IoU where a channel has a matching class.

A truth BEV mask of an occupancy class is the set of grid columns (x, y) with at least one voxel
of that class. Matches: drivable_area - driveable_surface, walkway - sidewalk, and every object
channel - the occupancy class of the same name (its BEV footprint). The map channels are scored
only on columns whose ground shows (some voxel of a ground class): under an object the truth
holds the object, not the road. Frames are matched by timestamp; IoU = sum over frames of
|layout & truth| / sum of |layout | truth|, per scene and pooled over all scenes.

Letters: T frames, C channels, X Y Z grid cells.
"""

import numpy as np

from uniscene.classes import (DETECTION_CLASS_NAMES, LAYOUT_CHANNEL_NAMES, MAP_LAYER_NAMES, OCC_CLASS_ID, detection_class_of,
                               occ_class_of)
from uniscene.errors import UserError
from uniscene.grid import OccGrid
from uniscene.layout.raster import BOX_RULES, NUM_MAP_LAYERS, box_cells, box_footprints
from uniscene.metrics import SceneStores
from uniscene.paths import truth_store
from uniscene.store import open_store

# layout channel -> occupancy class whose BEV footprint it should match
MATCHING_CLASS = {"drivable_area": "driveable_surface", "walkway": "sidewalk", **{name: name for name in DETECTION_CLASS_NAMES}}
GROUND_CLASSES = ("driveable_surface", "other_flat", "sidewalk", "terrain")


def truth_bev(semantics: np.ndarray) -> np.ndarray:
    """BEV masks of the matched classes: semantics [T, X, Y, Z] uint8 -> [T, M, X, Y] bool (M = len(MATCHING_CLASS))."""
    classes = np.array([OCC_CLASS_ID[name] for name in MATCHING_CLASS.values()], dtype=np.uint8)  # [M]
    present = np.zeros((semantics.shape[0], len(classes)) + semantics.shape[1:3], dtype=bool)
    for index, klass in enumerate(classes):
        present[:, index] = np.any(semantics == klass, axis=-1)
    return present


def channel_agreement(layout: np.ndarray, semantics: np.ndarray) -> dict:
    """Per matched channel: intersection and union cell counts summed over frames.

    layout [T, C, X, Y] bool; semantics [T, X, Y, Z] uint8 on the same grid and frames.
    """
    if layout.shape[0] != semantics.shape[0] or layout.shape[2:] != semantics.shape[1:3]:
        raise ValueError(f"layout {layout.shape} and semantics {semantics.shape} must share frames and the x-y grid")
    channels = [LAYOUT_CHANNEL_NAMES.index(name) for name in MATCHING_CLASS]
    truth = truth_bev(semantics)  # [T, M, X, Y]
    ours = layout[:, channels]
    ground_shows = np.isin(semantics, [OCC_CLASS_ID[name] for name in GROUND_CLASSES]).any(-1)  # [T, X, Y]
    is_map = np.array([name in MAP_LAYER_NAMES for name in MATCHING_CLASS])[None, :, None, None]
    ours = ours & (ground_shows[:, None] | ~is_map)
    intersection = (ours & truth).sum((0, 2, 3))
    union = (ours | truth).sum((0, 2, 3))
    return {name: {"intersection": int(i), "union": int(u), "layout_cells": int(o), "truth_cells": int(t)}
            for name, i, u, o, t in zip(MATCHING_CLASS, intersection, union, ours.sum((0, 2, 3)), truth.sum((0, 2, 3)))}


def object_agreement(layout_boxes: dict, truth_boxes: dict, semantics: np.ndarray, grid: OccGrid, rule: str):
    """IoU of each layout box's footprint with its object's voxels in BEV, per (frame, object) present in both.

    layout_boxes: box_center / box_size / box_rotation [T, B, ...], box_valid [T, B], world_from_ego [T, 4, 4],
    box_instance_token [B]; truth_boxes: the truth store's box arrays on the same T frames (box_present for
    box_valid, box_category [B']); semantics [T, X, Y, Z]. An object's voxels in BEV: the cells of its true
    box's footprint whose column holds its occupancy class (an object is made of parts inside its box).
    Returns frame [N] int64, iou [N] and coverage [N] (the fraction of the object's voxel cells that the
    layout footprint covers) for the N (frame, object) pairs whose object has voxels in the grid.
    """
    common, ours, theirs = np.intersect1d(np.array(layout_boxes["box_instance_token"].tolist(), dtype=str),
                                          np.array(truth_boxes["box_instance_token"].tolist(), dtype=str), return_indices=True)
    present = layout_boxes["box_valid"][:, ours] & truth_boxes["box_present"][:, theirs]  # [T, K]
    if not present.any():
        return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0)
    num_frames, num_objects = present.shape
    num_x, num_y = grid.shape[:2]

    def keys(boxes, index):
        cells = box_cells(boxes["world_from_ego"], boxes["box_center"][:, index], boxes["box_size"][:, index],
                          boxes["box_rotation"][:, index], present, grid, rule=rule)  # [N, 4] (t, k, x, y)
        return cells, ((cells[:, 0] * num_objects + cells[:, 1]) * num_x + cells[:, 2]) * num_y + cells[:, 3]

    _, layout_keys = keys(layout_boxes, ours)
    true_cells, true_keys = keys(truth_boxes, theirs)
    occ_class = np.array([occ_class_of(c) for c in truth_boxes["box_category"][theirs]], dtype=np.uint8)  # [K]
    holds_class = np.any(semantics[true_cells[:, 0], true_cells[:, 2], true_cells[:, 3]] == occ_class[true_cells[:, 1], None], -1)
    voxel_keys = true_keys[holds_class]
    pair = lambda k: k // (num_x * num_y)  # noqa: E731  (t, k) pair of a cell key
    size = num_frames * num_objects
    both = np.bincount(pair(np.intersect1d(layout_keys, voxel_keys)), minlength=size)
    voxels = np.bincount(pair(voxel_keys), minlength=size)
    union = np.bincount(pair(layout_keys), minlength=size) + voxels - both
    scored = voxels > 0  # objects with voxels in the grid
    return np.flatnonzero(scored) // num_objects, both[scored] / union[scored], both[scored] / voxels[scored]


def _summary(values: np.ndarray) -> dict:
    if not values.size:
        return {"mean": None, "median": None, "fraction_above_0.5": None, "count": 0}
    return {"mean": round(float(values.mean()), 4), "median": round(float(np.median(values)), 4),
            "fraction_above_0.5": round(float((values > 0.5).mean()), 4), "count": int(values.size)}


def _iou(counts: dict):
    return round(counts["intersection"] / counts["union"], 4) if counts["union"] else None


def evaluate(config: dict, scenes: list[SceneStores]) -> dict:
    dataroot = config["dataset"]["dataroot"]
    empty = {"intersection": 0, "union": 0, "layout_cells": 0, "truth_cells": 0}
    pooled = {name: dict(empty) for name in MATCHING_CLASS}
    pooled_truth_boxes = {name: dict(empty) for name in DETECTION_CLASS_NAMES}
    per_object = {"iou": [], "iou_keyframes": [], "coverage": [], "coverage_keyframes": []}
    per_scene, timing = {}, {}
    for stores in scenes:
        scene = stores.scene
        layout_ds = stores.open("layout")
        truth_ds = open_store(truth_store(dataroot, scene))
        common, layout_index, truth_index = np.intersect1d(layout_ds["timestamp_us"].values, truth_ds["timestamp_us"].values,
                                                           return_indices=True)
        if common.size == 0:
            raise UserError(f"no frame of {stores.paths['layout']} has a timestamp in {truth_store(dataroot, scene)}: "
                            f"rerun the layout of scene {scene} on the current dataset")
        grid = OccGrid.from_attrs(layout_ds.attrs, stores.paths["layout"])
        rule = layout_ds.attrs.get("box_rule", BOX_RULES[0])
        semantics = truth_ds["semantics"].values[truth_index]  # [T, X, Y, Z]
        layout_boxes = {name: layout_ds[name].values[layout_index] for name in
                        ("box_center", "box_size", "box_rotation", "box_valid", "world_from_ego")}
        layout_boxes["box_instance_token"] = layout_ds["box_instance_token"].values
        truth_boxes = {name: truth_ds[name].values[truth_index] for name in
                       ("box_center", "box_size", "box_rotation", "box_present", "world_from_ego")}
        truth_boxes.update({name: truth_ds[name].values for name in ("box_instance_token", "box_category")})

        # 1. The layout as written, channel by channel.
        counts = channel_agreement(layout_ds["layout"].values[layout_index], semantics)
        # 2. Each annotated box over its object's voxels.
        frame, objects, coverage = object_agreement(layout_boxes, truth_boxes, semantics, grid, rule)
        on_keyframe = stores.open("frames")["is_keyframe"].values[layout_index][frame]
        for key, values in (("iou", objects), ("coverage", coverage)):
            per_object[key].append(values)
            per_object[f"{key}_keyframes"].append(values[on_keyframe])
        # 3. The footprint drawing alone: the true boxes (all objects, true poses) drawn as the layout draws boxes.
        truth_class = np.array([detection_class_of(c) for c in truth_boxes["box_category"]])
        drawn = box_footprints(truth_boxes["world_from_ego"], truth_boxes["box_center"], truth_boxes["box_size"],
                               truth_boxes["box_rotation"], truth_boxes["box_present"], truth_class, grid, rule=rule)
        blank = np.zeros((drawn.shape[0], NUM_MAP_LAYERS) + drawn.shape[2:], dtype=bool)
        counts_truth_boxes = channel_agreement(np.concatenate([blank, drawn], 1), semantics)
        for totals, new in ((pooled, counts), (pooled_truth_boxes, counts_truth_boxes)):
            for name in totals:
                for key, value in new[name].items():
                    totals[name][key] += value
        per_scene[scene] = {"frames": int(common.size), "iou": {name: _iou(values) for name, values in counts.items()},
                         "object_iou_mean": round(float(objects.mean()), 4) if objects.size else None}
        timing[scene] = layout_ds.attrs.get("timing")
    ious = {name: _iou(values) for name, values in pooled.items()}
    scored = [value for value in ious.values() if value is not None]
    return {
        "stage": "layout",
        "iou": ious,
        "mean_iou": round(float(np.mean(scored)), 4) if scored else None,
        "cells": pooled,
        "objects": {key: _summary(np.concatenate(values)) for key, values in per_object.items()},
        "iou_truth_boxes": {name: _iou(values) for name, values in pooled_truth_boxes.items()},
        "scenes": per_scene,
        "timing": timing,
        "method": {
            "iou": "per channel IoU over all frames (cells summed, then divided) against the synthetic truth occupancy; a "
                   "truth cell is a grid column with any voxel of the matched class: "
                   + ", ".join(f"{a}~{b}" for a, b in MATCHING_CLASS.items())
                   + "; map channels only where the column's ground shows (a voxel of " + ", ".join(GROUND_CLASSES)
                   + "); null where the union is empty in every frame. Objects the dataset does not annotate are "
                     "in the truth but not in the layout",
            "objects": "each annotated box of the layout (12 Hz, interpolated from 2 Hz keyframes) against its "
                       "object's voxels: the cells of the object's true box footprint whose column holds its "
                       "occupancy class (objects are built of parts inside their box, so iou < 1 even when exact); "
                       "iou and coverage (the fraction of the object's cells under the footprint) per (frame, object) "
                       "with voxels in the grid. Between keyframes the frames stage's interpolation (Hermite centre, "
                       "slerp) adds error; on keyframes (annotated poses) it is the layout's own",
            "iou_truth_boxes": "the footprint drawing alone: every true box at its true pose drawn by the layout's "
                               "rule, against the truth occupancy (overlaps between objects of different classes "
                               "make it less than 1)",
        },
    }
