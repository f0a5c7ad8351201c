"""mmdet3d-style info files and UniScene's 12 Hz infos, read as frames (their export: uniscene/export/infos.py).

`read_infos`, `frames_from_infos`: the v1.1 layout that uniscene/export/infos.py writes (mmdet3d's own files too) and
the 12 Hz info files of UniScene users (`nuscenes_interp_12Hz_infos_*.pkl`,
`nuscenes_advanced_12Hz_infos_*.pkl`: top-level `infos`, per frame `token`, `lidar_path`,
`timestamp` (us), `ego2global_*`, `lidar2ego_*`, `gt_boxes` (N x 7, mmdet3d >= 1.0 LiDAR boxes:
x, y, z, l, w, h, yaw), `gt_names`, optional `gt_velocity`, `cams`). Frames are assigned to a
scene by their LiDAR file, which must be in the scene's LIDAR_TOP chain (files are matched by
name, so any path prefix works); cameras likewise, and their intrinsics, calibrations and image
sizes come from the dataset's tables. Instances keep their identity from
`instance_token` (v1.1) or `instance_tokens` (12 Hz); files without ids (the published 12 Hz
infos) are associated frame to frame: same name, nearest centre, optimal assignment, at most
`MAX_ASSOCIATION_M` apart; such tracks are named `track-<n>`. The boxes at every sweep come from
the 12 Hz boxes by the same interpolation as keyframes (uniscene.frames), holding a one-sided box
for half a frame interval.

Letters: T frames, B instances, N boxes of one frame, S sweeps.
"""

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from uniscene.sensors import CAMERA_NAMES, LIDAR_NAME
from uniscene.classes import DETECTION_CLASS_ID, DETECTION_CLASS_NAMES, LIDARSEG_CLASS_ID, OCC_CLASS_ID
from uniscene.classes import detection_class_of, occ_class_of
from uniscene.boxes import Boxes
from uniscene.errors import UserError
from uniscene.frames import camera_variables, instance_variables, interpolate_boxes, sweep_variables
from uniscene.geometry import (
    make_transform, matrix_to_quaternion, quaternion_to_matrix, yaw_to_quaternion,
)

MAX_ASSOCIATION_M = 3.0  # 12 Hz frames are 83 ms apart: 3 m is 36 m/s

_CACHE = {}  # resolved path -> list[FrameInfo]


def _matrix(value) -> np.ndarray:
    return np.asarray(value, dtype=np.float64).reshape(4, 4)


# --------------------------------------------------------------------------------------- import


@dataclass
class FrameInfo:
    """One frame of an info file, in uniscene's conventions (world frame boxes, 4x4 transforms)."""

    token: str
    timestamp_us: int
    world_from_ego: np.ndarray  # [4, 4] the frame's ego pose
    lidar_name: str  # file name of the LiDAR sweep
    cam_name: dict  # camera -> image file name
    box_center: np.ndarray  # [N, 3]
    box_size: np.ndarray  # [N, 3] (w, l, h)
    box_rotation: np.ndarray  # [N, 4]
    box_velocity: np.ndarray  # [N, 3]
    box_name: np.ndarray  # [N] str, full category or detection name
    box_instance: np.ndarray | None = field(default=None)  # [N] str, or None when the file has no ids


def read_infos(path) -> list[FrameInfo]:
    """Frames of an info pkl (v1.1 `data_list` or 12 Hz `infos`), loaded once per process."""
    path = Path(path)
    key = str(path.resolve())
    if key in _CACHE:
        return _CACHE[key]
    if not path.is_file():
        raise UserError(f"info file {path} (dataset.info_pkl) does not exist: point dataset.info_pkl to it, or set it to null")
    try:
        with open(path, "rb") as handle:
            payload = pickle.load(handle)
    except Exception as error:  # pickle raises many types for a damaged or foreign file
        raise UserError(f"info file {path} cannot be unpickled ({error}): download it again") from error
    try:
        if isinstance(payload, dict) and "data_list" in payload:
            frames = [_from_v11(entry) for entry in payload["data_list"]]
        elif isinstance(payload, dict) and "infos" in payload:
            frames = [_from_12hz(entry) for entry in payload["infos"]]
        else:
            raise UserError(f"info file {path} has neither 'data_list' (mmdet3d v1.1) nor 'infos' (12 Hz infos) at its top level")
    except (KeyError, ValueError, TypeError) as error:
        raise UserError(f"info file {path} lacks or has a malformed field ({type(error).__name__}: {error}): it is not a nuScenes info file") from error
    _CACHE[key] = frames
    return frames


def _boxes_from_lidar(gt_boxes: np.ndarray, velocity_xy: np.ndarray, world_from_lidar: np.ndarray):
    """LiDAR-frame boxes (x, y, z, l, w, h, yaw) [N, 7] and (vx, vy) [N, 2] -> world centre, wlh, quaternion, velocity."""
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 7)
    center = gt_boxes[:, :3] @ world_from_lidar[:3, :3].T + world_from_lidar[:3, 3]
    rotation = matrix_to_quaternion(world_from_lidar[:3, :3] @ quaternion_to_matrix(yaw_to_quaternion(gt_boxes[:, 6])))
    velocity = np.concatenate([np.nan_to_num(np.asarray(velocity_xy, np.float64).reshape(-1, 2)), np.zeros((len(gt_boxes), 1))], 1)
    return center, gt_boxes[:, [4, 3, 5]], rotation, velocity @ world_from_lidar[:3, :3].T


def _from_v11(entry: dict) -> FrameInfo:
    world_from_lidar_ego = _matrix(entry["ego2global"])
    world_from_lidar = world_from_lidar_ego @ _matrix(entry["lidar_points"]["lidar2ego"])
    images = entry["images"]
    instances = entry.get("instances", [])
    center, size, rotation, velocity = _boxes_from_lidar(
        [inst["bbox_3d"][:7] for inst in instances], [inst.get("velocity", [0.0, 0.0])[:2] for inst in instances], world_from_lidar
    )
    if all("rotation_global" in inst for inst in instances):  # uniscene's own file: exact rotation and velocity
        rotation = np.array([inst["rotation_global"] for inst in instances], dtype=np.float64).reshape(-1, 4)
        velocity = np.array([inst["velocity_global"] for inst in instances], dtype=np.float64).reshape(-1, 3)
    names = [inst.get("category_name") or _label_name(inst.get("bbox_label_3d", -1)) for inst in instances]
    ids = [inst.get("instance_token") for inst in instances]
    front = images.get(CAMERA_NAMES[0], {})
    return FrameInfo(
        token=str(entry["token"]),
        timestamp_us=int(round(float(entry["timestamp"]) * 1e6)),
        world_from_ego=_matrix(front["ego2global"]) if "ego2global" in front else world_from_lidar_ego,
        lidar_name=Path(entry["lidar_points"]["lidar_path"]).name,
        cam_name={c: Path(i["img_path"]).name for c, i in images.items()},
        box_center=center, box_size=size, box_rotation=rotation, box_velocity=velocity,
        box_name=np.array(names, dtype=object),
        box_instance=np.array(ids, dtype=object) if instances and all(ids) else (None if instances else np.array([], dtype=object)),
    )


def _label_name(label: int) -> str:
    return DETECTION_CLASS_NAMES[label] if 0 <= label < len(DETECTION_CLASS_NAMES) else "ignore"


def _from_12hz(info: dict) -> FrameInfo:
    world_from_ego = make_transform(info["ego2global_rotation"], info["ego2global_translation"])
    world_from_lidar = world_from_ego @ make_transform(info["lidar2ego_rotation"], info["lidar2ego_translation"])
    gt_boxes = np.asarray(info.get("gt_boxes", np.zeros((0, 7))), dtype=np.float64).reshape(-1, 7)
    velocity_xy = info.get("gt_velocity", np.zeros((len(gt_boxes), 2)))
    center, size, rotation, velocity = _boxes_from_lidar(gt_boxes, velocity_xy, world_from_lidar)
    cams = info["cams"]
    front = cams.get(CAMERA_NAMES[0], {})
    if "ego2global_rotation" in front:  # the pose of the frame's own camera capture
        world_from_ego = make_transform(front["ego2global_rotation"], front["ego2global_translation"])
    ids = info.get("instance_tokens")
    return FrameInfo(
        token=str(info["token"]),
        timestamp_us=int(info["timestamp"]),
        world_from_ego=world_from_ego,
        lidar_name=Path(info["lidar_path"]).name,
        cam_name={c: Path(i["data_path"]).name for c, i in cams.items()},
        box_center=center, box_size=size, box_rotation=rotation, box_velocity=velocity,
        box_name=np.asarray(info.get("gt_names", []), dtype=object).reshape(-1),
        box_instance=None if ids is None else np.asarray(ids, dtype=object).reshape(-1),
    )


def associate(frames: list[FrameInfo], max_distance_m: float = MAX_ASSOCIATION_M) -> list[np.ndarray]:
    """Track ids (`track-<n>`) per box of consecutive frames: same name, optimal nearest-centre matching."""
    from scipy.optimize import linear_sum_assignment

    ids, next_id = [], 0
    for t, frame in enumerate(frames):
        current = np.empty(len(frame.box_center), dtype=object)
        if t and len(current) and len(frames[t - 1].box_center):
            previous = frames[t - 1]
            cost = np.linalg.norm(previous.box_center[:, None, :2] - frame.box_center[None, :, :2], axis=-1)  # [Np, N]
            cost[previous.box_name[:, None] != frame.box_name[None, :]] = np.inf
            cost = np.where(cost <= max_distance_m, cost, 1e9)
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols):
                if cost[r, c] < 1e9:
                    current[c] = ids[t - 1][r]
        for n in range(len(current)):
            if current[n] is None:
                current[n], next_id = f"track-{next_id:05d}", next_id + 1
        ids.append(current)
    return ids


def _class_ids(name: str) -> tuple[int, int]:
    """(detection class, occupancy class) of a full category name or a detection class name."""
    if name in LIDARSEG_CLASS_ID:
        return detection_class_of(name), occ_class_of(name)
    return DETECTION_CLASS_ID.get(name, -1), OCC_CLASS_ID.get(name, 0)


def frames_from_infos(infos: list[FrameInfo], scene: str, dataroot, version: str, hold_one_sided_s: float) -> xr.Dataset:
    """The frames dataset of `scene` from an info file's frames; sweeps and files from the dataset's tables."""
    from uniscene.data.reader import open_dataset, scene_data

    data = scene_data(open_dataset(dataroot, version), scene, CAMERA_NAMES + (LIDAR_NAME,))
    lidar = data.chains[LIDAR_NAME]
    sweep_of = {Path(p).name: s for s, p in enumerate(lidar.filename)}
    frames = sorted((f for f in infos if f.lidar_name in sweep_of), key=lambda f: f.timestamp_us)
    if not frames:
        raise UserError(f"info file (dataset.info_pkl) has no frame whose LiDAR file is in scene '{scene}': use the info file of that split")
    if len({f.timestamp_us for f in frames}) != len(frames):
        raise UserError(f"info file (dataset.info_pkl) has two frames of scene '{scene}' at one timestamp: it is corrupt")
    t_us = np.array([f.timestamp_us for f in frames], dtype=np.int64)

    # 1. cameras: the captures the file names, found in each camera's chain by file name
    cam_index = np.zeros((len(frames), len(CAMERA_NAMES)), dtype=np.int64)  # [T, V]
    for v, camera in enumerate(CAMERA_NAMES):
        by_name = {Path(p).name: j for j, p in enumerate(data.chains[camera].filename)}
        for i, frame in enumerate(frames):
            if frame.cam_name.get(camera) not in by_name:
                raise UserError(
                    f"info frame '{frame.token}' of scene '{scene}' has no {camera} image of the dataset "
                    f"({frame.cam_name.get(camera)}): the info file and dataset.dataroot do not match"
                )
            cam_index[i, v] = by_name[frame.cam_name[camera]]

    # 2. boxes: one slot per instance, [T, B]
    ids = [f.box_instance for f in frames]
    if any(i is None for i in ids):
        ids = associate(frames)
    slot = {}
    for per_frame in ids:
        for instance in per_frame:
            slot.setdefault(instance, len(slot))
    b = len(slot)
    center, size, velocity = (np.zeros((len(frames), b, 3)) for _ in range(3))
    rotation = np.tile([1.0, 0.0, 0.0, 0.0], (len(frames), b, 1))
    valid = np.zeros((len(frames), b), dtype=bool)
    names = [""] * b
    for i, (frame, per_frame) in enumerate(zip(frames, ids)):
        index = np.array([slot[x] for x in per_frame], dtype=np.int64)
        center[i, index], size[i, index] = frame.box_center, frame.box_size
        rotation[i, index], velocity[i, index], valid[i, index] = frame.box_rotation, frame.box_velocity, True
        for n, bi in enumerate(index):
            names[bi] = names[bi] or str(frame.box_name[n])
    classes = [_class_ids(n) for n in names]
    frame_boxes = Boxes(center=center, size=size, rotation=rotation, velocity=velocity, valid=valid)

    # 3. boxes at every sweep: the 12 Hz boxes interpolated, a one-sided box held half a frame interval
    half_frame_s = 0.5 * float(np.median(np.diff(t_us))) * 1e-6 if len(t_us) > 1 else hold_one_sided_s
    sweep_boxes = interpolate_boxes(t_us, center, size, rotation, valid, lidar.timestamp_us, half_frame_s)

    out = {"world_from_ego": (("frame", "row", "col"), np.stack([f.world_from_ego for f in frames]))}
    out.update(camera_variables(data.chains, cam_index))
    out["timestamp_us"] = ("frame", t_us)  # the file's frame time (its CAM_FRONT capture's for uniscene's files)
    out["lidar_sweep_index"] = ("frame", np.array([sweep_of[f.lidar_name] for f in frames], dtype=np.int64))
    out.update(sweep_variables(lidar, data.lidarseg_filename))
    out.update(instance_variables(list(slot), names, [c[0] for c in classes], [c[1] for c in classes]))
    out.update(frame_boxes.variables("frame", "box_"))
    out.update(sweep_boxes.variables("sweep", "sweep_box_"))
    return xr.Dataset(out, attrs={"scene": scene, "location": data.location, "camera_names": list(CAMERA_NAMES)})
