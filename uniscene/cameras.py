"""The six nuScenes cameras in uniscene's fixed order, and the LiDAR channel name."""

CAMERA_NAMES = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_FRONT_LEFT",
)
LIDAR_NAME = "LIDAR_TOP"
