"""A small hand-made nuScenes-format dataset whose true motion is known, for tests and benchmarks.

`write_handmade_dataset(root, ...)` writes the devkit's tables with their real schema (13 tables,
lidarseg, a map mask), LIDAR_TOP sweeps at 20 Hz, six cameras at 12 Hz (each with its own time
offset, keyframe = the capture nearest the sample), 2 Hz keyframe annotations of instances that
drive on arcs (one enters and one leaves mid-scene), and `truth/<scene>.zarr` with the true ego
poses and boxes at every CAM_FRONT capture (the frames part of the synthetic truth layout).
Everything is a closed-form function of time, so any time can be checked exactly.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import xarray as xr
from PIL import Image

from uniscene.sensors import CAMERA_NAMES, LIDAR_NAME
from uniscene.classes import LIDARSEG_CLASS_NAMES
from uniscene.data.files import write_sweep
from uniscene.geometry import make_transform, matrix_to_quaternion, yaw_to_quaternion
from uniscene.store import write_store

KEYFRAME_PERIOD_US = 500_000
LIDAR_PERIOD_US = 50_000
CAMERA_RATE_HZ = 12
IMAGE_HW = (18, 32)
CAMERA_YAW_DEG = (0.0, -55.0, -110.0, 180.0, 110.0, 55.0)  # order of CAMERA_NAMES
INSTANCE_CATEGORIES = ("vehicle.car", "human.pedestrian.adult", "vehicle.truck", "movable_object.barrier", "vehicle.bicycle")
LOCATION = "singapore-onenorth"


def token(*parts) -> str:
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def ego_pose(t_s: np.ndarray):
    """True ego pose at times [T] (s from the scene start): a left turn at 8 m/s. -> [T, 4, 4]."""
    radius_m, speed_mps = 60.0, 8.0
    angle = speed_mps * t_s / radius_m
    center = np.stack([radius_m * np.sin(angle), radius_m * (1 - np.cos(angle)), np.zeros_like(t_s)], -1)
    return make_transform(yaw_to_quaternion(angle), center + np.array([100.0, 200.0, 0.0]))


def instance_state(i: int, t_s: np.ndarray):
    """True centre [T, 3], yaw [T] and size (w, l, h) of instance i: arcs of different curvature."""
    speed_mps = (6.0, 1.4, 9.0, 0.0, 4.0)[i % 5]
    turn_rps = (0.25, -0.3, 0.12, 0.0, 0.5)[i % 5]
    start = np.array([112.0 + 6 * i, 195.0 + 4 * (i % 3), 0.9])
    yaw0 = 0.3 * i
    yaw = yaw0 + turn_rps * t_s
    if turn_rps:
        dx = speed_mps / turn_rps * (np.sin(yaw) - np.sin(yaw0))
        dy = -speed_mps / turn_rps * (np.cos(yaw) - np.cos(yaw0))
    else:
        dx, dy = speed_mps * t_s * np.cos(yaw0), speed_mps * t_s * np.sin(yaw0)
    center = start + np.stack([dx, dy, np.zeros_like(t_s)], -1)
    size = np.array([(1.9, 4.5, 1.6), (0.6, 0.7, 1.8), (2.5, 8.0, 3.0), (0.5, 2.0, 1.0), (0.6, 1.8, 1.4)][i % 5])
    return center, yaw, size


def instance_exists(i: int, num_instances: int, t_s: np.ndarray, duration_s: float) -> np.ndarray:
    """Instance 1 enters 0.3 s after the second keyframe; the last one leaves 0.2 s after the third-last."""
    exists = np.ones_like(t_s, dtype=bool)
    if i == 1:
        exists &= t_s >= 0.8
    if i == num_instances - 1 and num_instances > 2:
        exists &= t_s <= duration_s - 1.0 + 0.2
    return exists


def write_handmade_dataset(root, *, version: str = "v1.0-hand", num_scenes: int = 1, num_keyframes: int = 6,
                           num_instances: int = 5, with_truth: bool = True) -> Path:
    """Write the dataset under `root` (tables in root/version) and return root."""
    root = Path(root)
    tables = {name: [] for name in (
        "category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
        "scene", "sample", "sample_data", "sample_annotation", "map", "lidarseg")}
    tables["category"] = [
        {"token": token("category", n), "name": n, "description": n, "index": i} for i, n in enumerate(LIDARSEG_CLASS_NAMES)
    ]
    tables["attribute"] = [{"token": token("attribute"), "name": "vehicle.moving", "description": ""}]
    tables["visibility"] = [{"token": "4", "level": "v80-100", "description": "visible"}]
    log_tokens = [token("log", s) for s in range(num_scenes)]
    tables["log"] = [
        {"token": lt, "logfile": f"hand-{s}", "vehicle": "hand", "date_captured": "2020-01-01", "location": LOCATION}
        for s, lt in enumerate(log_tokens)
    ]
    (root / "maps").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 20), 255, np.uint8)).save(root / "maps" / "handmade.png")
    tables["map"] = [{"token": token("map"), "log_tokens": log_tokens, "category": "semantic_prior", "filename": "maps/handmade.png"}]

    channels = CAMERA_NAMES + (LIDAR_NAME,)
    for channel in channels:
        modality = "lidar" if channel == LIDAR_NAME else "camera"
        tables["sensor"].append({"token": token("sensor", channel), "channel": channel, "modality": modality})
    calib = {}
    for v, channel in enumerate(CAMERA_NAMES):
        yaw = np.deg2rad(CAMERA_YAW_DEG[v])
        # ego_from_cam: OpenCV axes (x right, y down, z forward) for a camera looking along `yaw`
        forward = np.array([np.cos(yaw), np.sin(yaw), 0.0])
        right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
        rotation = np.stack([right, [0.0, 0.0, -1.0], forward], axis=1)
        h, w = IMAGE_HW
        calib[channel] = {
            "token": token("calib", channel), "sensor_token": token("sensor", channel),
            "translation": [1.5 * np.cos(yaw), 0.5 * np.sin(yaw), 1.6],
            "rotation": matrix_to_quaternion(rotation).tolist(),
            "camera_intrinsic": [[20.0, 0.0, w / 2], [0.0, 20.0, h / 2], [0.0, 0.0, 1.0]],
        }
    calib[LIDAR_NAME] = {
        "token": token("calib", LIDAR_NAME), "sensor_token": token("sensor", LIDAR_NAME),
        "translation": [0.9, 0.0, 1.8], "rotation": yaw_to_quaternion(-np.pi / 2).tolist(), "camera_intrinsic": [],
    }
    tables["calibrated_sensor"] = list(calib.values())
    for i in range(num_instances):
        category = INSTANCE_CATEGORIES[i % len(INSTANCE_CATEGORIES)]
        tables["instance"].append({"token": token("instance", i), "category_token": token("category", category)})

    for s in range(num_scenes):
        _write_scene(root, tables, s, num_keyframes, num_instances, with_truth, version)

    for inst in tables["instance"]:
        anns = [a for a in tables["sample_annotation"] if a["instance_token"] == inst["token"]]
        inst.update(nbr_annotations=len(anns), first_annotation_token=anns[0]["token"] if anns else "",
                    last_annotation_token=anns[-1]["token"] if anns else "")
    (root / version).mkdir(parents=True, exist_ok=True)
    for name, records in tables.items():
        (root / version / f"{name}.json").write_text(json.dumps(records))
    return root


def _write_scene(root, tables, s, num_keyframes, num_instances, with_truth, version):
    name, scene_token = f"hand-{s:04d}", token("scene", s)
    t0_us = 1_600_000_000_000_000 + s * 100_000_000
    duration_s = (num_keyframes - 1) * KEYFRAME_PERIOD_US * 1e-6
    sample_us = t0_us + KEYFRAME_PERIOD_US * np.arange(num_keyframes)
    sample_tokens = [token("sample", s, k) for k in range(num_keyframes)]
    for k, st in enumerate(sample_tokens):
        tables["sample"].append({
            "token": st, "timestamp": int(sample_us[k]), "scene_token": scene_token,
            "prev": sample_tokens[k - 1] if k else "", "next": sample_tokens[k + 1] if k + 1 < num_keyframes else "",
        })
    tables["scene"].append({
        "token": scene_token, "log_token": token("log", s), "nbr_samples": num_keyframes, "name": name,
        "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1], "description": "hand-made",
    })

    # sensors: LiDAR at 20 Hz from 0.1 s before the first sample; cameras at 12 Hz, each with an offset
    times = {LIDAR_NAME: t0_us + LIDAR_PERIOD_US * np.arange(-2, (num_keyframes - 1) * 10 + 3)}
    for v, channel in enumerate(CAMERA_NAMES):
        offset_us = 10_000 + 7_000 * v
        times[channel] = t0_us - 90_000 + offset_us + np.round(np.arange(0, 6 * (num_keyframes - 1) + 3) * 1e6 / CAMERA_RATE_HZ).astype(np.int64)
    for channel, stamps in times.items():
        key_index = [int(np.argmin(np.abs(stamps - t))) for t in sample_us]
        is_key = np.zeros(len(stamps), dtype=bool)
        is_key[key_index] = True
        next_sample = np.clip(np.searchsorted(sample_us, stamps), 0, num_keyframes - 1)  # a sweep's sample: the next
        next_sample[key_index] = np.arange(num_keyframes)
        sd_tokens = [token("sd", s, channel, j) for j in range(len(stamps))]
        for j, t in enumerate(stamps):
            folder = "samples" if is_key[j] else "sweeps"
            ext = "pcd.bin" if channel == LIDAR_NAME else "jpg"
            filename = f"{folder}/{channel}/{name}__{channel}__{t}.{ext}"
            pose = ego_pose(np.array([(t - t0_us) * 1e-6]))[0]
            tables["ego_pose"].append({
                "token": sd_tokens[j], "timestamp": int(t), "translation": pose[:3, 3].tolist(),
                "rotation": matrix_to_quaternion(pose[:3, :3]).tolist(),
            })
            camera = channel != LIDAR_NAME
            tables["sample_data"].append({
                "token": sd_tokens[j], "sample_token": sample_tokens[next_sample[j]], "ego_pose_token": sd_tokens[j],
                "calibrated_sensor_token": token("calib", channel), "timestamp": int(t), "fileformat": ext.split(".")[-1],
                "is_key_frame": bool(is_key[j]), "height": IMAGE_HW[0] if camera else 0, "width": IMAGE_HW[1] if camera else 0,
                "filename": filename, "prev": sd_tokens[j - 1] if j else "", "next": sd_tokens[j + 1] if j + 1 < len(stamps) else "",
            })
            path = root / filename
            path.parent.mkdir(parents=True, exist_ok=True)
            if camera:
                Image.fromarray(np.zeros(IMAGE_HW + (3,), np.uint8)).save(path)
            else:
                points = np.zeros((8, 5), np.float32)
                points[:, 0] = np.arange(8)
                write_sweep(path, points)
                if is_key[j]:
                    label_file = f"lidarseg/{version}/{sd_tokens[j]}_lidarseg.bin"
                    (root / label_file).parent.mkdir(parents=True, exist_ok=True)
                    np.full(8, 24, np.uint8).tofile(root / label_file)
                    tables["lidarseg"].append({"token": sd_tokens[j], "sample_data_token": sd_tokens[j], "filename": label_file})

    # annotations at the samples where the instance exists
    sample_s = (sample_us - t0_us) * 1e-6
    for i in range(num_instances):
        center, yaw, size = instance_state(i, sample_s)
        exists = instance_exists(i, num_instances, sample_s, duration_s)
        ann_tokens = [token("ann", s, i, k) for k in range(num_keyframes)]
        kept = [k for k in range(num_keyframes) if exists[k]]
        for n, k in enumerate(kept):
            tables["sample_annotation"].append({
                "token": ann_tokens[k], "sample_token": sample_tokens[k], "instance_token": token("instance", i),
                "visibility_token": "4", "attribute_tokens": [], "translation": center[k].tolist(), "size": size.tolist(),
                "rotation": yaw_to_quaternion(yaw[k]).tolist(), "prev": ann_tokens[kept[n - 1]] if n else "",
                "next": ann_tokens[kept[n + 1]] if n + 1 < len(kept) else "", "num_lidar_pts": 5, "num_radar_pts": 0,
            })

    if with_truth:
        frame_s = (times[CAMERA_NAMES[0]] - t0_us) * 1e-6
        states = [instance_state(i, frame_s) for i in range(num_instances)]
        truth = xr.Dataset({
            "timestamp_us": ("frame", times[CAMERA_NAMES[0]]),
            "world_from_ego": (("frame", "row", "col"), ego_pose(frame_s)),
            "box_center": (("frame", "box", "xyz"), np.stack([c for c, _, _ in states], 1)),
            "box_size": (("frame", "box", "xyz"), np.stack([np.broadcast_to(z, c.shape) for c, _, z in states], 1).astype(np.float32)),
            "box_rotation": (("frame", "box", "quat"), np.stack([yaw_to_quaternion(y) for _, y, _ in states], 1)),
            "box_present": (("frame", "box"), np.stack([instance_exists(i, num_instances, frame_s, duration_s) for i in range(num_instances)], 1)),
            "box_instance_token": ("box", np.array([token("instance", i) for i in range(num_instances)], dtype=object)),
            "box_category": ("box", np.array([INSTANCE_CATEGORIES[i % len(INSTANCE_CATEGORIES)] for i in range(num_instances)], dtype=object)),
        })
        write_store(root / "truth" / f"{name}.zarr", truth, stage="synth_truth", config_subset={"handmade": True}, frame_chunk=4096)


_EMPTY_MAP_TABLES = ("drivable_area", "road_segment", "road_block", "lane", "ped_crossing", "walkway", "stop_line",
                "carpark_area", "road_divider", "lane_divider", "traffic_light", "lane_connector")


def write_map_expansion(dataroot: Path, map_name: str, polygons: dict, lines: dict) -> Path:
    """A minimal map expansion JSON (version 1.3) at <dataroot>/maps/expansion/<map_name>.json, from
    {layer: [[(x, y), ...], ...]} polygons and lines; the tables nuscenes-devkit needs are present, empty."""
    tables = {name: [] for name in ("node", "polygon", "line") + _EMPTY_MAP_TABLES}
    tables.update(arcline_path_3={}, connectivity={}, version="1.3", canvas_edge=[3000.0, 3000.0])

    def nodes(coords):
        tokens = []
        for x, y in coords:
            tokens.append(f"node-{len(tables['node'])}")
            tables["node"].append({"token": tokens[-1], "x": float(x), "y": float(y)})
        return tokens

    for layer, shapes in polygons.items():
        for coords in shapes:
            polygon = f"polygon-{len(tables['polygon'])}"
            tables["polygon"].append({"token": polygon, "exterior_node_tokens": nodes(coords), "holes": []})
            record = {"token": f"{layer}-{len(tables[layer])}"}
            if layer == "drivable_area":
                record["polygon_tokens"] = [polygon]
            else:
                record["polygon_token"] = polygon
            if layer == "stop_line":
                record.update(stop_line_type="STOP_SIGN", ped_crossing_tokens=[], traffic_light_tokens=[])
            tables[layer].append(record)
    for layer, shapes in lines.items():
        for coords in shapes:
            line = f"line-{len(tables['line'])}"
            tables["line"].append({"token": line, "node_tokens": nodes(coords)})
            tables[layer].append({"token": f"{layer}-{len(tables[layer])}", "line_token": line})
    path = dataroot / "maps" / "expansion" / f"{map_name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tables))
    return path
