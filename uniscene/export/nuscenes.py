"""nuScenes-format export: a chain's generated sensor data as a new version that nuscenes-devkit loads.

`export_nuscenes(out, scenes, chain)` writes the folder `out` atomically as a nuScenes dataroot holding
one version, `v1.0-uniscene-<chain>/` (the 13 tables), and the files its sample_data name:
`samples/<channel>/` (keyframes) and `sweeps/<channel>/` (the other frames), named
`<scene>__<channel>__<timestamp_us>.jpg` for the cameras (from a video store) and `.pcd.bin` for
LIDAR_TOP (from a lidar store: 5 float32 per point, x y z in the sensor frame, intensity, ring), and
`export.json` (provenance). Load it with `NuScenes("v1.0-uniscene-<chain>", out)`.

What is kept from the source dataset (the one frames.zarr was read from) and what is new:
- every exported frame (a frame of the lidar store: a 12 Hz CAM_FRONT capture of frames.zarr) is one
  capture of every exported sensor at the frame's time, with the frame's ego pose. The frames of the
  source's 2 Hz samples are the samples (keyframes); every other frame is a sweep of the next sample
  (of the last one after it), as nuScenes assigns sweeps;
- scene, sample, instance and log tokens are the source's, so the Occ3D and info exports of the same
  stores (which name samples by token) match this version; sample_data, ego_pose and
  sample_annotation tokens are new (hashes of the version, scene, channel and time);
- the sensor, category, attribute and visibility tables are the source's; calibrated_sensor records
  too where the exported sensor matches the source capture's (a camera whose video has the source's
  image size; the LIDAR_TOP mount), else new ones (a camera's intrinsics scaled to the video's size);
- log and map: the source's records of the exported scenes' logs, and copies of the map files they
  name (`maps/<token>.png`, which nuscenes-devkit opens at load) and of the locations' map expansion
  (`maps/expansion/<location>.json`, for NuScenesMap) where the source has it;
- sample_annotation: each sample's boxes from layout.zarr where given (the boxes a generated chain was
  conditioned on, edits included) or else frames.zarr; visibility and attributes copied from the
  source's annotation of the same instance and sample (where there is none: the highest visibility
  level, no attributes); `num_lidar_pts` counts the exported LiDAR's points inside the box and
  `num_radar_pts` is 0 (no radar is generated).
Without a video store the version has no camera sample_data (the sensor table still lists the cameras).

`exported_frames` describes one scene of the version as a frames dataset (the frames.zarr layout, one
sweep per frame, paths relative to `out`): the tables here and the info files of
uniscene/export/infos.py are both written from it.

Letters: T exported frames, V exported cameras, B instance slots, N points.
"""

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from uniscene.classes import DETECTION_CLASS_CATEGORY, DETECTION_CLASS_NAMES, detection_class_of, occ_class_of
from uniscene.errors import UserError
from uniscene.geometry import matrix_to_quaternion, quaternion_to_matrix
from uniscene.sensors import CAMERA_NAMES, LIDAR_NAME
from uniscene.store import atomic_directory, open_store, provenance, write_json_atomic

VERSION_PREFIX = "v1.0-uniscene-"
COPIED_TABLES = ("sensor", "category", "attribute", "visibility")  # the source's, whole
MATCH_TOLERANCE = 1e-6  # a calibration equal to the source's within this (m, quaternion, px) reuses its record


def version_name(chain: str) -> str:
    """The version folder of a chain's export: `v1.0-uniscene-<chain>` (`edits/x` -> `edits-x`)."""
    return VERSION_PREFIX + chain.strip("/").replace("/", "-")


def make_token(*parts) -> str:
    """32 hex digits hashed from `parts`: the same export writes the same tokens."""
    return hashlib.md5("/".join(str(p) for p in parts).encode()).hexdigest()


def file_name(scene: str, channel: str, timestamp_us: int, keyframe: bool) -> str:
    """The file of one capture, relative to the export root, as nuScenes names them."""
    extension = "pcd.bin" if channel == LIDAR_NAME else "jpg"
    return f"{'samples' if keyframe else 'sweeps'}/{channel}/{scene}__{channel}__{int(timestamp_us)}.{extension}"


@dataclass
class SceneStores:
    """The stores one scene's export reads: frames.zarr and lidar.zarr, optionally video.zarr and layout.zarr."""

    frames: xr.Dataset  # loaded
    lidar: xr.Dataset  # lazy: points are read frame by frame
    video: xr.Dataset | None = None  # lazy
    layout: xr.Dataset | None = None
    paths: dict = field(default_factory=dict)  # kind -> path

    @property
    def scene(self) -> str:
        return str(self.frames.attrs["scene"])


def open_scene(frames, lidar, video=None, layout=None) -> SceneStores:
    """Open one scene's stores (each checked: stage, completeness) and check that they belong to one scene."""
    stores = SceneStores(
        frames=open_store(frames, "frames").load(),
        lidar=open_store(lidar, "lidar"),
        video=open_store(video, "video") if video else None,
        layout=open_store(layout, "layout") if layout else None,
        paths={kind: str(path) for kind, path in (("frames", frames), ("lidar", lidar), ("video", video), ("layout", layout)) if path},
    )
    for kind in ("lidar", "video", "layout"):
        dataset = getattr(stores, kind)
        if dataset is not None and str(dataset.attrs.get("scene")) != stores.scene:
            raise UserError(f"{kind} store {stores.paths[kind]} is of scene '{dataset.attrs.get('scene')}', frames store "
                            f"{stores.paths['frames']} of '{stores.scene}': pass the stores of one scene in the same order")
    return stores


def _rows(times_us: np.ndarray, frame_times_us: np.ndarray, what: str) -> np.ndarray:
    """[T] rows of frames.zarr at `times_us` (UserError naming `what` where a time is not a frame's)."""
    rows = np.searchsorted(frame_times_us, times_us)
    rows = np.minimum(rows, len(frame_times_us) - 1)
    bad = frame_times_us[rows] != times_us
    if np.any(bad):
        raise UserError(f"{what} has a frame at {int(times_us[np.argmax(bad)])} us that frames.zarr lacks: it was made from "
                        f"other frames; rerun the stage that writes it")
    return rows


def _velocity(center: np.ndarray, valid: np.ndarray, t_us: np.ndarray) -> np.ndarray:
    """[T, B, 3] world velocity (m/s) from centres [T, B, 3]: the mean of the finite differences to each valid neighbour."""
    center = np.asarray(center, dtype=np.float64)
    out = np.zeros_like(center)
    if len(t_us) < 2:
        return out
    dt = np.diff(t_us).astype(np.float64) * 1e-6  # [T - 1]
    both = valid[:-1] & valid[1:]  # [T - 1, B]
    step = np.where(both[..., None], (center[1:] - center[:-1]) / dt[:, None, None], 0.0)
    count = np.zeros(valid.shape)
    out[:-1] += step
    out[1:] += step
    count[:-1] += both
    count[1:] += both
    return out / np.maximum(count, 1)[..., None]


def _boxes(stores: SceneStores, rows: np.ndarray, t_us: np.ndarray) -> dict:
    """The box variables of the exported frames: from layout.zarr where given, else frames.zarr."""
    frames = stores.frames
    if stores.layout is None:
        out = {name: frames[name].values[rows] for name in ("box_center", "box_size", "box_rotation", "box_velocity", "box_valid")}
        out.update({name: frames[name].values for name in ("box_instance_token", "box_category", "box_class", "box_occ_class")})
        return out
    layout = stores.layout
    layout_rows = _rows(t_us, layout["timestamp_us"].values, f"layout store {stores.paths['layout']}")
    tokens = layout["box_instance_token"].values.astype(object)
    klass = layout["box_class"].values[layout_rows].astype(np.int64)  # [T, B]
    valid = layout["box_valid"].values[layout_rows] & (klass >= 0)
    keep = valid.any(0)  # instances drawn in some exported frame
    klass, valid, tokens = klass[:, keep], valid[:, keep], tokens[keep]
    # one class per instance (an edit may re-class a range): the commonest of its drawn frames
    per_box = np.array([np.bincount(klass[valid[:, b], b], minlength=len(DETECTION_CLASS_NAMES)).argmax()
                        for b in range(len(tokens))], dtype=np.int8)
    frame_category = dict(zip(frames["box_instance_token"].values.astype(object), frames["box_category"].values.astype(object)))
    categories = []
    for token, c in zip(tokens, per_box):
        source = frame_category.get(token)
        categories.append(source if source is not None and detection_class_of(source) == c else DETECTION_CLASS_CATEGORY[DETECTION_CLASS_NAMES[c]])
    center = layout["box_center"].values[layout_rows][:, keep]
    return {
        "box_center": center, "box_size": layout["box_size"].values[layout_rows][:, keep],
        "box_rotation": layout["box_rotation"].values[layout_rows][:, keep],
        "box_velocity": _velocity(center, valid, t_us).astype(np.float32), "box_valid": valid,
        "box_instance_token": tokens, "box_category": np.array(categories, dtype=object), "box_class": per_box,
        "box_occ_class": np.array([occ_class_of(c) for c in categories], dtype=np.uint8),
    }


def video_cameras(stores: SceneStores) -> tuple:
    """The cameras of the video store (its `camera_names` attribute), checked against frames.zarr's."""
    if stores.video is None:
        return ()
    count = stores.video.sizes["cam"]
    names = tuple(stores.video.attrs.get("camera_names") or (CAMERA_NAMES if count == len(CAMERA_NAMES) else ()))
    if len(names) != count:
        raise UserError(f"video store {stores.paths['video']} has {count} cameras and camera_names {list(names)}: it must name "
                        f"each camera of its cam dim; rerun the video stage")
    known = tuple(stores.frames.attrs.get("camera_names") or CAMERA_NAMES)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UserError(f"video store {stores.paths['video']} has cameras {unknown} that frames store {stores.paths['frames']} "
                        f"lacks ({list(known)}): pass the video of this scene")
    return names


def exported_frames(stores: SceneStores, version: str) -> xr.Dataset:
    """One scene of the export as a frames dataset (frames.zarr's variables): one sweep per exported frame.

    The frames are the lidar store's; a video store must hold the same frames. Paths are relative to the
    export root; `version` names the version folder (attribute `version`).
    """
    from uniscene.render.cameras import scale_intrinsics

    frames, lidar, scene = stores.frames, stores.lidar, stores.scene
    t_us = lidar["timestamp_us"].values.astype(np.int64)  # [T]
    if len(t_us) == 0:
        raise UserError(f"lidar store {stores.paths['lidar']} holds no frames: rerun the lidar stage")
    rows = _rows(t_us, frames["timestamp_us"].values, f"lidar store {stores.paths['lidar']}")
    if stores.video is not None and not np.array_equal(stores.video["timestamp_us"].values, t_us):
        raise UserError(f"video store {stores.paths['video']} holds other frames ({stores.video.sizes['frame']}) than lidar store "
                        f"{stores.paths['lidar']} ({len(t_us)}): export a video and a LiDAR generated from the same frames")
    keyframe = frames["is_keyframe"].values[rows]  # [T]
    if not keyframe.any():
        raise UserError(f"lidar store {stores.paths['lidar']} holds no keyframe (2 Hz sample) of scene '{scene}': a nuScenes scene "
                        f"needs at least one sample; export frames that include a keyframe")
    key_rows = np.flatnonzero(keyframe)
    sample_of = key_rows[np.minimum(np.searchsorted(key_rows, np.arange(len(t_us))), len(key_rows) - 1)]  # the next sample's frame
    sample_token = frames["sample_token"].values.astype(object)[rows][sample_of]
    world_from_ego = frames["world_from_ego"].values[rows]  # [T, 4, 4]

    cameras = video_cameras(stores)
    known = list(frames.attrs.get("camera_names") or CAMERA_NAMES)
    cam_index = np.array([known.index(name) for name in cameras], dtype=np.int64)  # [V]
    size_hw = (stores.video.sizes["h"], stores.video.sizes["w"]) if stores.video is not None else (0, 0)
    intrinsics = scale_intrinsics(frames["cam_intrinsics"].values[rows][:, cam_index], frames["cam_image_size"].values[cam_index], size_hw)

    def paths_and_tokens(channel):
        paths = np.array([file_name(scene, channel, t, k) for t, k in zip(t_us, keyframe)], dtype=object)
        return paths, np.array([make_token(version, scene, channel, int(t)) for t in t_us], dtype=object)

    lidar_path, lidar_token = paths_and_tokens(LIDAR_NAME)
    cam = [paths_and_tokens(name) for name in cameras]
    cam_path = np.stack([p for p, _ in cam], 1) if cameras else np.zeros((len(t_us), 0), dtype=object)  # [T, V]
    cam_token = np.stack([k for _, k in cam], 1) if cameras else np.zeros((len(t_us), 0), dtype=object)
    boxes = _boxes(stores, rows, t_us)
    frame_token = cam_token[:, cameras.index("CAM_FRONT")] if "CAM_FRONT" in cameras else lidar_token
    data = {
        "timestamp_us": ("frame", t_us), "is_keyframe": ("frame", keyframe), "sample_token": ("frame", sample_token.astype(object)),
        "frame_token": ("frame", frame_token),
        "world_from_ego": (("frame", "row", "col"), world_from_ego),
        "cam_image_path": (("frame", "cam"), cam_path),
        "cam_timestamp_us": (("frame", "cam"), np.repeat(t_us[:, None], len(cameras), 1)),
        "cam_sample_data_token": (("frame", "cam"), cam_token),
        "cam_intrinsics": (("frame", "cam", "k_row", "k_col"), intrinsics),
        "cam_image_size": (("cam", "hw"), np.tile(np.array(size_hw, dtype=np.int64), (len(cameras), 1))),
        "ego_from_cam": (("frame", "cam", "row", "col"), frames["ego_from_cam"].values[rows][:, cam_index]),
        "lidar_sweep_index": ("frame", np.arange(len(t_us), dtype=np.int64)),
        "sweep_path": ("sweep", lidar_path), "sweep_token": ("sweep", lidar_token),
        "sweep_timestamp_us": ("sweep", t_us), "sweep_is_keyframe": ("sweep", keyframe),
        "sweep_lidarseg_path": ("sweep", np.full(len(t_us), "", dtype=object)),
        "world_from_sweep_ego": (("sweep", "row", "col"), world_from_ego),
        "ego_from_lidar": (("sweep", "row", "col"), lidar["ego_from_sensor"].values),
    }
    for name in ("box_center", "box_size", "box_rotation", "box_velocity", "box_valid"):
        dims = ("box",) if boxes[name].ndim == 2 else ("box", "quat" if name == "box_rotation" else "xyz")
        data[name] = (("frame", *dims), boxes[name])
        data[f"sweep_{name}"] = (("sweep", *dims), boxes[name])
    for name in ("box_instance_token", "box_category", "box_class", "box_occ_class"):
        data[name] = ("box", boxes[name])
    attrs = {"scene": scene, "dataroot": "", "version": version, "camera_names": list(cameras),
             "source_dataroot": frames.attrs["dataroot"], "source_version": frames.attrs["version"]}
    if "location" in frames.attrs:
        attrs["location"] = frames.attrs["location"]
    return xr.Dataset(data, attrs=attrs)


# --------------------------------------------------------------------------------------------- tables


class _Calibrations:
    """calibrated_sensor records: the source's where the exported sensor matches it, else new ones (deduplicated)."""

    def __init__(self, nusc, version: str):
        self.nusc, self.version = nusc, version
        self.sensor_token = {record["channel"]: record["token"] for record in nusc.sensor}
        self.records = {}  # token -> record, in first-use order

    def token(self, channel: str, ego_from_sensor: np.ndarray, intrinsics: np.ndarray | None, source_sample_data: str) -> str:
        if channel not in self.sensor_token:
            raise UserError(f"the source dataset's sensor table ({Path(self.nusc.table_root) / 'sensor.json'}) has no {channel}: "
                            f"export from the dataset the frames were read from")
        translation = ego_from_sensor[:3, 3]
        rotation = matrix_to_quaternion(ego_from_sensor[:3, :3])
        camera = [] if intrinsics is None else np.asarray(intrinsics, dtype=np.float64).tolist()
        if source_sample_data:
            try:
                source = self.nusc.get("calibrated_sensor", self.nusc.get("sample_data", source_sample_data)["calibrated_sensor_token"])
            except KeyError:
                source = None
            if source is not None and self._matches(source, translation, rotation, camera):
                self.records.setdefault(source["token"], {k: source[k] for k in
                                                          ("token", "sensor_token", "translation", "rotation", "camera_intrinsic")})
                return source["token"]
        values = np.round(np.concatenate([translation, rotation, np.ravel(camera)]), 6).tolist()
        token = make_token(self.version, "calibrated_sensor", channel, json.dumps(values))
        self.records.setdefault(token, {"token": token, "sensor_token": self.sensor_token[channel], "translation": translation.tolist(),
                                        "rotation": rotation.tolist(), "camera_intrinsic": camera})
        return token

    @staticmethod
    def _matches(record: dict, translation, rotation, camera) -> bool:
        if np.asarray(record["camera_intrinsic"]).shape != np.asarray(camera).shape:
            return False
        return (np.allclose(record["translation"], translation, atol=MATCH_TOLERANCE)
                and abs(abs(float(np.dot(record["rotation"], rotation))) - 1) < MATCH_TOLERANCE
                and np.allclose(record["camera_intrinsic"], camera, atol=MATCH_TOLERANCE))


def points_in_boxes(points: np.ndarray, center: np.ndarray, size_wlh: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """[B] count of points [N, 3] inside each box (centre [B, 3], size (w, l, h) [B, 3], rotation (w, x, y, z) [B, 4]; one frame).

    A nuScenes box's length lies along its x axis, its width along y.
    """
    counts = np.zeros(len(center), dtype=np.int64)
    half = np.asarray(size_wlh, dtype=np.float64)[:, [1, 0, 2]] / 2  # [B, 3] half extents along the box's x, y, z
    box_from_world = np.swapaxes(quaternion_to_matrix(rotation), -1, -2)  # [B, 3, 3]
    for b in range(len(center)):
        local = (points - center[b]) @ box_from_world[b].T  # [N, 3]
        counts[b] = int(np.all(np.abs(local) <= half[b], axis=1).sum())
    return counts


def _chain(records: list) -> list:
    """Link records (in time order) through prev / next."""
    for before, after in zip(records[:-1], records[1:]):
        before["next"], after["prev"] = after["token"], before["token"]
    return records


def _source_annotations(nusc, sample_token: str) -> dict:
    """{instance token: sample_annotation record} of a source sample (empty where the sample is not the source's)."""
    try:
        sample = nusc.get("sample", sample_token)
    except KeyError:
        return {}
    return {record["instance_token"]: record for record in (nusc.get("sample_annotation", a) for a in sample["anns"])}


def scene_tables(nusc, stores: SceneStores, exported: xr.Dataset, calibrations: _Calibrations) -> dict:
    """The records of one scene in each table it adds to (scene, sample, sample_data, ego_pose, instance, sample_annotation)."""
    from uniscene.data.reader import scene_record

    version, scene_name = exported.attrs["version"], stores.scene
    source_scene = scene_record(nusc, scene_name)
    f = {name: exported[name].values for name in exported.variables}
    t_us, keyframe = f["timestamp_us"], f["is_keyframe"]
    key = np.flatnonzero(keyframe)

    # 1. samples: the keyframes, in time order
    samples = _chain([{"token": str(f["sample_token"][t]), "timestamp": int(t_us[t]), "prev": "", "next": "",
                       "scene_token": source_scene["token"]} for t in key])
    scene = {"token": source_scene["token"], "log_token": source_scene["log_token"], "nbr_samples": len(samples),
             "first_sample_token": samples[0]["token"], "last_sample_token": samples[-1]["token"], "name": scene_name,
             "description": f"uniscene {version} of {source_scene['name']}: {source_scene.get('description', '')}"}

    # 2. sample_data and ego poses: per channel, one capture per frame at the frame's time and ego pose
    sample_data, ego_pose = [], []
    ego_rotation = matrix_to_quaternion(f["world_from_ego"][:, :3, :3])  # [T, 4]
    source_lidar = stores.frames["sweep_token"].values.astype(object)[stores.frames["lidar_sweep_index"].values]  # [frames]
    rows = np.searchsorted(stores.frames["timestamp_us"].values, t_us)
    cameras = list(exported.attrs["camera_names"])
    known = list(stores.frames.attrs.get("camera_names") or CAMERA_NAMES)
    channels = [(LIDAR_NAME, None)] + [(name, v) for v, name in enumerate(cameras)]
    for channel, v in channels:
        records = []
        for t in range(len(t_us)):
            if v is None:
                token, filename = f["sweep_token"][t], f["sweep_path"][t]
                calibrated = calibrations.token(channel, f["ego_from_lidar"][t], None, source_lidar[rows[t]])
                height = width = 0
            else:
                token, filename = f["cam_sample_data_token"][t, v], f["cam_image_path"][t, v]
                source = str(stores.frames["cam_sample_data_token"].values[rows[t], known.index(channel)])
                calibrated = calibrations.token(channel, f["ego_from_cam"][t, v], f["cam_intrinsics"][t, v], source)
                height, width = (int(n) for n in f["cam_image_size"][v])
            pose = make_token(version, "ego_pose", token)
            ego_pose.append({"token": pose, "timestamp": int(t_us[t]), "rotation": ego_rotation[t].tolist(),
                             "translation": f["world_from_ego"][t, :3, 3].tolist()})
            records.append({"token": str(token), "sample_token": str(f["sample_token"][t]), "ego_pose_token": pose,
                            "calibrated_sensor_token": calibrated, "timestamp": int(t_us[t]),
                            "fileformat": "pcd" if v is None else "jpg", "is_key_frame": bool(keyframe[t]),
                            "height": height, "width": width, "filename": str(filename), "prev": "", "next": ""})
        sample_data += _chain(records)

    # 3. annotations: the boxes of every sample, chained per instance
    visibilities = sorted(nusc.visibility, key=lambda r: str(r["level"]))
    top_visibility = visibilities[-1]["token"] if visibilities else ""
    category_token = {record["name"]: record["token"] for record in nusc.category}
    lidar = stores.lidar
    offsets = lidar["frame_offsets"].values
    per_instance = {}
    annotations = []
    for t in key:
        valid = np.flatnonzero(f["box_valid"][t])
        points = lidar["points"][offsets[t]:offsets[t + 1]].values[:, :3].astype(np.float64)  # [N, 3] sensor frame
        world_from_sensor = f["world_from_ego"][t] @ f["ego_from_lidar"][t]
        points = points @ world_from_sensor[:3, :3].T + world_from_sensor[:3, 3]
        counts = points_in_boxes(points, f["box_center"][t, valid], f["box_size"][t, valid], f["box_rotation"][t, valid])
        source = _source_annotations(nusc, str(f["sample_token"][t]))
        for n, b in enumerate(valid):
            instance = str(f["box_instance_token"][b])
            record = source.get(instance, {})
            annotation = {
                "token": make_token(version, "sample_annotation", f["sample_token"][t], instance),
                "sample_token": str(f["sample_token"][t]), "instance_token": instance,
                "visibility_token": record.get("visibility_token", top_visibility),
                "attribute_tokens": list(record.get("attribute_tokens", [])),
                "translation": f["box_center"][t, b].tolist(), "size": f["box_size"][t, b].astype(np.float64).tolist(),
                "rotation": f["box_rotation"][t, b].tolist(), "prev": "", "next": "",
                "num_lidar_pts": int(counts[n]), "num_radar_pts": 0,
            }
            annotations.append(annotation)
            per_instance.setdefault(instance, []).append(annotation)
    instances = []
    for b, token in enumerate(f["box_instance_token"]):
        chain = _chain(per_instance.get(str(token), []))
        if not chain:
            continue  # drawn at no sample: nuScenes has no instance without annotations
        category = str(f["box_category"][b])
        if category not in category_token:
            raise UserError(f"category '{category}' of instance '{token}' is not in the source's category table "
                            f"({Path(nusc.table_root) / 'category.json'}): export from the dataset the frames were read from")
        instances.append({"token": str(token), "category_token": category_token[category], "nbr_annotations": len(chain),
                          "first_annotation_token": chain[0]["token"], "last_annotation_token": chain[-1]["token"]})
    return {"scene": [scene], "sample": samples, "sample_data": sample_data, "ego_pose": ego_pose,
            "instance": instances, "sample_annotation": annotations}


def source_dataset(scenes: list):
    """The devkit's NuScenes of the dataset the scenes' frames were read from (one for all, else UserError)."""
    from uniscene.data.reader import open_dataset

    sources = {(s.frames.attrs["dataroot"], s.frames.attrs["version"]) for s in scenes}
    if len(sources) != 1:
        raise UserError(f"the frames stores come from {len(sources)} datasets ({sorted(sources)}): export the scenes of one dataset together")
    dataroot, version = sources.pop()
    return open_dataset(dataroot, version)


def version_tables(nusc, scenes: list, exported: list) -> dict:
    """Every table of the version (name -> records)."""
    calibrations = _Calibrations(nusc, exported[0].attrs["version"])
    tables = {name: [] for name in ("scene", "sample", "sample_data", "ego_pose", "instance", "sample_annotation")}
    seen = set()
    for stores, frames in zip(scenes, exported):
        if stores.scene in seen:
            raise UserError(f"scene '{stores.scene}' is given twice: pass each scene's stores once")
        seen.add(stores.scene)
        for name, records in scene_tables(nusc, stores, frames, calibrations).items():
            tables[name] += records
    tables["calibrated_sensor"] = list(calibrations.records.values())
    for name in COPIED_TABLES:
        tables[name] = [dict(record) for record in getattr(nusc, name)]
    logs = {scene["log_token"] for scene in tables["scene"]}
    tables["log"] = [{k: v for k, v in record.items() if k != "map_token"}  # map_token: the devkit's, added at load
                     for record in nusc.log if record["token"] in logs]
    tables["map"] = [{"token": record["token"], "log_tokens": [t for t in record["log_tokens"] if t in logs],  # not the devkit's `mask`
                      "category": record["category"], "filename": record["filename"]}
                     for record in nusc.map if set(record["log_tokens"]) & logs]
    if not tables["map"]:
        raise UserError(f"the source's map table ({Path(nusc.table_root) / 'map.json'}) names none of the exported logs: "
                        f"nuscenes-devkit needs one map record per log; fix the source's map.json")
    return tables


def write_files(root: Path, stores: SceneStores, exported: xr.Dataset, jpeg_quality: int) -> dict:
    """The scene's `.pcd.bin` and JPEG files under `root`; returns {"lidar": count, "camera": count}."""
    from PIL import Image

    from uniscene.data.files import write_sweep

    offsets = stores.lidar["frame_offsets"].values
    sweep_path = exported["sweep_path"].values
    for t in range(exported.sizes["frame"]):
        write_sweep(root / sweep_path[t], stores.lidar["points"][offsets[t]:offsets[t + 1]].values)
    cam_path = exported["cam_image_path"].values  # [T, V]
    for t in range(exported.sizes["frame"] if stores.video is not None else 0):
        rgb = stores.video["rgb"][t].values  # [V, H, W, 3]
        for v in range(cam_path.shape[1]):
            path = root / cam_path[t, v]
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb[v]).save(path, format="JPEG", quality=int(jpeg_quality))
    return {"lidar": len(sweep_path), "camera": int(cam_path.size) if stores.video is not None else 0}


def copy_maps(nusc, tables: dict, root: Path) -> int:
    """Copy the map files of the version's map and log records from the source into `root`; returns the count.

    Copies, not links: the atomic write sets the modes of what it writes, which must not touch the source's files.
    """
    source = Path(nusc.dataroot)
    names = [record["filename"] for record in tables["map"]]
    names += [f"maps/expansion/{location}.json" for location in sorted({record["location"] for record in tables["log"]})
              if (source / "maps" / "expansion" / f"{location}.json").is_file()]
    for name in names:
        if not (source / name).is_file():
            raise UserError(f"map file {source / name} (named by {Path(nusc.table_root) / 'map.json'}) is missing: nuscenes-devkit "
                            f"opens it at load; restore the source's maps/ folder")
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, root / name)
    return len(names)


def export_nuscenes(out, scenes: list, chain: str, *, jpeg_quality: int, config_subset: dict | None = None) -> dict:
    """Write the scenes (SceneStores each) as the nuScenes version of `chain` into the folder `out`, atomically.

    Returns a summary: version, scenes, samples, sample_data per channel, whether cameras were written.
    """
    if not scenes:
        raise UserError("no scene to export: pass the stores of at least one scene")
    version = version_name(chain)
    cameras = {s.video is not None for s in scenes}
    if len(cameras) != 1:
        raise UserError("a video store was given for some scenes and not others: pass one per scene (--video) or none")
    exported = [exported_frames(s, version) for s in scenes]
    nusc = source_dataset(scenes)
    tables = version_tables(nusc, scenes, exported)
    inputs = [path for s in scenes for path in s.paths.values()]
    with atomic_directory(out) as tmp:
        files = [write_files(tmp, s, frames, jpeg_quality) for s, frames in zip(scenes, exported)]
        maps = copy_maps(nusc, tables, tmp)
        (tmp / version).mkdir()
        for name, records in tables.items():
            (tmp / version / f"{name}.json").write_text(json.dumps(records, indent=0) + "\n")
        summary = {
            "format": "nuscenes", "version": version, "chain": chain, "scenes": [s.scene for s in scenes],
            "samples": len(tables["sample"]), "sample_annotations": len(tables["sample_annotation"]),
            "lidar_files": sum(f["lidar"] for f in files), "camera_files": sum(f["camera"] for f in files),
            "cameras": bool(cameras.pop()), "map_files": maps, "source": {"dataroot": str(nusc.dataroot), "version": nusc.version},
        }
        write_json_atomic(tmp / "export.json", {**summary, "provenance": provenance("export_nuscenes", config_subset or {}, inputs)})
    return summary
