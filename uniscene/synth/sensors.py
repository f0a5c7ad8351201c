"""Sensor models of the synthetic car: the LIDAR_TOP firing pattern and the six pinhole cameras.

The LiDAR's mount and beams are in `uniscene.sensors`. Cameras follow nuScenes' car (values
rounded from its calibrated_sensor table) with OpenCV axes (x right, y down, z forward).
Pixel (row v, column u) covers [u, u + 1) x [v, v + 1) in the coordinates that K maps to, so
its centre is (u + 0.5, v + 0.5), as gsplat's.

Letters: V cameras, H W pixels, B beams, A azimuth steps.
"""

from dataclasses import dataclass

import numpy as np

from uniscene.geometry import make_transform, matrix_to_quaternion, yaw_to_quaternion
from uniscene.sensors import CAMERA_NAMES, LIDAR_ELEVATION_DEG, LIDAR_NUM_BEAMS

# Cameras at nuScenes' 1600 x 900: focal length (px), principal point (px), mount (ego frame m), yaw (deg).
FULL_SIZE_HW = (900, 1600)
_CAMERA_MOUNTS = {
    # name: (focal, cx, cy, translation, yaw_deg)
    "CAM_FRONT": (1266.4, 816.3, 491.5, (1.70, 0.016, 1.511), 0.0),
    "CAM_FRONT_RIGHT": (1260.8, 807.9, 495.3, (1.55, -0.493, 1.496), -55.0),
    "CAM_BACK_RIGHT": (1259.5, 807.2, 501.2, (1.04, -0.481, 1.562), -110.0),
    "CAM_BACK": (809.2, 829.2, 481.8, (0.03, 0.0, 1.566), 180.0),
    "CAM_BACK_LEFT": (1256.7, 792.1, 492.8, (1.05, 0.484, 1.566), 110.0),
    "CAM_FRONT_LEFT": (1272.6, 826.6, 479.8, (1.52, 0.494, 1.510), 55.0),
}

# ego axes of the camera axes: camera z (forward) -> ego x, camera x (right) -> ego -y, camera y (down) -> ego -z
_EGO_FROM_OPENCV = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class LidarPattern:
    """Beam directions of one sweep in the sensor frame.

    directions: [A * B, 3] unit vectors, ordered by azimuth step then beam (lowest first).
    ring: [A * B] beam index (0 = lowest beam).
    """

    directions: np.ndarray
    ring: np.ndarray


def lidar_pattern(azimuth_steps: int) -> LidarPattern:
    elevation = np.deg2rad(np.linspace(LIDAR_ELEVATION_DEG[0], LIDAR_ELEVATION_DEG[1], LIDAR_NUM_BEAMS))
    # The sweep turns clockwise seen from above, starting behind the car (sensor -y), as the HDL-32E in nuScenes.
    azimuth = -np.pi / 2 - 2 * np.pi * np.arange(azimuth_steps) / azimuth_steps
    az, el = np.meshgrid(azimuth, elevation, indexing="ij")  # [A, B]
    directions = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1).reshape(-1, 3)
    ring = np.broadcast_to(np.arange(LIDAR_NUM_BEAMS), (azimuth_steps, LIDAR_NUM_BEAMS)).reshape(-1)
    return LidarPattern(directions, ring.astype(np.int64))


@dataclass(frozen=True)
class CameraRig:
    """The six cameras at one image size.

    names: V camera names (uniscene.sensors.CAMERA_NAMES order).
    intrinsics: [V, 3, 3] K at the image size.
    ego_from_cam: [V, 4, 4] OpenCV camera frame to ego frame.
    size_hw: (H, W).
    """

    names: tuple
    intrinsics: np.ndarray
    ego_from_cam: np.ndarray
    size_hw: tuple

    def pixel_rays_ego(self):
        """Ray origins [V, 3] and unit directions [V, H, W, 3] of pixel centres in the ego frame,
        and the z component of the unit camera-frame direction [V, H, W] (z-depth = range * that)."""
        h, w = self.size_hw
        u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)  # [H, W]
        pixels = np.stack([u, v, np.ones_like(u)], -1)  # [H, W, 3]
        dirs_cam = np.einsum("vij,hwj->vhwi", np.linalg.inv(self.intrinsics), pixels)
        dirs_cam /= np.linalg.norm(dirs_cam, axis=-1, keepdims=True)
        dirs_ego = np.einsum("vij,vhwj->vhwi", self.ego_from_cam[:, :3, :3], dirs_cam)
        return self.ego_from_cam[:, :3, 3].copy(), dirs_ego, dirs_cam[..., 2]


def camera_rig(size_hw) -> CameraRig:
    """nuScenes-like intrinsics scaled from 1600 x 900 to `size_hw` and nuScenes-like mounts."""
    h, w = int(size_hw[0]), int(size_hw[1])
    sx, sy = w / FULL_SIZE_HW[1], h / FULL_SIZE_HW[0]
    intrinsics, transforms = [], []
    for name in CAMERA_NAMES:
        focal, cx, cy, translation, yaw_deg = _CAMERA_MOUNTS[name]
        intrinsics.append(np.array([[focal * sx, 0.0, cx * sx], [0.0, focal * sy, cy * sy], [0.0, 0.0, 1.0]]))
        yaw = np.deg2rad(yaw_deg)
        rz = np.array([[np.cos(yaw), -np.sin(yaw), 0.0], [np.sin(yaw), np.cos(yaw), 0.0], [0.0, 0.0, 1.0]])
        transforms.append(make_transform(rz @ _EGO_FROM_OPENCV, translation))
    return CameraRig(tuple(CAMERA_NAMES), np.stack(intrinsics), np.stack(transforms), (h, w))


def camera_rotation_wxyz(rig: CameraRig, index: int) -> list:
    return [float(v) for v in matrix_to_quaternion(rig.ego_from_cam[index, :3, :3])]
