"""Aggregate every LiDAR sweep of a scene: static points in the scene frame, object points in their boxes.

Each sweep's points go sensor -> ego -> scene (the world frame shifted to the first frame's ego
position, so float32 keeps millimetres). Points inside the ego car are dropped. A point inside
an (enlarged) box of its sweep belongs to that instance; everything else is static. Object
points are later expressed in their box frame, where a moving car piles up into one dense shape
that is placed back at each frame's box.

Letters: S sweeps, N points, B box slots.
"""

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from uniscene.classes import THING_CLASSES
from uniscene.geometry import invert_transform, make_transform

STATIC = -1  # slot of a point that belongs to no box


@dataclass
class Boxes:
    """Boxes of B instance slots at some times (sweeps or frames), in the world frame.

    center: [S, B, 3] metres; size: [S, B, 3] (w, l, h) as nuScenes; rotation: [S, B, 4] (w, x, y, z);
    valid: [S, B] bool.
    """

    center: np.ndarray
    size: np.ndarray
    rotation: np.ndarray
    valid: np.ndarray

    def world_from_box(self) -> np.ndarray:
        """[S, B, 4, 4]; identity rotation where the quaternion is zero (an invalid slot)."""
        rotation = np.where(np.linalg.norm(self.rotation, axis=-1, keepdims=True) > 0, self.rotation, [1.0, 0, 0, 0])
        return make_transform(rotation, self.center)


@dataclass
class Aggregate:
    """All LiDAR points of a scene at the time of their sweep.

    points: [N, 3] float32, scene frame. sweep: [N] int64. slot: [N] int64 box slot or STATIC.
    classes: [N] int64, the points' own classes (0..16 or semantics.UNLABELLED).
    box_points: [N, 3] float32, each object point in its box frame (undefined for static points).
    sweep_origin: [S, 3] float32, the LiDAR's position at each sweep, scene frame.
    source: [N] int64, each point's row in the sweeps' concatenated points.
    """

    points: torch.Tensor
    sweep: torch.Tensor
    slot: torch.Tensor
    classes: torch.Tensor
    box_points: torch.Tensor
    sweep_origin: torch.Tensor
    source: torch.Tensor


def aggregate_sweeps(
    points_lidar: np.ndarray,  # [N, 3] sensor frame, sweeps concatenated in order
    sweep_offsets: np.ndarray,  # [S + 1] int64
    ego_from_lidar: np.ndarray,  # [S, 4, 4]
    scene_from_ego: np.ndarray,  # [S, 4, 4] each sweep's ego pose in the scene frame
    scene_boxes: Boxes,  # at the sweeps, scene frame
    classes: np.ndarray,  # [N] uint8 occupancy class per point (or semantics.UNLABELLED)
    ego_box_m,  # (x_min, y_min, z_min, x_max, y_max, z_max) ego frame: the car's own body
    box_margin_m: float,  # boxes grow by this on every side to catch mirrors and annotation slack
    ground_margin_m: float,  # points this close above a box's bottom are ground, unless labelled as a thing
    device: str = "cpu",
) -> Aggregate:
    num_sweeps = len(sweep_offsets) - 1
    box_from_scene = torch.as_tensor(invert_transform(scene_boxes.world_from_box()), dtype=torch.float32, device=device)  # [S, B, 4, 4]
    half_size = torch.as_tensor(scene_boxes.size, dtype=torch.float32, device=device)[..., [1, 0, 2]] / 2  # (l, w, h)/2 on box x y z
    lower = -half_size - box_margin_m
    upper = half_size + box_margin_m
    ground_top = -half_size[..., 2] + ground_margin_m  # [S, B] box z below which a point may be ground
    reach = (half_size[..., :2] + box_margin_m).norm(dim=-1)  # [S, B] radius of the box's footprint
    center = torch.as_tensor(scene_boxes.center, dtype=torch.float32, device=device)
    valid = torch.as_tensor(scene_boxes.valid, device=device)
    ego_lower = torch.as_tensor(ego_box_m[:3], dtype=torch.float32, device=device)
    ego_upper = torch.as_tensor(ego_box_m[3:], dtype=torch.float32, device=device)
    scene_from_lidar = torch.as_tensor(scene_from_ego @ ego_from_lidar, dtype=torch.float32, device=device)
    ego_from_lidar_t = torch.as_tensor(ego_from_lidar, dtype=torch.float32, device=device)

    parts = []
    for s in tqdm(range(num_sweeps), desc="aggregate sweeps", unit="sweep", leave=False):
        start, stop = int(sweep_offsets[s]), int(sweep_offsets[s + 1])
        p = torch.as_tensor(points_lidar[start:stop, :3], dtype=torch.float32, device=device)
        c = torch.as_tensor(classes[start:stop].astype(np.int64), device=device)
        # 1. Drop the car's own body (ego frame), then sensor -> scene.
        ego = p @ ego_from_lidar_t[s, :3, :3].T + ego_from_lidar_t[s, :3, 3]
        keep = ~((ego >= ego_lower) & (ego <= ego_upper)).all(1)
        source = torch.nonzero(keep).squeeze(1) + start
        p, c = p[keep], c[keep]
        p = p @ scene_from_lidar[s, :3, :3].T + scene_from_lidar[s, :3, 3]
        # 2. Point-box pairs whose footprint circle holds the point, then the exact (enlarged) box test.
        boxes = torch.nonzero(valid[s]).squeeze(1)
        near = (torch.cdist(p[:, :2], center[s, boxes, :2]) <= reach[s, boxes]).nonzero()  # [pairs, 2]
        point, box = near[:, 0], boxes[near[:, 1]]
        local = torch.einsum("nij,nj->ni", box_from_scene[s, box, :3, :3], p[point]) + box_from_scene[s, box, :3, 3]
        inside = ((local >= lower[s, box]) & (local <= upper[s, box])).all(1)
        # the bottom slice is ground, unless lidarseg says the point is a thing (an object class)
        inside &= (local[:, 2] >= ground_top[s, box]) | ((c[point] >= THING_CLASSES[0]) & (c[point] <= THING_CLASSES[-1]))
        point, box, local = point[inside], box[inside], local[inside]
        # 3. A point in several boxes joins the first; every other point is static.
        slot = torch.full((p.shape[0],), len(valid[s]), dtype=torch.long, device=device)
        slot.scatter_reduce_(0, point, box, reduce="amin")
        first = slot[point] == box
        box_p = torch.zeros_like(p)
        box_p[point[first]] = local[first]
        slot = torch.where(slot == len(valid[s]), STATIC, slot)
        parts.append((p, torch.full_like(slot, s), slot, c, box_p, source))
    points, sweep, slot, point_classes, box_points, source = (torch.cat(column) for column in zip(*parts))
    origin = scene_from_lidar[:, :3, 3]
    return Aggregate(points, sweep, slot, point_classes, box_points, origin, source)
