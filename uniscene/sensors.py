"""The sensors of a nuScenes car, one definition each: the six cameras in uniscene's fixed
order, and LIDAR_TOP (Velodyne HDL-32E) with its mount (values rounded from nuScenes'
calibrated_sensor table; rotated -90 deg about z: sensor x points to the car's right, y forward).

The synthetic dataset fires this LiDAR, and the LiDAR model's beam pattern reads it from here.
"""

import numpy as np

from uniscene.geometry import make_transform, yaw_to_quaternion

CAMERA_NAMES = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_FRONT_LEFT",
)
LIDAR_NAME = "LIDAR_TOP"

# LIDAR_TOP (Velodyne HDL-32E)
LIDAR_TRANSLATION_M = (0.943713, 0.0, 1.84023)  # in the ego frame
LIDAR_YAW_RAD = -np.pi / 2  # nuScenes' LIDAR_TOP: sensor x = ego -y (right), sensor y = ego x (forward)
LIDAR_NUM_BEAMS = 32
LIDAR_ELEVATION_DEG = (-30.67, 10.67)  # lowest and highest beam
LIDAR_MAX_RANGE_M = 70.0
LIDAR_MIN_RANGE_M = 1.0


def ego_from_lidar() -> np.ndarray:
    """4x4 transform of the LIDAR_TOP mount."""
    return make_transform(yaw_to_quaternion(LIDAR_YAW_RAD), LIDAR_TRANSLATION_M)


def lidar_rotation_wxyz() -> list:
    return [float(v) for v in yaw_to_quaternion(LIDAR_YAW_RAD)]
