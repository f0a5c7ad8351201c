"""A scene's stores read as the video model's conditions: train-video and video read scenes through here."""

import numpy as np

from uniscene.boxes import Boxes
from uniscene.errors import UserError
from uniscene.models.video.conditions import scene_conditions
from uniscene.sensors import CAMERA_NAMES
from uniscene.store import open_store


def read_scene(frames_path, render_path, layout_path, size_hw, max_boxes: int):
    """(SceneConditions, the frames store) of one scene, its three stores checked to hold the same frames."""
    frames = open_store(frames_path, "frames")
    render = open_store(render_path, "render")
    layout = open_store(layout_path, "layout")
    timestamp_us = frames["timestamp_us"].values
    for path, store in ((render_path, render), (layout_path, layout)):
        if not np.array_equal(store["timestamp_us"].values, timestamp_us):
            raise UserError(f"store {path} holds other frames than {frames_path}: rebuild it from the same frames.zarr")
    names = tuple(frames.attrs.get("camera_names", CAMERA_NAMES))
    if names != CAMERA_NAMES or render.sizes["cam"] != len(CAMERA_NAMES):
        raise UserError(f"store {frames_path} has the cameras {list(names)}, the video model the six of nuScenes {list(CAMERA_NAMES)}: "
                        "use a dataset with all six cameras")
    conditions = scene_conditions(render["semantic"].values, render["depth"].values, render["intrinsics"].values,
                                  frames["ego_from_cam"].values, layout["world_from_ego"].values, Boxes.from_dataset(layout),
                                  layout["box_class"].values, size_hw, max_boxes)
    return conditions, frames
