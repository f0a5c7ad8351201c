"""Scores of occupancy generated from layouts (results/metrics/occ_gen.json), on the held-out scenes.

What is scored, for each generated store (the default sampler on whole scenes; on the first
occ_dit.eval_frames frames the DDIM-50 reference and each leak option), and for the label
occupancy itself where the figure applies to it (the reference line):
- layout adherence, per object class: `box_recall`, the share of the layout's boxes (per frame)
  whose footprint column holds at least one voxel of the box's class; `outside_share`, the
  share of the voxels of that class that lie outside every footprint of the class.
- map classes: IoU of generated vs label voxels for the classes the layout's map layers fix
  (driveable_surface: drivable_area; sidewalk: walkway), inside the label's mask_camera; and the
  17-class mIoU and geometric IoU vs the labels (Occ3D's protocol: free excluded, inside
  mask_camera), the reference's "mIoU vs GT".
- temporal consistency: voxels of frame t + 1 mapped into frame t by the ego motion
  (world_from_ego of the layout store), nearest voxel; the IoU of the static occupied voxels
  (every class but the movable ones) that keep their class, averaged over the frame pairs inside
  a clip and over those across a clip boundary (the `clip` variable of occ_gen.zarr).
- distribution (`f3d_mmd`): F3D, the Frechet distance between Gaussians fitted to features
  (uniscene.metrics.frechet), and MMD^2, unbiased, Gaussian kernel (uniscene.metrics.mmd), on the
  feature vectors of the evaluation-only occupancy autoencoder (results/models/occ_eval_ae,
  `uniscene train-occ-eval-ae`: its own network and seed, trained on the training scenes' labels
  only), one vector per frame of the whole grid (no mask: the generator makes every voxel):
  generated frames vs the held-out scenes' label frames. The floor is the same two figures
  between two halves of the held-out label frames (by scene, alternately, where there are two or
  more held-out scenes; else the first and second half of the scene's frames): a generator
  matching the label distribution scores about there. `generated_b_vs_label_a` puts the
  generated frames of half B against the labels of half A, the floor's comparison with B's
  labels swapped for generated ones (same set sizes, so the same small-sample bias as the
  floor). One kernel bandwidth for every MMD of the file: the median distance between the
  held-out label frames' features. On the eval window (few frames) the variants are compared
  with each other only.

Letters: T frames, B boxes, N footprint cells, X Y Z grid, D feature width.
"""

import numpy as np

from uniscene.classes import DETECTION_CLASS_NAMES, FREE, MOVABLE_CLASSES, NUM_OCC_CLASSES, OCC_CLASS_ID
from uniscene.errors import UserError
from uniscene.geometry import invert_transform
from uniscene.grid import OccGrid
from uniscene.layout.raster import NUM_MAP_LAYERS, box_cells
from uniscene.metrics.frechet import features_frechet
from uniscene.metrics.mmd import median_bandwidth, mmd_rbf

MAP_FIXED_CLASSES = {"driveable_surface": "drivable_area", "sidewalk": "walkway"}  # occupancy class: layout map layer
VARIANTS = ("occ_gen_ddim50", "occ_gen_leak_noise_prior", "occ_gen_leak_meta")  # store kinds scored on the eval window
OCC_OF_DETECTION = np.array([OCC_CLASS_ID[name] for name in DETECTION_CLASS_NAMES])  # detection class -> occupancy class


def layout_adherence(semantics: np.ndarray, layout, grid: OccGrid) -> dict:
    """semantics [T, X, Y, Z] uint8 against the boxes and object channels of a layout dataset (same frames)."""
    boxes = {name: layout[name].values for name in ("world_from_ego", "box_center", "box_size", "box_rotation", "box_valid",
                                                     "box_class")}
    drawn = boxes["box_valid"] & (boxes["box_class"] >= 0)
    cells = box_cells(boxes["world_from_ego"], boxes["box_center"], boxes["box_size"], boxes["box_rotation"], drawn, grid,
                      rule=layout.attrs.get("box_rule", "overlap"))  # [N, 4] (frame, box, x, y)
    t, b, x, y = cells.T
    occ_class = OCC_OF_DETECTION[boxes["box_class"][t, b]]  # [N]
    holds = (semantics[t, x, y, :] == occ_class[:, None]).any(1)  # [N] the cell's column holds the box's class
    num_boxes = boxes["box_valid"].shape[1]
    key = t * num_boxes + b
    hit = np.zeros(drawn.size, bool)
    np.logical_or.at(hit, key, holds)
    scored = np.zeros(drawn.size, bool)
    scored[key] = True  # boxes with a footprint inside the grid
    box_class = boxes["box_class"].reshape(-1)
    objects = layout["layout"].values[:, NUM_MAP_LAYERS:]  # [T, 10, X, Y]
    result = {}
    for det, name in enumerate(DETECTION_CLASS_NAMES):
        boxes_of_class = scored & (box_class == det)
        voxels = semantics == OCC_CLASS_ID[name]  # [T, X, Y, Z]
        outside = voxels & ~objects[:, det, :, :, None]
        count = int(voxels.sum())
        result[name] = {
            "boxes": int(boxes_of_class.sum()),
            "box_recall": round(float(hit[boxes_of_class].mean()), 4) if boxes_of_class.any() else None,
            "voxels": count,
            "outside_share": round(float(outside.sum() / count), 4) if count else None,
        }
    return result


def class_ious(prediction: np.ndarray, target: np.ndarray, mask: np.ndarray, classes) -> dict:
    """IoU of each class (name: value, None where neither holds it) over the voxels inside `mask`."""
    ious = {}
    for name in classes:
        c = OCC_CLASS_ID[name]
        p, q = (prediction == c) & mask, (target == c) & mask
        union = int((p | q).sum())
        ious[name] = round(float((p & q).sum() / union), 4) if union else None
    return ious


def miou_vs(prediction: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict:
    """Occ3D's protocol: mean IoU over the 17 classes present in either, free excluded; geometric IoU; inside `mask`."""
    from uniscene.classes import OCC_CLASS_NAMES

    ious = class_ious(prediction, target, mask, OCC_CLASS_NAMES)
    present = [v for v in ious.values() if v is not None]
    p, q = (prediction != FREE) & mask, (target != FREE) & mask
    union = int((p | q).sum())
    return {"miou": round(float(np.mean(present)), 4) if present else None,
            "iou": round(float((p & q).sum() / union), 4) if union else None, "per_class": ious}


def static_agreement(semantics: np.ndarray, world_from_ego: np.ndarray, grid: OccGrid) -> np.ndarray:
    """[T - 1] IoU of static occupied voxels between frame t + 1 (moved into frame t's ego frame) and frame t."""
    centres = grid.voxel_centers().reshape(-1, 3).astype(np.float64)  # [X Y Z, 3] ego frame
    static = np.ones(NUM_OCC_CLASSES + 1, bool)
    static[list(MOVABLE_CLASSES)] = False
    static[FREE] = False
    flat = semantics.reshape(len(semantics), -1)
    out = np.zeros(max(len(semantics) - 1, 0))
    for t in range(len(semantics) - 1):
        t_from_next = invert_transform(world_from_ego[t]) @ world_from_ego[t + 1]
        moved = centres @ t_from_next[:3, :3].T + t_from_next[:3, 3]
        index, inside = grid.index_of(moved)
        nxt = flat[t + 1][inside]
        here = semantics[t][index[inside, 0], index[inside, 1], index[inside, 2]]
        a, b = static[nxt], static[here]
        union = int((a | b).sum())
        out[t] = (a & b & (nxt == here)).sum() / union if union else 1.0
    return out


def temporal_consistency(semantics: np.ndarray, world_from_ego: np.ndarray, grid: OccGrid, clip: np.ndarray | None) -> dict:
    agreement = static_agreement(semantics, world_from_ego, grid)
    result = {"all_pairs": round(float(agreement.mean()), 4) if agreement.size else None}
    if clip is not None:
        across = clip[1:] != clip[:-1]
        result["within_clips"] = round(float(agreement[~across].mean()), 4) if (~across).any() else None
        result["across_clips"] = round(float(agreement[across].mean()), 4) if across.any() else None
        result["pairs_across"] = int(across.sum())
    return result


def score_store(store, layout, labels, grid: OccGrid) -> dict:
    """Every figure of one occupancy store (generated or label), on the frames of `layout` and `labels`."""
    semantics = store["semantics"].values
    clip = store["clip"].values if "clip" in store else None
    label_semantics, mask = labels["semantics"].values, labels["mask_camera"].values
    return {
        "frames": int(len(semantics)),
        "layout_adherence": layout_adherence(semantics, layout, grid),
        "map_class_iou": class_ious(semantics, label_semantics, mask, MAP_FIXED_CLASSES),
        "vs_label": miou_vs(semantics, label_semantics, mask),
        "temporal_consistency": temporal_consistency(semantics, layout["world_from_ego"].values, grid, clip),
    }


def _generation(store) -> dict:
    keys = ("sampler", "inference_steps", "guidance_scale", "leak_noise_prior", "leak_meta", "clip_frames", "seconds_per_clip",
            "generate_seconds", "device", "frames")
    return {key: store.attrs.get(key) for key in keys}


def _window(store, start: int, stop: int):
    """The frames [start, stop) of a store (the generated variants cover the first eval_frames frames)."""
    return store.isel(frame=slice(start, stop))


def distribution_distance(a: np.ndarray, b: np.ndarray, sigma: float) -> dict:
    """F3D and unbiased MMD^2 (kernel bandwidth `sigma`) between feature sets a [N, D] and b [M, D], with their sizes."""
    if min(len(a), len(b)) < 2:
        return {"frames_a": int(len(a)), "frames_b": int(len(b)), "f3d": None, "mmd": None}
    return {"frames_a": int(len(a)), "frames_b": int(len(b)), "f3d": round(features_frechet(a, b), 6),
            "mmd": round(mmd_rbf(a, b, sigma), 6)}


def floor_halves(label_features: dict) -> tuple:
    """The held-out label frames cut in two: {scene: features [T, D]} -> (half A, half B) as {scene: slice of frames},
    and the rule used: by scene (alternately, in scene order) where there are two or more, else by time."""
    scenes = list(label_features)
    if len(scenes) >= 2:
        every = slice(None)
        return {s: every for s in scenes[0::2]}, {s: every for s in scenes[1::2]}, "by scene: alternate held-out scenes"
    (scene,) = scenes
    half = len(label_features[scene]) // 2
    return {scene: slice(0, half)}, {scene: slice(half, None)}, "by time: the first and the second half of the scene's frames"


def _gather(features: dict, part: dict) -> np.ndarray:
    return np.concatenate([features[scene][frames] for scene, frames in part.items()])


def distribution_figures(label: dict, generated: dict, window_label: dict, window_generated: dict, window: str) -> dict:
    """`f3d_mmd` of occ_gen.json from features: label / generated {scene: [T, D]} (whole scenes, default sampler);
    window_label {scene: [T', D]} and window_generated {variant: {scene: [T', D]}} (the eval window)."""
    all_label = np.concatenate(list(label.values()))
    sigma = median_bandwidth(all_label)
    half_a, half_b, split = floor_halves(label)
    figures = {
        "mmd_bandwidth": round(sigma, 6),
        "default": distribution_distance(np.concatenate(list(generated.values())), all_label, sigma),
        "floor": {"split": split, "half_a": {s: _frames_text(f) for s, f in half_a.items()},
                  "half_b": {s: _frames_text(f) for s, f in half_b.items()},
                  **distribution_distance(_gather(label, half_b), _gather(label, half_a), sigma)},
        "generated_b_vs_label_a": distribution_distance(_gather(generated, half_b), _gather(label, half_a), sigma),
    }
    all_window = np.concatenate(list(window_label.values()))
    figures["eval_window"] = {"frames": window, **{name: distribution_distance(np.concatenate(list(per_scene.values())), all_window, sigma)
                                                   for name, per_scene in window_generated.items()}}
    return figures


def _frames_text(frames: slice) -> str:
    return "all" if frames == slice(None) else f"{frames.start or 0}:{'' if frames.stop is None else frames.stop}"


def _feature_model(path, grid: OccGrid, device: str):
    from uniscene.models.occ_eval_ae.pretrained import describe, load_eval_ae

    if path is None:
        raise UserError("`uniscene metrics occ_gen` needs --occ-eval-ae DIR (results/models/occ_eval_ae, from "
                        "`uniscene train-occ-eval-ae`)")
    model = load_eval_ae(path, grid.shape, device)
    return model, describe(path, model)


def evaluate(config: dict, scenes: list, occ_eval_ae=None) -> dict:
    from uniscene.config import resolve_device
    from uniscene.models.occ_eval_ae.features import frame_features

    grid = OccGrid.from_config(config)
    eval_frames = int(config["occ_dit"]["eval_frames"])
    feature_model, feature_model_info = _feature_model(occ_eval_ae, grid, resolve_device(config))
    label_features, generated_features, window_features, window_label = {}, {}, {}, {}
    per_scene = {}
    for scene in scenes:
        layout, labels, generated = scene.open("layout"), scene.open("occ_label"), scene.open("occ_gen")
        entry = {
            "default": {**_generation(generated), **score_store(generated, layout, labels, grid)},
            "label": score_store(labels, layout, labels, grid),
        }
        label_features[scene.scene] = frame_features(feature_model, labels["semantics"])
        generated_features[scene.scene] = frame_features(feature_model, generated["semantics"])
        window = {}
        stop = min(eval_frames, layout.sizes["frame"])
        window_label[scene.scene] = label_features[scene.scene][:stop]
        for kind in ("occ_gen", *VARIANTS):
            if kind not in scene.paths:
                continue
            store = _window(scene.open(kind), 0, stop)
            name = "default" if kind == "occ_gen" else kind.removeprefix("occ_gen_")
            window[name] = {**_generation(scene.open(kind)), **score_store(store, _window(layout, 0, stop), _window(labels, 0, stop), grid)}
            window_features.setdefault(name, {})[scene.scene] = (generated_features[scene.scene][:stop] if kind == "occ_gen"
                                                                 else frame_features(feature_model, store["semantics"]))
        if "occ_gen_ddim50" in scene.paths:
            fast = _window(generated, 0, stop)["semantics"].values
            reference = _window(scene.open("occ_gen_ddim50"), 0, stop)["semantics"].values
            window["default_vs_ddim50"] = miou_vs(fast, reference, np.ones(fast.shape, bool))
        entry["eval_window"] = {"frames": f"0:{stop}", **window}
        per_scene[scene.scene] = entry
    f3d_mmd = distribution_figures(label_features, generated_features, window_label,
                                   {name: v for name, v in window_features.items() if len(v) == len(scenes)}, f"first {eval_frames} frames")
    return {
        "scenes": per_scene,
        "f3d_mmd": {"feature_model": feature_model_info, **f3d_mmd},
        "protocol": {
            "default": "the default sampler (occ_dit.sampler, inference_steps, guidance_scale) on whole held-out scenes; no ground truth read",
            "eval_window": f"the first {eval_frames} frames: default vs DDIM 50 steps (the reference sampler) and each leak option",
            "label": "the label occupancy scored the same way (layout adherence and temporal consistency of the data itself)",
            "box_recall": "share of layout boxes (per frame) whose footprint column holds a voxel of the box's class",
            "outside_share": "share of a class's voxels outside every layout footprint of that class",
            "map_class_iou": "IoU vs the labels inside mask_camera, classes fixed by the layout's map layers",
            "vs_label": "17-class mIoU (free excluded) and geometric IoU vs the labels inside mask_camera",
            "temporal_consistency": "IoU of static occupied voxels that keep their class from frame t + 1 (ego motion applied) to t",
            "f3d_mmd": (f"features: the {feature_model_info['feature_dim']}-d bottleneck vector of the evaluation-only occupancy "
                        "autoencoder (f3d_mmd.feature_model), one per frame of the whole grid (no mask); f3d: Frechet distance of "
                        "Gaussians fitted to the features; mmd: unbiased MMD^2, Gaussian kernel, bandwidth f3d_mmd.mmd_bandwidth (the "
                        "median distance between the held-out label frames' features, one for the whole file); default: every "
                        "generated frame (frames_a) vs every held-out label frame (frames_b); floor: label half B (frames_a) vs label "
                        "half A (frames_b), the figures of two samples of the label distribution; generated_b_vs_label_a: the "
                        "generated frames of half B vs the labels of half A (the floor with B's labels generated); eval_window: each "
                        "variant's frames vs the label frames of the window (few frames: compare the variants with each other)"),
        },
    }
