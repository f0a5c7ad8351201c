"""Ground truth of a synthetic scene on its 12 Hz frames: occupancy, camera visibility, boxes.

semantics: a voxel holds the class of a solid that overlaps it with positive volume (boxes are
filled); the ground plane z = 0 fills the voxel layer that contains z = 0 with the ground
class under each voxel's centre; everything else is free (17). Where solids of several
classes overlap one voxel, the one painted last wins (`PAINT_ORDER`).

mask_camera: voxels seen by at least one camera: every voxel whose centre lies in front of
the surface that its pixel sees (free space on the pixel's ray), plus the voxels that hold
the surface points of the pixels.

Letters: T frames, V cameras, H W pixels, X Y Z grid, B boxes.
"""

import numpy as np
import xarray as xr

from uniscene.classes import FREE, LIDARSEG_TO_OCC, OCC_CLASS_ID
from uniscene.geometry import invert_transform
from uniscene.grid import OccGrid
from uniscene.synth import kernels
from uniscene.synth.sensors import CameraRig
from uniscene.synth.world import SyntheticScene

# low to high: later classes overwrite earlier ones in a shared voxel
PAINT_ORDER = tuple(OCC_CLASS_ID[n] for n in (
    "driveable_surface", "other_flat", "sidewalk", "terrain", "others", "vegetation", "manmade", "barrier",
    "traffic_cone", "trailer", "construction_vehicle", "bus", "truck", "car", "motorcycle", "bicycle", "pedestrian"))

# box_present: the instance lies within this distance (m, bird's eye) of the ego; the world holds
# every instance all the time, so a box farther away is neither present nor absent
BOX_RANGE_M = 60.0


def ground_layer(grid: OccGrid) -> int | None:
    """Index of the voxel layer that contains z = 0 (the upper one when z = 0 is a boundary)."""
    k = int(np.floor((0.0 - grid.lower_m[2]) / grid.voxel_size_m + 1e-9))
    return k if 0 <= k < grid.shape[2] else None


def frame_semantics(scene: SyntheticScene, t_s: float, grid: OccGrid) -> np.ndarray:
    """True occupancy [X, Y, Z] uint8 (0..16, 17 free) in the ego frame at t_s."""
    world_from_ego = scene.ego_pose(t_s)
    ego_from_world = invert_transform(world_from_ego)
    semantics = np.full(grid.shape, FREE, np.uint8)
    layer = ground_layer(grid)
    if layer is not None:
        centers = grid.voxel_centers()[:, :, layer, :].reshape(-1, 3).astype(np.float64)
        world = centers @ world_from_ego[:3, :3].T + world_from_ego[:3, 3]
        ground = LIDARSEG_TO_OCC[scene.town.ground_class(world[:, 0], world[:, 1])]
        semantics[:, :, layer] = ground.reshape(grid.shape[:2])
    boxes, _ = scene.primitives(t_s)
    ego_yaw = np.arctan2(world_from_ego[1, 0], world_from_ego[0, 0])
    center = boxes.center @ ego_from_world[:3, :3].T + ego_from_world[:3, 3]
    # cull boxes far outside the grid
    reach = np.linalg.norm(boxes.half, axis=1)
    inside = np.all((center + reach[:, None] > grid.lower_m) & (center - reach[:, None] < grid.upper_m), axis=1)
    idx = np.nonzero(inside)[0]
    pair_box, flat = kernels.box_voxel_pairs(grid, center[idx], boxes.half[idx], boxes.yaw[idx] - ego_yaw)
    occ = LIDARSEG_TO_OCC[boxes.lidarseg[idx][pair_box]]
    flat_view = semantics.reshape(-1)
    for cls in PAINT_ORDER:
        sel = occ == cls
        if sel.any():
            flat_view[flat[sel]] = cls
    return semantics


class CameraVisibility:
    """Projection of the grid's voxel centres into each camera, computed once per rig."""

    def __init__(self, grid: OccGrid, rig: CameraRig):
        self.grid = grid
        h, w = rig.size_hw
        centers = grid.voxel_centers().reshape(-1, 3).astype(np.float64)
        self.voxel, self.pixel, self.z = [], [], []
        for v in range(len(rig.names)):
            cam_from_ego = invert_transform(rig.ego_from_cam[v])
            p = centers @ cam_from_ego[:3, :3].T + cam_from_ego[:3, 3]
            front = p[:, 2] > 0.05
            uvw = p[front] @ rig.intrinsics[v].T
            u = np.floor(uvw[:, 0] / uvw[:, 2]).astype(np.int64)
            vv = np.floor(uvw[:, 1] / uvw[:, 2]).astype(np.int64)
            ok = (u >= 0) & (u < w) & (vv >= 0) & (vv < h)
            self.voxel.append(np.nonzero(front)[0][ok])
            self.pixel.append((v * h + vv[ok]) * w + u[ok])
            self.z.append(p[front][ok, 2].astype(np.float32))
        self.voxel = np.concatenate(self.voxel)
        self.pixel = np.concatenate(self.pixel)
        self.z = np.concatenate(self.z)

    def mask(self, depth: np.ndarray, origins_ego: np.ndarray, dirs_ego: np.ndarray, z_of_dir: np.ndarray) -> np.ndarray:
        """mask_camera [X, Y, Z] bool from the cameras' z-depth maps [V, H, W] (0 = sky).

        origins_ego: [V, 3]; dirs_ego: [V, H, W, 3] unit pixel rays; z_of_dir: [V, H, W].
        """
        grid = self.grid
        mask = np.zeros(int(np.prod(grid.shape)), bool)
        surface = depth.reshape(-1)
        surface = np.where(surface > 0, surface, np.inf)
        mask[self.voxel[self.z < surface[self.pixel]]] = True
        hit = depth > 0
        if hit.any():
            view = np.nonzero(hit)[0]
            rng = (depth[hit] / z_of_dir[hit])[:, None]
            points = origins_ego[view] + dirs_ego[hit] * rng
            # nudge along the ray so a point on a voxel face lands in the voxel of the surface behind it
            points = points + dirs_ego[hit] * 1e-4
            ijk, inside = grid.index_of(points)
            ijk = ijk[inside]
            mask[(ijk[:, 0] * grid.shape[1] + ijk[:, 1]) * grid.shape[2] + ijk[:, 2]] = True
        return mask.reshape(grid.shape)


def truth_dataset(scene: SyntheticScene, grid: OccGrid, timestamps_us, world_from_ego, semantics, mask_camera,
                  cam_semantics, cam_depth, instance_tokens) -> xr.Dataset:
    """The truth store of one scene: arrays on T frames (layout: uniscene/store_layouts.py, docs/stores.md)."""
    t_s = (np.asarray(timestamps_us) - scene.start_us) / 1e6
    centers, sizes, rotations, present = [], [], [], []
    for k, t in enumerate(t_s):
        center, size, yaw = scene.boxes(float(t))
        ego_xy = world_from_ego[k][:2, 3]
        centers.append(center)
        sizes.append(size)
        rotations.append(np.stack([np.cos(yaw / 2), np.zeros_like(yaw), np.zeros_like(yaw), np.sin(yaw / 2)], -1))
        present.append(np.hypot(*(center[:, :2] - ego_xy).T) <= BOX_RANGE_M)
    num_boxes = len(scene.instances)
    as_array = lambda items, shape, dtype: np.array(items, dtype=dtype).reshape(shape)  # noqa: E731
    t = len(t_s)
    return xr.Dataset(
        {
            "timestamp_us": (("frame",), np.asarray(timestamps_us, np.int64)),
            "world_from_ego": (("frame", "row", "col"), np.asarray(world_from_ego, np.float64)),
            "semantics": (("frame", "x", "y", "z"), np.asarray(semantics, np.uint8)),
            "mask_camera": (("frame", "x", "y", "z"), np.asarray(mask_camera, bool)),
            "box_center": (("frame", "box", "xyz"), as_array(centers, (t, num_boxes, 3), np.float64)),
            "box_size": (("frame", "box", "xyz"), as_array(sizes, (t, num_boxes, 3), np.float32)),
            "box_rotation": (("frame", "box", "quat"), as_array(rotations, (t, num_boxes, 4), np.float64)),
            "box_present": (("frame", "box"), as_array(present, (t, num_boxes), bool)),
            "box_instance_token": (("box",), np.array(instance_tokens, dtype=object).reshape(num_boxes)),
            "box_category": (("box",), np.array(scene.instances.category, dtype=object).reshape(num_boxes)),
            "cam_semantics": (("frame", "cam", "h", "w"), np.asarray(cam_semantics, np.uint8)),
            "cam_depth": (("frame", "cam", "h", "w"), np.asarray(cam_depth, np.float32)),
        },
        attrs={
            "camera_names": list(scene.rig.names),
            "scene": scene.name,
            "location": scene.location,
            **grid.to_attrs(),
        },
    )
