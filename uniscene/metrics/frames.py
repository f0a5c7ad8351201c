"""Scores of the frames stage against the synthetic truth (results/metrics/frames.json).

For every scene given, its frames.zarr is compared with <dataroot>/truth/<scene>.zarr: frames
are matched by timestamp, boxes by instance token. Figures, pooled over all scenes:
- `interpolated`: centre error (m, Euclidean) and yaw error (deg, wrapped to [0, 180]) of the
  boxes where both the frames mark them valid and the truth has them present; `recall` = share
  of present boxes that are valid; `false_valid` = share of valid boxes that are not present,
  among the boxes within the truth's box range (uniscene.synth.truth.BOX_RANGE_M of the ego:
  farther, the truth does not say).
- `hold_last_keyframe`: the same for what a 2 Hz pipeline does: every frame takes the boxes of
  the last keyframe at or before it (the first keyframe before that).
- each of those also over the non-keyframe frames alone (`*_between_keyframes`) and over the
  boxes that move (`*_moving`: true speed above MOVING_MPS, from the truth's centres).
- `ego_pose`: translation error (m) and rotation error (deg) of `world_from_ego` per frame.
- `keyframe_exactness`: largest difference between the keyframe frames' boxes and the
  annotations in the tables (centre m, rotation as |1 - |<q, q'>||, size m): 0 when exact.
"""

import numpy as np

from uniscene.data.reader import keyframe_annotations, open_dataset, scene_record, scene_samples
from uniscene.errors import UserError
from uniscene.frames import nearest_index
from uniscene.geometry import quaternion_yaw
from uniscene.metrics import SceneStores
from uniscene.paths import truth_store
from uniscene.store import open_store
from uniscene.synth.truth import BOX_RANGE_M

MAX_TIME_MISMATCH_US = 1_000
MOVING_MPS = 0.5


def _summary(center_error_m: np.ndarray, yaw_error_deg: np.ndarray, valid: np.ndarray, present: np.ndarray) -> dict:
    pairs = valid & present
    return {
        "median_center_error_m": float(np.median(center_error_m[pairs])) if pairs.any() else None,
        "p95_center_error_m": float(np.percentile(center_error_m[pairs], 95)) if pairs.any() else None,
        "median_yaw_error_deg": float(np.median(yaw_error_deg[pairs])) if pairs.any() else None,
        "p95_yaw_error_deg": float(np.percentile(yaw_error_deg[pairs], 95)) if pairs.any() else None,
        "recall": float(pairs.sum() / max(present.sum(), 1)),
        "false_valid": float((valid & ~present).sum() / max(valid.sum(), 1)),
        "boxes": int(pairs.sum()),
    }


def _errors(center, rotation, truth_center, truth_rotation):
    center_error = np.linalg.norm(center - truth_center, axis=-1)
    yaw_error = np.abs((quaternion_yaw(rotation) - quaternion_yaw(truth_rotation) + np.pi) % (2 * np.pi) - np.pi)
    return center_error, np.rad2deg(yaw_error)


def score_scene(frames, truth) -> dict:
    """Per-box errors of one scene: {name: [T, B'] arrays} over the instances the truth knows."""
    t_index = nearest_index(truth.timestamp_us.values, frames.timestamp_us.values)  # [T]
    mismatch = np.abs(truth.timestamp_us.values[t_index] - frames.timestamp_us.values)
    if mismatch.max(initial=0) > MAX_TIME_MISMATCH_US:
        raise UserError(f"truth store of scene '{frames.attrs['scene']}' has no frame at some frames.zarr timestamps: rerun `uniscene synth`")
    truth_slot = {str(tok): b for b, tok in enumerate(truth.box_instance_token.values)}
    slots = [(b, truth_slot[str(tok)]) for b, tok in enumerate(frames.box_instance_token.values) if str(tok) in truth_slot]
    mine = np.array([s[0] for s in slots], dtype=np.int64)
    theirs = np.array([s[1] for s in slots], dtype=np.int64)

    center = frames.box_center.values[:, mine]  # [T, B', 3]
    rotation = frames.box_rotation.values[:, mine]
    truth_center = truth.box_center.values[t_index][:, theirs]
    ego_xy = truth.world_from_ego.values[t_index][:, None, :2, 3]
    judged = np.linalg.norm(truth_center[..., :2] - ego_xy, axis=-1) <= BOX_RANGE_M  # [T, B']
    valid = frames.box_valid.values[:, mine]
    truth_rotation = truth.box_rotation.values[t_index][:, theirs]
    present = truth.box_present.values[t_index][:, theirs]

    # the 2 Hz baseline: the last keyframe's boxes (the first keyframe's before it)
    is_key = frames.is_keyframe.values
    keys = np.flatnonzero(is_key)
    last_key = keys[np.clip(np.searchsorted(keys, np.arange(len(is_key)), side="right") - 1, 0, len(keys) - 1)]  # [T]
    interp_center_error, interp_yaw_error = _errors(center, rotation, truth_center, truth_rotation)
    hold_center_error, hold_yaw_error = _errors(center[last_key], rotation[last_key], truth_center, truth_rotation)

    world_from_ego, truth_pose = frames.world_from_ego.values, truth.world_from_ego.values[t_index]
    relative = np.swapaxes(truth_pose[:, :3, :3], -1, -2) @ world_from_ego[:, :3, :3]
    cos_angle = np.clip((np.trace(relative, axis1=-2, axis2=-1) - 1) / 2, -1.0, 1.0)
    time_s = truth.timestamp_us.values[t_index] * 1e-6
    speed = np.linalg.norm(np.gradient(truth_center, time_s, axis=0), axis=-1) if len(time_s) > 1 else np.zeros(valid.shape)
    return {
        "moving": speed > MOVING_MPS,
        "interp": (interp_center_error, interp_yaw_error, valid & judged),
        "hold": (hold_center_error, hold_yaw_error, valid[last_key] & judged),
        "present": present,
        "between_keyframes": ~is_key,
        "ego_translation_error_m": np.linalg.norm(world_from_ego[:, :3, 3] - truth_pose[:, :3, 3], axis=-1),
        "ego_rotation_error_deg": np.rad2deg(np.arccos(cos_angle)),
    }


def keyframe_exactness(frames, nusc) -> dict:
    """Largest differences between the keyframe frames' boxes and the table annotations."""
    scene = scene_record(nusc, frames.attrs["scene"])
    ann = keyframe_annotations(nusc, scene_samples(nusc, scene))
    slot = {str(tok): b for b, tok in enumerate(frames.box_instance_token.values)}
    columns = np.array([slot[str(tok)] for tok in ann.instance_token], dtype=np.int64)
    key_of_sample = {str(s): k for k, s in enumerate(ann.sample_token)}
    rows = [(i, key_of_sample[str(s)]) for i, (s, key) in enumerate(zip(frames.sample_token.values, frames.is_keyframe.values))
            if key and str(s) in key_of_sample]
    if not rows or not columns.size:
        return {"center_m": 0.0, "rotation": 0.0, "size_m": 0.0, "missing_boxes": 0}
    frame_rows, key_rows = (np.array(x) for x in zip(*rows))
    present = ann.present[key_rows]  # [K, B]
    center = frames.box_center.values[frame_rows][:, columns]
    size = frames.box_size.values[frame_rows][:, columns].astype(np.float64)
    rotation = frames.box_rotation.values[frame_rows][:, columns]
    dot = np.abs(np.sum(rotation * ann.rotation[key_rows], axis=-1))
    return {
        "center_m": float(np.abs(center - ann.center[key_rows])[present].max(initial=0.0)),
        "size_m": float(np.abs(size - ann.size[key_rows].astype(np.float32))[present].max(initial=0.0)),
        "rotation": float(np.abs(1 - dot)[present].max(initial=0.0)),
        "missing_boxes": int((present & ~frames.box_valid.values[frame_rows][:, columns]).sum()),
    }


def evaluate(config: dict, scenes: list[SceneStores]) -> dict:
    dataset = config["dataset"]
    nusc = open_dataset(dataset["dataroot"], dataset["version"])
    pooled, exactness = {}, []
    for stores in scenes:
        frames = stores.open("frames")
        scores = score_scene(frames, open_store(truth_store(dataset["dataroot"], stores.scene)))
        for name, value in scores.items():
            pooled.setdefault(name, []).append(value)
        exactness.append(keyframe_exactness(frames, nusc))

    def cat(values, axis=1):  # boxes differ between scenes: flatten each scene first
        return np.concatenate([np.ravel(v) for v in values]) if axis else np.concatenate(values)

    present, moving = cat(pooled["present"]), cat(pooled["moving"])
    between = cat([np.broadcast_to(b[:, None], p.shape) for b, p in zip(pooled["between_keyframes"], pooled["present"])])
    out = {"scenes": len(scenes), "frames": int(sum(len(b) for b in pooled["between_keyframes"]))}
    for name, key in (("interpolated", "interp"), ("hold_last_keyframe", "hold")):
        center_error = cat([v[0] for v in pooled[key]])
        yaw_error = cat([v[1] for v in pooled[key]])
        valid = cat([v[2] for v in pooled[key]])
        out[name] = _summary(center_error, yaw_error, valid, present)
        out[f"{name}_between_keyframes"] = _summary(center_error, yaw_error, valid & between, present & between)
        out[f"{name}_moving"] = _summary(center_error, yaw_error, valid & moving, present & moving)
    translation, rotation = cat(pooled["ego_translation_error_m"]), cat(pooled["ego_rotation_error_deg"])
    out["ego_pose"] = {
        "median_translation_error_m": float(np.median(translation)), "p95_translation_error_m": float(np.percentile(translation, 95)),
        "max_translation_error_m": float(translation.max()), "median_rotation_error_deg": float(np.median(rotation)),
        "p95_rotation_error_deg": float(np.percentile(rotation, 95)), "max_rotation_error_deg": float(rotation.max()),
    }
    out["keyframe_exactness"] = {k: max(e[k] for e in exactness) for k in exactness[0]}
    out["how"] = __doc__.split("\n\n", 1)[1].strip()
    return out
