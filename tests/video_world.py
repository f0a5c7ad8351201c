"""A small world for the video tests: scenes written as frames.zarr, render.zarr and layout.zarr with camera JPEGs.

Every camera looks at the same kind of street: sky (render background) above the horizon, road below
it, and one car box driving round the ego car, so that it crosses from camera to camera. The maps
are what the renderer would give; the JPEGs paint each class in its colour (the road darkening with
depth), so that images follow from the maps and a model can learn the one from the other.
"""

import numpy as np
import xarray as xr
from PIL import Image

from store_examples import complete
from uniscene.classes import OCC_CLASS_ID, RENDER_BACKGROUND
from uniscene.geometry import make_transform, yaw_to_quaternion
from uniscene.sensors import CAMERA_NAMES
from uniscene.store import write_store

SIZE_HW = (24, 40)  # the JPEGs and the renders
CAMERA_YAWS = np.deg2rad([0, -60, -120, 180, 120, 60])  # CAMERA_NAMES order: front, then clockwise round the car
SKY, ROAD, CAR = (70, 130, 220), (90, 90, 90), (220, 40, 40)


def cameras(frames: int) -> tuple:
    """(ego_from_cam [T, V, 4, 4], K [T, V, 3, 3] at SIZE_HW): six cameras 1.5 m up, OpenCV axes, 60 deg apart."""
    height, width = SIZE_HW
    k = np.array([[width / 2 / np.tan(np.deg2rad(35)), 0, width / 2], [0, width / 2 / np.tan(np.deg2rad(35)), height / 2], [0, 0, 1]])
    ego_from_optical = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float)  # OpenCV z forward -> ego x
    poses = []
    for yaw in CAMERA_YAWS:
        rotation = make_transform(yaw_to_quaternion(yaw), np.zeros(3))[:3, :3] @ ego_from_optical
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = rotation, (0.0, 0.0, 1.5)
        poses.append(pose)
    return np.tile(np.stack(poses), (frames, 1, 1, 1)), np.tile(k, (frames, len(CAMERA_NAMES), 1, 1))


def write_scene(root, name: str, frames: int, phase: float, with_images: bool = True):
    """Write root/<name>/{frames,render,layout}.zarr and root/data/samples/*.jpg; return the scene folder."""
    height, width = SIZE_HW
    folder = root / name
    timestamp_us = np.arange(frames, dtype=np.int64) * 83_333
    ego_from_cam, intrinsics = cameras(frames)
    world_from_ego = np.tile(np.eye(4), (frames, 1, 1))
    # the car drives round the ego at 8 m: one camera to the next every few frames
    angle = phase + np.arange(frames) * 0.35
    center = np.stack([8 * np.cos(angle), 8 * np.sin(angle), np.full(frames, 0.8)], 1)[:, None]  # [T, 1, 3]
    rotation = yaw_to_quaternion(angle + np.pi / 2)[:, None]
    size = np.broadcast_to(np.array([1.9, 4.5, 1.6], np.float32), (frames, 1, 3)).copy()

    # maps: sky above the horizon, road below with depth from the ground plane, the car where it projects
    rows = (np.arange(height) + 0.5)[:, None].repeat(width, 1)
    ground = rows > height / 2
    ground_depth = np.where(ground, 1.5 * intrinsics[0, 0, 1, 1] / np.maximum(rows - height / 2, 0.5), 0)
    semantic = np.full((frames, 6, height, width), RENDER_BACKGROUND, np.uint8)
    semantic[:, :, ground] = OCC_CLASS_ID["driveable_surface"]
    depth = np.broadcast_to(ground_depth, semantic.shape).astype(np.float16).copy()
    for t in range(frames):
        for v in range(6):
            cam_from_ego = np.linalg.inv(ego_from_cam[t, v])
            p = cam_from_ego[:3, :3] @ center[t, 0] + cam_from_ego[:3, 3]
            if p[2] < 1:
                continue
            u, w = intrinsics[t, v, 0, 0] * p[0] / p[2] + width / 2, intrinsics[t, v, 1, 1] * p[1] / p[2] + height / 2
            half = intrinsics[t, v, 0, 0] * 2.2 / p[2]
            cols = slice(int(max(u - half, 0)), int(max(min(u + half, width), 0)))
            rws = slice(int(max(w - half * 0.7, 0)), int(max(min(w + half * 0.4, height), 0)))
            semantic[t, v, rws, cols] = OCC_CLASS_ID["car"]
            depth[t, v, rws, cols] = p[2]
    alpha = (semantic != RENDER_BACKGROUND).astype(np.float16)

    # the JPEGs: each class in its colour, the road darker with depth
    paths = np.empty((frames, 6), dtype=object)
    (root / "data" / "samples").mkdir(parents=True, exist_ok=True)
    for t in range(frames):
        for v in range(6):
            image = np.zeros((height, width, 3), np.float32)
            image[semantic[t, v] == RENDER_BACKGROUND] = SKY
            shade = np.clip(1.2 - depth[t, v].astype(np.float32) / 30, 0.4, 1.2)[..., None]
            road = semantic[t, v] == OCC_CLASS_ID["driveable_surface"]
            image[road] = (np.array(ROAD) * shade)[road]
            image[semantic[t, v] == OCC_CLASS_ID["car"]] = CAR
            paths[t, v] = f"samples/{name}-{t:03d}-{v}.jpg"
            if with_images:
                Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(root / "data" / paths[t, v], quality=95)

    frames_store = complete(xr.Dataset({
        "timestamp_us": ("frame", timestamp_us),
        "world_from_ego": (("frame", "row", "col"), world_from_ego),
        "cam_image_path": (("frame", "cam"), paths),
        "cam_intrinsics": (("frame", "cam", "k_row", "k_col"), intrinsics),
        "cam_image_size": (("cam", "hw"), np.tile(np.array(SIZE_HW, np.int64), (6, 1))),
        "ego_from_cam": (("frame", "cam", "row", "col"), ego_from_cam),
    }, attrs={"scene": name, "dataroot": str(root / "data"), "version": "v1.0-test", "camera_names": list(CAMERA_NAMES)}), "frames")
    write_store(folder / "frames.zarr", frames_store, stage="frames", config_subset={})
    dims = ("frame", "cam", "h", "w")
    render = xr.Dataset({"semantic": (dims, semantic), "depth": (dims, depth), "alpha": (dims, alpha),
                         "intrinsics": (("frame", "cam", "k_row", "k_col"), intrinsics), "timestamp_us": ("frame", timestamp_us)},
                        attrs={"scene": name, "source": "label", "camera_names": list(CAMERA_NAMES)})
    write_store(folder / "render.zarr", render, stage="render", config_subset={})
    layout = complete(xr.Dataset({
        "timestamp_us": ("frame", timestamp_us),
        "world_from_ego": (("frame", "row", "col"), world_from_ego),
        "box_center": (("frame", "box", "xyz"), center), "box_size": (("frame", "box", "xyz"), size),
        "box_rotation": (("frame", "box", "quat"), rotation), "box_valid": (("frame", "box"), np.ones((frames, 1), bool)),
        "box_class": (("frame", "box"), np.zeros((frames, 1), np.int8)),
        "box_instance_token": (("box",), np.array(["car"], dtype=object)),
    }, attrs={"scene": name, "grid_range_m": [-40.0, -40.0, -1.0, 40.0, 40.0, 5.4], "voxel_size_m": 0.4, "channel_names": []}),
        "layout").drop_vars("layout")
    layout["layout"] = (("frame", "channel", "x", "y"), np.zeros((frames, 18, 200, 200), bool))
    write_store(folder / "layout.zarr", layout, stage="layout", config_subset={})
    return folder
