"""A scene's conditions as the video network reads them, at the video size: maps, cameras, boxes (numpy, no I/O).

The render store's maps are resized to the video size (nearest pixel centre, uniscene.data.images: classes stay classes),
depth becomes a feature in [0, 1] (log depth up to MAX_DEPTH_M), K is scaled to the video size, and
every box of the layout is projected into every camera: its class, its eight corners in image
units ([-1, 1] across the image, clipped to [-2, 2]) and its mean depth; the `max_boxes` nearest
boxes in view of a camera fill its slots.

Letters: T frames, V cameras, B box slots of the scene, M box slots per camera, H W pixels.
"""

from dataclasses import dataclass

import numpy as np

from uniscene.boxes import Boxes
from uniscene.classes import DETECTION_CLASS_NAMES
from uniscene.data.images import resize_nearest, scale_intrinsics
from uniscene.geometry import invert_transform
from uniscene.models.video.network import BOX_FEATURES

MAX_DEPTH_M = 80.0  # depth_feature reaches 1 here
CORNER_CLIP = 2.0  # projected corners beyond twice the image's half-size are clipped
NEAR_M = 0.1  # corners nearer than this (or behind the camera) are placed at this depth


@dataclass
class SceneConditions:
    """semantic [T, V, H, W] uint8 (255 background), depth [T, V, H, W] float16 in [0, 1], cameras
    [T, V, CAMERA_FEATURES] float32, boxes [T, V, M, BOX_FEATURES] float32, box_valid [T, V, M] bool,
    intrinsics [T, V, 3, 3] float64 (K at the video size)."""

    semantic: np.ndarray
    depth: np.ndarray
    cameras: np.ndarray
    boxes: np.ndarray
    box_valid: np.ndarray
    intrinsics: np.ndarray

    def __len__(self) -> int:
        return len(self.semantic)

    def select(self, frames: slice) -> "SceneConditions":
        """The conditions of frames `frames` only."""
        return SceneConditions(*(getattr(self, name)[frames] for name in self.__dataclass_fields__))

    def frames(self, frames: slice) -> dict:
        """Frames `frames` as arrays [V, F, ...] (the network's view-major order)."""
        swap = lambda a: np.swapaxes(a[frames], 0, 1)
        return {"semantic": swap(self.semantic), "depth": swap(self.depth).astype(np.float32), "cameras": swap(self.cameras),
                "boxes": swap(self.boxes), "box_valid": swap(self.box_valid)}


def depth_feature(depth: np.ndarray) -> np.ndarray:
    """Depth in metres [...] (0: none) -> log1p(depth) / log1p(MAX_DEPTH_M) clipped to [0, 1], float16."""
    return np.clip(np.log1p(np.maximum(np.asarray(depth, np.float32), 0)) / np.log1p(MAX_DEPTH_M), 0, 1).astype(np.float16)


def camera_features(intrinsics: np.ndarray, ego_from_cam: np.ndarray, size_hw) -> np.ndarray:
    """intrinsics [T, V, 3, 3] at size_hw, ego_from_cam [T, V, 4, 4] -> [T, V, CAMERA_FEATURES] float32."""
    height, width = size_hw
    k = np.stack([intrinsics[..., 0, 0] / width, intrinsics[..., 1, 1] / height, intrinsics[..., 0, 2] / width,
                  intrinsics[..., 1, 2] / height], -1)
    rotation = ego_from_cam[..., :3, :3].reshape(*ego_from_cam.shape[:-2], 9)
    translation = ego_from_cam[..., :3, 3] / 2.0
    return np.concatenate([k, rotation, translation], -1).astype(np.float32)  # [T, V, CAMERA_FEATURES]


def box_corners(size: np.ndarray) -> np.ndarray:
    """size [..., 3] (w, l, h) -> the eight corners in the box frame [..., 8, 3] (x along l, y along w, z up)."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], np.float64)  # [8, 3]
    half = np.stack([size[..., 1], size[..., 0], size[..., 2]], -1)[..., None, :] / 2  # [..., 1, 3]
    return signs * half


def box_features(boxes: Boxes, box_class: np.ndarray, world_from_ego: np.ndarray, ego_from_cam: np.ndarray, intrinsics: np.ndarray,
                 size_hw, max_boxes: int) -> tuple:
    """Boxes in the world [T, B] with detection classes box_class [T, B] (-1: none), each frame's
    world_from_ego [T, 4, 4], ego_from_cam [T, V, 4, 4] and K at size_hw [T, V, 3, 3] ->
    (features [T, V, M, BOX_FEATURES] float32, valid [T, V, M] bool): the M nearest boxes in view per camera."""
    frames, views = ego_from_cam.shape[:2]
    height, width = size_hw
    features = np.zeros((frames, views, max_boxes, BOX_FEATURES), np.float32)
    valid = np.zeros((frames, views, max_boxes), bool)
    if boxes.center.shape[1] == 0:
        return features, valid
    corners_box = box_corners(boxes.size.astype(np.float64))  # [T, B, 8, 3]
    world_from_box = boxes.world_from_box()  # [T, B, 4, 4]
    corners_world = np.einsum("tbij,tbkj->tbki", world_from_box[..., :3, :3], corners_box) + world_from_box[:, :, None, :3, 3]
    cam_from_world = invert_transform(world_from_ego[:, None] @ ego_from_cam)  # [T, V, 4, 4]
    corners_cam = (np.einsum("tvij,tbkj->tvbki", cam_from_world[..., :3, :3], corners_world)
                   + cam_from_world[:, :, None, None, :3, 3])  # [T, V, B, 8, 3]
    z = corners_cam[..., 2]
    pixels = np.einsum("tvij,tvbkj->tvbki", intrinsics, corners_cam / np.maximum(z, NEAR_M)[..., None])[..., :2]  # [T, V, B, 8, 2]
    unit = np.clip(pixels / np.array([width, height]) * 2 - 1, -CORNER_CLIP, CORNER_CLIP)
    # in view: some corner in front, and the corners' bounding box overlaps the image
    front = (z > NEAR_M).any(-1)
    overlaps = (unit[..., 0].max(-1) > -1) & (unit[..., 0].min(-1) < 1) & (unit[..., 1].max(-1) > -1) & (unit[..., 1].min(-1) < 1)
    usable = boxes.valid[:, None] & (box_class[:, None] >= 0) & front & overlaps  # [T, V, B]
    distance = np.where(usable, np.linalg.norm(corners_cam.mean(-2), axis=-1), np.inf)  # [T, V, B]
    order = np.argsort(distance, -1, kind="stable")[..., :max_boxes]  # [T, V, M'] nearest first
    count = order.shape[-1]
    take = lambda a: np.take_along_axis(a, order.reshape(*order.shape, *(1,) * (a.ndim - 3)), 2)
    one_hot = np.eye(len(DETECTION_CLASS_NAMES), dtype=np.float32)[np.clip(box_class, 0, None)]  # [T, B, 10]
    one_hot = np.broadcast_to(one_hot[:, None], (frames, views, *one_hot.shape[1:]))
    mean_depth = np.clip(z.mean(-1), 0, None) / 50.0  # [T, V, B]
    per_box = np.concatenate([one_hot, unit.reshape(*unit.shape[:3], 16), mean_depth[..., None]], -1)  # [T, V, B, BOX_FEATURES]
    features[:, :, :count] = take(per_box)
    valid[:, :, :count] = np.take_along_axis(usable, order, 2)
    features[~valid] = 0
    return features, valid


def scene_conditions(semantic, depth, render_intrinsics, ego_from_cam, world_from_ego, boxes: Boxes, box_class, size_hw,
                     max_boxes: int) -> SceneConditions:
    """A scene's conditions at the video size `size_hw` from its render maps (semantic, depth [T, V, h, w] at the
    render size, with K [T, V, 3, 3] there), its cameras ego_from_cam [T, V, 4, 4] and its layout's boxes."""
    render_hw = np.asarray(semantic).shape[-2:]
    intrinsics = scale_intrinsics(render_intrinsics, render_hw, size_hw)
    features, valid = box_features(boxes, box_class, world_from_ego, ego_from_cam, intrinsics, size_hw, max_boxes)
    return SceneConditions(
        semantic=resize_nearest(np.asarray(semantic), size_hw),
        depth=depth_feature(resize_nearest(np.asarray(depth), size_hw)),
        cameras=camera_features(intrinsics, ego_from_cam, size_hw),
        boxes=features, box_valid=valid, intrinsics=intrinsics,
    )
