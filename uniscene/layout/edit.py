"""Editing a layout's objects: drop, add, move or re-class them in a frame range.

A layout store keeps the boxes it was drawn from (world frame, per frame), so an edit changes
boxes and the object channels are drawn again with `layout.box_footprints`; the map channels
stay as they were. The edited store has the same layout as the original, so every generator
that reads layout.zarr reads it.

Objects are chosen by a selector string: comma-separated box indices (`3,7`), instance tokens
or unique token prefixes (`a1b2`), or detection class names (`car`: every car).
Positions and offsets are in the ego frame of the first frame of the range, in metres; an
object keeps its world position afterwards (a parked car stays parked while the ego drives).

Letters: T frames, B boxes, C channels, X Y grid cells.
"""

import uuid
from dataclasses import dataclass, replace

import numpy as np

from uniscene.boxes import Boxes
from uniscene.classes import DETECTION_CLASS_ID, DETECTION_CLASS_NAMES
from uniscene.errors import UserError
from uniscene.geometry import matrix_to_quaternion, quaternion_to_matrix, yaw_to_quaternion
from uniscene.grid import OccGrid
from uniscene.layout.raster import NUM_MAP_LAYERS, box_footprints, boxes_in_ego

# Typical (w, l, h) metres of a new object of each detection class (about the nuScenes means).
DEFAULT_SIZE_M = {
    "car": (1.95, 4.6, 1.7),
    "truck": (2.5, 7.0, 2.9),
    "construction_vehicle": (2.8, 6.4, 3.2),
    "bus": (2.95, 11.0, 3.5),
    "trailer": (2.9, 12.3, 3.9),
    "barrier": (2.5, 0.5, 1.0),
    "motorcycle": (0.77, 2.1, 1.5),
    "bicycle": (0.6, 1.7, 1.3),
    "pedestrian": (0.67, 0.73, 1.77),
    "traffic_cone": (0.41, 0.41, 1.07),
}


@dataclass(frozen=True, kw_only=True)
class LayoutBoxes(Boxes):
    """The boxes of a layout store (world frame): `Boxes` with what drawing and editing them needs.

    center [T, B, 3] float64; size [T, B, 3] float32; rotation [T, B, 4] float64; valid [T, B] bool
    (as `Boxes`, no velocity); klass [T, B] int8 detection class (-1 none); instance_token [B] str;
    world_from_ego [T, 4, 4]; timestamp_us [T] int64.
    """

    klass: np.ndarray
    instance_token: np.ndarray
    world_from_ego: np.ndarray
    timestamp_us: np.ndarray

    @classmethod
    def from_dataset(cls, dataset) -> "LayoutBoxes":
        missing = [name for name in ("box_center", "box_size", "box_rotation", "box_valid", "box_class", "box_instance_token",
                                     "world_from_ego") if name not in dataset]
        if missing:
            raise UserError(f"layout store has no {', '.join(missing)}: edit a store written by `uniscene layout`")
        return cls(
            center=dataset["box_center"].values.astype(np.float64), size=dataset["box_size"].values.astype(np.float32),
            rotation=dataset["box_rotation"].values.astype(np.float64), valid=dataset["box_valid"].values.astype(bool),
            klass=dataset["box_class"].values.astype(np.int8), instance_token=dataset["box_instance_token"].values.astype(object),
            world_from_ego=dataset["world_from_ego"].values, timestamp_us=dataset["timestamp_us"].values,
        )

    @property
    def num_frames(self) -> int:
        return self.center.shape[0]


def frame_range(text: str | None, num_frames: int) -> slice:
    """`START:STOP` (half-open frame indices, either may be empty or negative) -> slice; None -> all frames."""
    if text is None:
        return slice(0, num_frames)
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start, stop = (int(p) if p.strip() else None for p in parts)
    except ValueError:
        raise UserError(f"frame range '{text}' must be START:STOP (frame indices, e.g. 0:24 or 12:)") from None
    frames = slice(*slice(start, stop).indices(num_frames)[:2])
    if frames.stop <= frames.start:
        raise UserError(f"frame range '{text}' holds no frame of the {num_frames} in the layout")
    return frames


def class_id(name: str) -> int:
    if name not in DETECTION_CLASS_ID:
        raise UserError(f"unknown object class '{name}': choose one of {', '.join(DETECTION_CLASS_NAMES)}")
    return DETECTION_CLASS_ID[name]


def select(boxes: LayoutBoxes, selector: str, frames: slice) -> np.ndarray:
    """Boxes named by `selector` (indices, tokens or token prefixes, class names) that exist in `frames`: [B] bool."""
    num_boxes = boxes.instance_token.shape[0]
    chosen = np.zeros(num_boxes, dtype=bool)
    tokens = boxes.instance_token.astype(str)
    for item in (part.strip() for part in selector.split(",")):
        if not item:
            continue
        if item.lstrip("-").isdigit():
            index = int(item)
            if not -num_boxes <= index < num_boxes:
                raise UserError(f"object index {index} is out of range: the layout has {num_boxes} boxes (see --list)")
            chosen[index] = True
        elif item in DETECTION_CLASS_ID:
            chosen |= np.any(boxes.klass[frames] == DETECTION_CLASS_ID[item], axis=0)
        else:
            matches = np.flatnonzero(np.char.startswith(tokens, item))
            if matches.size != 1:
                raise UserError(f"object '{item}' matches {matches.size} instance tokens: give a box index, a class name "
                                f"or a longer token prefix (see --list)")
            chosen[matches[0]] = True
    present = chosen & boxes.valid[frames].any(0)
    if not present.any():
        raise UserError(f"objects '{selector}' do not appear in frames {frames.start}:{frames.stop} (see --list)")
    return present


def drop(boxes: LayoutBoxes, selector: str, frames: slice) -> LayoutBoxes:
    """Remove the selected objects from the frames of the range."""
    valid = boxes.valid.copy()
    valid[frames] &= ~select(boxes, selector, frames)
    return replace(boxes, valid=valid)


def reclass(boxes: LayoutBoxes, selector: str, frames: slice, class_name: str) -> LayoutBoxes:
    """Give the selected objects another detection class in the frames of the range."""
    which = select(boxes, selector, frames)
    klass = boxes.klass.copy()
    klass[frames] = np.where(which, class_id(class_name), klass[frames])
    return replace(boxes, klass=klass)


def move(boxes: LayoutBoxes, selector: str, frames: slice, offset_m, rotate_deg: float = 0.0) -> LayoutBoxes:
    """Shift the selected objects by offset_m (dx, dy) and turn them by rotate_deg about their centres.

    The offset is in the ego frame of the range's first frame and applied as the same world
    offset to every frame of the range.
    """
    which = select(boxes, selector, frames)
    world_from_first = boxes.world_from_ego[frames.start, :3, :3]
    offset_world = world_from_first @ np.array([offset_m[0], offset_m[1], 0.0])
    turn = quaternion_to_matrix(yaw_to_quaternion(np.deg2rad(rotate_deg)))  # [3, 3] about world z
    center, rotation = boxes.center.copy(), boxes.rotation.copy()
    center[frames] += np.where(which[:, None], offset_world, 0.0)
    turned = matrix_to_quaternion(turn @ quaternion_to_matrix(rotation[frames]))  # [t, B, 4]
    rotation[frames] = np.where(which[:, None], turned, rotation[frames])
    return replace(boxes, center=center, rotation=rotation)


def add(boxes: LayoutBoxes, frames: slice, class_name: str, position_m, yaw_deg: float = 0.0, speed_mps: float = 0.0,
        size_m=None) -> LayoutBoxes:
    """A new object in the frames of the range, in a new box slot.

    position_m (x, y) and yaw_deg are in the ego frame of the range's first frame; the object
    drives along its heading at speed_mps (0: parked). size_m (w, l, h) defaults to the class' typical size.
    """
    klass = class_id(class_name)
    size = np.asarray(size_m if size_m is not None else DEFAULT_SIZE_M[class_name], dtype=np.float32)
    world_from_first = boxes.world_from_ego[frames.start]
    start_world = world_from_first @ np.array([position_m[0], position_m[1], size[2] / 2, 1.0])
    heading_world = world_from_first[:3, :3] @ np.array([np.cos(np.deg2rad(yaw_deg)), np.sin(np.deg2rad(yaw_deg)), 0.0])
    yaw_world = np.arctan2(heading_world[1], heading_world[0])
    elapsed_s = (boxes.timestamp_us - boxes.timestamp_us[frames.start]) / 1e6  # [T]
    num_frames = boxes.num_frames

    center = start_world[None, :3] + speed_mps * elapsed_s[:, None] * heading_world  # [T, 3]
    valid = np.zeros(num_frames, dtype=bool)
    valid[frames] = True
    token = uuid.uuid5(uuid.NAMESPACE_OID, f"{class_name}:{position_m}:{yaw_deg}:{speed_mps}:{frames}:{boxes.instance_token.size}").hex
    return LayoutBoxes(
        center=np.concatenate([boxes.center, center[:, None]], 1),
        size=np.concatenate([boxes.size, np.broadcast_to(size, (num_frames, 1, 3))], 1),
        rotation=np.concatenate([boxes.rotation, np.broadcast_to(yaw_to_quaternion(yaw_world), (num_frames, 1, 4))], 1),
        valid=np.concatenate([boxes.valid, valid[:, None]], 1),
        klass=np.concatenate([boxes.klass, np.full((num_frames, 1), klass, dtype=np.int8)], 1),
        instance_token=np.append(boxes.instance_token, token).astype(object),
        world_from_ego=boxes.world_from_ego,
        timestamp_us=boxes.timestamp_us,
    )


def redraw_objects(layout: np.ndarray, boxes: LayoutBoxes, grid: OccGrid, rule: str = "overlap", device: str = "cpu") -> np.ndarray:
    """The layout [T, C, X, Y] with its object channels drawn again from `boxes` (map channels kept), by `rule`."""
    objects = box_footprints(boxes.world_from_ego, boxes.center, boxes.size, boxes.rotation, boxes.valid, boxes.klass,
                             grid, rule=rule, device=device)
    return np.concatenate([layout[:, :NUM_MAP_LAYERS], objects], axis=1)


def describe(boxes: LayoutBoxes, frames: slice) -> list[dict]:
    """One row per object present in the range: index, token, class, frames, ego position at its first frame there."""
    center_ego, yaw_ego = boxes_in_ego(boxes.world_from_ego, boxes.center, boxes.rotation)
    rows = []
    for index in np.flatnonzero(boxes.valid[frames].any(0)):
        present = np.flatnonzero(boxes.valid[frames, index]) + frames.start
        first = present[0]
        klass = int(boxes.klass[first, index])
        rows.append({
            "index": int(index),
            "token": str(boxes.instance_token[index]),
            "class": DETECTION_CLASS_NAMES[klass] if klass >= 0 else "none",
            "frames": f"{present[0]}:{present[-1] + 1}",
            "x_m": round(float(center_ego[first, index, 0]), 2),
            "y_m": round(float(center_ego[first, index, 1]), 2),
            "yaw_deg": round(float(np.rad2deg(yaw_ego[first, index])), 1),
            "first_frame": int(first),
        })
    return rows
