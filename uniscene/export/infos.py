"""mmdet3d-style info files: frames datasets written as mmdet3d v1.1 `data_list` (`uniscene export infos`).

Export (`export_infos`): the layout that mmdet3d 1.x reads (`metainfo` + `data_list`, info_version
1.1), one entry per 12 Hz frame. As in mmdet3d, `ego2global` and `lidar2ego` are those of the
frame's LiDAR sweep and `instances[*].bbox_3d` is (x, y, z, l, w, h, yaw) of the box centre in
that sweep's LIDAR_TOP frame, `velocity` (vx, vy) in the same frame; these are the boxes at the
frame's (camera) time. Paths are relative to the dataset root (set mmdet3d's `data_prefix` to
''). Points inside boxes are not counted: `num_lidar_pts` is -1 and `bbox_3d_isvalid` True, so
use `use_valid_flag=True`. uniscene adds keys that mmdet3d ignores and that make the file
round-trip: per entry `scene_name`, `sample_token`, `is_key_frame`; per image `ego2global` (the
frame's ego pose), `height`, `width`; per instance `instance_token`, `category_name`,
`rotation_global` (w, x, y, z) and `velocity_global`.

The frames are a scene's frames.zarr (the source dataset's own sensor files; paths relative to its
root) or a chain's generated frames as the nuScenes export lays them out
(`uniscene.export.nuscenes.exported_frames`: one LIDAR_TOP sweep per frame, the video's cameras or
none, paths relative to the export's root, `metainfo.version` its version). Entries carry the
cameras of the frames' cam dim: without a video store `images` is empty. uniscene reads these files
back with uniscene/interop/infos.py (`dataset.info_pkl`).

Letters: T frames, N boxes of one frame.
"""

import pickle
from pathlib import Path

import numpy as np
import xarray as xr

from uniscene.classes import DETECTION_CLASS_NAMES
from uniscene.geometry import invert_transform, quaternion_to_matrix
from uniscene.sensors import CAMERA_NAMES
from uniscene.store import atomic_file

INFO_VERSION = "1.1"
MAX_PREVIOUS_SWEEPS = 10  # mmdet3d's `lidar_sweeps`: the previous sweeps, most recent first


def _list(matrix: np.ndarray) -> list:
    return np.asarray(matrix, dtype=np.float64).tolist()


def export_entries(frames: xr.Dataset) -> list[dict]:
    """The v1.1 `data_list` entries of one scene's frames dataset (module docstring)."""
    f = {name: frames[name].values for name in frames.data_vars}
    cameras = list(frames.attrs.get("camera_names") or CAMERA_NAMES)[:frames.sizes.get("cam", 0)]  # the cam dim's
    entries = []
    for i in range(frames.sizes["frame"]):
        s = int(f["lidar_sweep_index"][i])
        world_from_lidar = f["world_from_sweep_ego"][s] @ f["ego_from_lidar"][s]
        lidar_from_world = invert_transform(world_from_lidar)
        world_from_ego = f["world_from_ego"][i]
        images = {}
        for v, camera in enumerate(cameras):
            ego_from_cam = f["ego_from_cam"][i, v]
            images[camera] = {
                "img_path": str(f["cam_image_path"][i, v]),
                "cam2img": _list(f["cam_intrinsics"][i, v]),
                "cam2ego": _list(ego_from_cam),
                "lidar2cam": _list(invert_transform(world_from_ego @ ego_from_cam) @ world_from_lidar),
                "timestamp": int(f["cam_timestamp_us"][i, v]) / 1e6,
                "sample_data_token": str(f["cam_sample_data_token"][i, v]),
                "ego2global": _list(world_from_ego),
                "height": int(f["cam_image_size"][v, 0]),
                "width": int(f["cam_image_size"][v, 1]),
            }
        sweeps = []
        for p in range(s - 1, max(s - 1 - MAX_PREVIOUS_SWEEPS, -1), -1):
            world_from_sweep = f["world_from_sweep_ego"][p] @ f["ego_from_lidar"][p]
            sweeps.append({
                "lidar_points": {
                    "lidar_path": str(f["sweep_path"][p]),
                    "lidar2ego": _list(f["ego_from_lidar"][p]),
                    "lidar2sensor": _list(invert_transform(world_from_sweep) @ world_from_lidar),
                },
                "ego2global": _list(f["world_from_sweep_ego"][p]),
                "timestamp": int(f["sweep_timestamp_us"][p]) / 1e6,
                "sample_data_token": str(f["sweep_token"][p]),
            })
        entries.append({
            "token": str(f["frame_token"][i]),
            "sample_token": str(f["sample_token"][i]),
            "scene_name": frames.attrs["scene"],
            "is_key_frame": bool(f["is_keyframe"][i]),
            "timestamp": int(f["timestamp_us"][i]) / 1e6,
            "ego2global": _list(f["world_from_sweep_ego"][s]),
            "lidar_points": {
                "num_pts_feats": 5,
                "lidar_path": str(f["sweep_path"][s]),
                "lidar2ego": _list(f["ego_from_lidar"][s]),
                "sample_data_token": str(f["sweep_token"][s]),
                "timestamp": int(f["sweep_timestamp_us"][s]) / 1e6,
            },
            "lidar_sweeps": sweeps,
            "images": images,
            "instances": _export_instances(f, i, lidar_from_world),
        })
    return entries


def _export_instances(f: dict, i: int, lidar_from_world: np.ndarray) -> list[dict]:
    valid = np.flatnonzero(f["box_valid"][i])
    center = f["box_center"][i, valid] @ lidar_from_world[:3, :3].T + lidar_from_world[:3, 3]  # [N, 3]
    rotation = lidar_from_world[:3, :3] @ quaternion_to_matrix(f["box_rotation"][i, valid])  # [N, 3, 3]
    yaw = np.arctan2(rotation[:, 1, 0], rotation[:, 0, 0])
    velocity = f["box_velocity"][i, valid].astype(np.float64) @ lidar_from_world[:3, :3].T  # [N, 3]
    w, l, h = f["box_size"][i, valid].astype(np.float64).T
    out = []
    for n, b in enumerate(valid):
        label = int(f["box_class"][b])
        out.append({
            "bbox_3d": [*center[n].tolist(), float(l[n]), float(w[n]), float(h[n]), float(yaw[n])],
            "bbox_label": label,
            "bbox_label_3d": label,
            "bbox_3d_isvalid": True,
            "velocity": velocity[n, :2].tolist(),
            "num_lidar_pts": -1,
            "num_radar_pts": -1,
            "instance_token": str(f["box_instance_token"][b]),
            "category_name": str(f["box_category"][b]),
            "rotation_global": f["box_rotation"][i, b].tolist(),
            "velocity_global": f["box_velocity"][i, b].astype(np.float64).tolist(),
        })
    return out


def export_infos(frames_list, path) -> Path:
    """Write frames datasets (one per scene) as one mmdet3d v1.1 info pkl."""
    frames_list = list(frames_list)
    data_list = [entry for frames in frames_list for entry in export_entries(frames)]
    for index, entry in enumerate(data_list):
        entry["sample_idx"] = index
    version = frames_list[0].attrs.get("version", "") if frames_list else ""
    payload = {
        "metainfo": {
            "categories": {name: i for i, name in enumerate(DETECTION_CLASS_NAMES)},
            "dataset": "nuscenes",
            "version": version,
            "info_version": INFO_VERSION,
        },
        "data_list": data_list,
    }
    with atomic_file(path) as tmp, open(tmp, "wb") as handle:
        pickle.dump(payload, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return Path(path)
