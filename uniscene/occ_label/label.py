"""The occupancy-labelling core: a scene's sweeps in, per-frame semantics and masks out.

    surface = build_surface(scene, grid, options, device)   # once per scene
    for batch in label_frames(surface, scene, grid, options, frames):  # F frames at a time
        batch.semantics, batch.mask_lidar, batch.mask_camera           # [F, X, Y, Z]

1. Aggregate every sweep (aggregate.py): static points in the scene frame, object points in
   their box frames.
2. Semantics: lidarseg classes where a sweep has them, the nearest labelled static cell where
   it does not (within the map's areas, map_areas.py); object points take their box's class.
   Static points of moving classes (an object outside its annotated boxes) are dropped: they
   would leave a trail; so are static cells that other sweeps saw through (transients.py).
3. Densify the static cloud with the configured backend (densify/) and fill the holes of the
   ground (ground.py); carve each object's shape out of its box (carve.py).
4. Per frame: static surface into the frame's ego frame, object shapes placed at the frame's
   boxes, voxelised by majority class; masks by ray casting (masks.py).

Arrays, not files: the command (uniscene/commands/occ_label.py) reads and writes.
Letters: S sweeps, T frames, F frames of a batch, B box slots, V cameras, N points, X Y Z grid.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from uniscene.boxes import Boxes
from uniscene.classes import FIXED_THING_CLASSES, FREE, MOVABLE_CLASSES, SLENDER_CLASSES
from uniscene.geometry import invert_transform, make_transform
from uniscene.grid import OccGrid
from uniscene.occ_label import sparse
from uniscene.occ_label.aggregate import STATIC, aggregate_sweeps
from uniscene.occ_label.carve import carve_objects, range_images
from uniscene.occ_label.densify import Cloud, densify
from uniscene.occ_label.densify.patches import tangent_patches
from uniscene.occ_label.ground import fill_ground
from uniscene.occ_label.map_areas import MapAreas
from uniscene.occ_label.masks import auto_ray_stride, mask_camera, mask_lidar
from uniscene.occ_label.semantics import UNLABELLED, nearest_labels
from uniscene.occ_label.sweeps import SweepArrays, SweepFiles
from uniscene.occ_label.transients import seen_through
from uniscene.occ_label.voxelize import voxel_index, voxelize_frames
from uniscene.settings import Settings

STATIC_GROUP = 0  # densify group of the static scene
VOXELIZE_POINTS = 2**24  # on a GPU, points of consecutive frames voxelised together (one sort): 0.15 GB of keys and labels
VOXELIZE_POINTS_CPU = 1  # on a CPU a frame at a time: fewer, longer sorts gain nothing there
BACKEND_KEYS = ("splat_radius_m", "splat_max_variation", "normal_radius_m", "max_samples", "poisson_depth", "poisson_density_quantile", "nksr_detail")


@dataclass(frozen=True)
class LabelOptions(Settings):
    """The `occ_label:` config section (uniscene/schemas/config.schema.yaml: meanings, defaults)."""

    SECTION = "occ_label"

    backend: str
    ego_box_m: tuple[float, ...]
    box_margin_m: float
    ground_margin_m: float
    cell_size_m: float | None  # None: a third of a voxel
    label_search_m: float
    mask_lidar_window_s: float
    camera_ray_stride_px: int | str  # "auto": masks.auto_ray_stride
    patch_samples: int
    object_cell_m: float
    object_fine_cell_m: float
    object_floor_m: float
    object_mirror: bool
    object_prior_free: float
    object_prior_hit: float
    ground_fill_m: float
    map_areas: bool
    transient_sweeps: int
    transient_margin_m: float
    frames_per_batch: int
    batch_memory_mb: int
    allow_missing_lidarseg: bool
    # the densify backends' own keys (BACKEND_KEYS)
    splat_radius_m: float
    splat_max_variation: float
    normal_radius_m: float | None  # None: two cells
    max_samples: int
    poisson_depth: int
    poisson_density_quantile: float
    nksr_detail: float

    @property
    def backend_options(self) -> dict:
        """The keys that the densify backends read (densify/)."""
        return {name: getattr(self, name) for name in BACKEND_KEYS}

    def cell_m(self, grid: OccGrid) -> float:
        return float(self.cell_size_m) if self.cell_size_m else grid.voxel_size_m / 3

    def camera_stride_px(self, cam_intrinsics: np.ndarray, grid: OccGrid) -> int:
        """mask_camera's pixel stride: the configured one, or for "auto" masks.auto_ray_stride."""
        if self.camera_ray_stride_px == "auto":
            return auto_ray_stride(cam_intrinsics, grid)
        return int(self.camera_ray_stride_px)


@dataclass
class SceneArrays:
    """Everything the labeller needs of one scene (frames.zarr plus the sweep files), as arrays.

    sweeps: the S sweeps' points, rings and classes (sweeps.py: in memory, or read from their files as
    the aggregation asks for them).
    sweep_timestamp_us: [S] int64. ego_from_lidar, world_from_sweep_ego: [S, 4, 4].
    sweep_boxes: Boxes at the sweeps [S, B]. frame_timestamp_us: [T] int64.
    world_from_ego: [T, 4, 4]. frame_boxes: Boxes at the frames [T, B]. box_occ_class: [B] uint8.
    cam_intrinsics: [T, V, 3, 3]. ego_from_cam: [T, V, 4, 4]. cam_image_size: [V, 2] (H, W).
    map_areas: the map's areas (map_areas.py), which ground classes spread within; None: spread across them.
    """

    sweeps: SweepArrays | SweepFiles
    sweep_timestamp_us: np.ndarray
    ego_from_lidar: np.ndarray
    world_from_sweep_ego: np.ndarray
    sweep_boxes: Boxes
    frame_timestamp_us: np.ndarray
    world_from_ego: np.ndarray
    frame_boxes: Boxes
    box_occ_class: np.ndarray
    cam_intrinsics: np.ndarray
    ego_from_cam: np.ndarray
    cam_image_size: np.ndarray
    name: str = ""
    map_areas: MapAreas | None = None

    @property
    def world_from_scene(self) -> np.ndarray:
        """The scene frame: world axes, origin at the first frame's ego position. [4, 4]"""
        return make_transform(np.eye(3), self.world_from_ego[0, :3, 3])


@dataclass
class LabelledSurface:
    """A scene's densified, labelled surfaces, ready to be placed at any frame.

    static_points: [Ms, 3] float32 scene frame, static_classes: [Ms] int64.
    object_points: [Mo, 3] float32 box frame, object_slot: [Mo] int64, object_classes: [Mo] int64.
    ray_ends: [N, 3] float32 scene frame, ray_sweep: [N] int64: every LiDAR return at its sweep time.
    sweep_origin: [S, 3] float32 scene frame.
    """

    static_points: torch.Tensor
    static_classes: torch.Tensor
    object_points: torch.Tensor
    object_slot: torch.Tensor
    object_classes: torch.Tensor
    ray_ends: torch.Tensor
    ray_sweep: torch.Tensor
    sweep_origin: torch.Tensor


@dataclass
class FrameLabels:
    """Labels of the frames `frames` ([F] indices into the scene's T frames).

    semantics: [F, X, Y, Z] uint8 (0..16, 17 free). mask_lidar, mask_camera: [F, X, Y, Z] bool.
    """

    frames: np.ndarray
    semantics: np.ndarray
    mask_lidar: np.ndarray
    mask_camera: np.ndarray


def build_surface(scene: SceneArrays, grid: OccGrid, options: LabelOptions, device: str = "cpu") -> LabelledSurface:
    """Steps 1-3: aggregate, label and densify a scene's LiDAR.

    Static points with no labelled point within `label_search_m` (or in a scene without any
    lidarseg) are 'others' (class 0).
    """
    cell_m = options.cell_m(grid)
    # 1. Aggregate.
    scene_from_world = invert_transform(scene.world_from_scene)
    scene_boxes = scene.sweep_boxes.in_frame(scene_from_world)
    agg = aggregate_sweeps(
        scene.sweeps, scene.ego_from_lidar, scene_from_world @ scene.world_from_sweep_ego,
        scene_boxes, options.ego_box_m, options.box_margin_m, options.ground_margin_m, device,
    )
    classes = agg.classes
    is_static = agg.slot == STATIC
    view = agg.sweep_origin[agg.sweep[is_static]] - agg.points[is_static]  # towards the sensor that saw each static point
    view = view / view.norm(dim=1, keepdim=True).clamp(min=1e-6)

    # 2. Static semantics: cells with labelled points vote; the rest take the nearest labelled cell (of the same map areas).
    static = _cloud(agg.points[is_static], view, torch.full_like(agg.slot[is_static], STATIC_GROUP), cell_m)
    static_labelled = is_static & (classes != UNLABELLED)
    def area_of(points):  # map area codes of scene-frame points, None without a map
        return None if scene.map_areas is None else scene.map_areas.code_of(points, scene.world_from_scene)

    static_area = area_of(static.points)
    if static_labelled.any():
        labelled = agg.points[static_labelled]
        cell_classes = nearest_labels(labelled, classes[static_labelled], static.points, cell_m, options.label_search_m, FIXED_THING_CLASSES,
                                      area_of(labelled), static_area)
    else:
        cell_classes = torch.full((static.points.shape[0],), UNLABELLED, dtype=torch.long, device=device)
    cell_classes = torch.where(cell_classes == UNLABELLED, 0, cell_classes)  # nothing labelled nearby: others
    settled = ~torch.isin(cell_classes, torch.tensor(MOVABLE_CLASSES, device=device))  # a moving thing outside its boxes: dropped
    scene_from_sensor = scene_from_world @ scene.world_from_sweep_ego @ scene.ego_from_lidar
    images = range_images(agg.points_sensor, agg.ring.long(), agg.sweep, agg.slot, len(scene_from_sensor))
    agg.points_sensor = agg.ring = None  # in the range images now
    if options.transient_sweeps > 0:  # transients.py
        settled &= seen_through(static.points, images, scene_from_sensor, options.transient_margin_m, _reach_m(grid)) < options.transient_sweeps
    static = Cloud(static.points[settled], static.view[settled], static.group[settled], cell_m)
    cell_classes = cell_classes[settled]
    static_area = None if static_area is None else static_area[settled]

    # 3. Densify the static scene; carve each object's shape out of its box (carve.py).
    box_class = torch.as_tensor(scene.box_occ_class.astype(np.int64), device=device)
    surface = densify(static, options.backend, options.backend_options)
    static_classes = nearest_labels(static.points, cell_classes, surface.points, cell_m, options.label_search_m, FIXED_THING_CLASSES,
                                    static_area, area_of(surface.points))
    static_classes = torch.where(static_classes == UNLABELLED, 0, static_classes)
    slender = torch.isin(box_class, torch.tensor(SLENDER_CLASSES, device=device))
    carve_cell_m = torch.where(slender, options.object_fine_cell_m, options.object_cell_m)
    objects = carve_objects(
        images, agg.slot, agg.box_points, scene_from_sensor, scene_boxes, box_class,
        carve_cell_m.float(), ~slender, grid.voxel_size_m / 2, options.object_floor_m, options.object_mirror, options.object_prior_free,
        options.object_prior_hit,
    )

    # 4. Each static surface point becomes a small tangent patch (conservative voxelisation); ground holes are filled.
    samples, owner = tangent_patches(surface.points, surface.group, cell_m, options.patch_samples)
    ground_points, ground_classes = fill_ground(surface.points, static_classes, cell_m, options.ground_fill_m, area_of)
    return LabelledSurface(
        static_points=torch.cat([samples, ground_points]),
        static_classes=torch.cat([static_classes[owner], ground_classes]),
        object_points=objects.points,
        object_slot=objects.slot,
        object_classes=box_class[objects.slot],
        ray_ends=agg.points,
        ray_sweep=agg.sweep,
        sweep_origin=agg.sweep_origin,
    )


def label_frames(
    surface: LabelledSurface, scene: SceneArrays, grid: OccGrid, options: LabelOptions, frames=None,
) -> Iterator[FrameLabels]:
    """Step 4, batch by batch over `frames` (indices, default all T)."""
    frames = np.arange(len(scene.frame_timestamp_us)) if frames is None else np.asarray(frames)
    device = surface.static_points.device
    volume = int(np.prod(grid.shape))
    per_batch = max(1, min(options.frames_per_batch, options.batch_memory_mb * 2**20 // (8 * volume)))
    scene_from_world = invert_transform(scene.world_from_scene)
    scene_from_ego = scene_from_world @ scene.world_from_ego  # [T, 4, 4]
    ego_from_scene = invert_transform(scene_from_ego)
    world_from_box = scene.frame_boxes.world_from_box()  # [T, B, 4, 4]
    ray_offsets = torch.searchsorted(surface.ray_sweep, torch.arange(len(scene.sweep_timestamp_us) + 1, device=device)).cpu().numpy()
    reach_m = _reach_m(grid)
    stride_px = options.camera_stride_px(scene.cam_intrinsics, grid)
    voxelize_points = VOXELIZE_POINTS_CPU if device.type == "cpu" else VOXELIZE_POINTS
    for start in range(0, len(frames), per_batch):
        batch = frames[start:start + per_batch]
        ego_from_scene_b = torch.as_tensor(ego_from_scene[batch], dtype=torch.float32, device=device)  # [F, 4, 4]
        # 1-2. Static surface near each frame and object surfaces at its boxes, in the frame's ego frame, voxelised.
        ego_from_box = valid = None
        if surface.object_points.shape[0]:
            ego_from_box = ego_from_scene[batch][:, None] @ scene_from_world @ world_from_box[batch]  # [F, B, 4, 4]
            ego_from_box = torch.as_tensor(ego_from_box, dtype=torch.float32, device=device)
            valid = torch.as_tensor(scene.frame_boxes.valid[batch], device=device)  # [F, B]
        centre = torch.as_tensor(scene_from_ego[batch, :2, 3], dtype=torch.float32, device=device)  # [F, 2]
        semantics = _voxelize_batch(surface, grid, ego_from_scene_b, centre, ego_from_box, valid, reach_m, voxelize_points)
        occupied = semantics != FREE
        # 3. Camera visibility.
        visible = mask_camera(grid, occupied, torch.as_tensor(scene.cam_intrinsics[batch], device=device),
                              torch.as_tensor(scene.ego_from_cam[batch], device=device), scene.cam_image_size, stride_px)
        # 4. LiDAR observation: the rays of the sweeps within the window around each frame.
        origins, ends, ray_frame = _lidar_rays(surface, scene, grid, options, batch, ego_from_scene_b, ray_offsets)
        observed = mask_lidar(grid, occupied, origins, ends, ray_frame)
        yield FrameLabels(batch, semantics.cpu().numpy(), observed.cpu().numpy(), visible.cpu().numpy())


def _voxelize_batch(surface: LabelledSurface, grid: OccGrid, ego_from_scene: torch.Tensor, centre: torch.Tensor,
                    ego_from_box: torch.Tensor | None, valid: torch.Tensor | None, reach_m: float, points_at_once: int) -> torch.Tensor:
    """Semantics [F, X, Y, Z] uint8 of F frames: each frame's static surface within `reach_m` of its ego position
    `centre` [F, 2] (scene frame; 2.8-3.6 M points near each frame of a demo scene at the default cells) and the object
    surfaces at its valid boxes [F, B], into its ego frame (`ego_from_scene` [F, 4, 4], `ego_from_box` [F, B, 4, 4]),
    a frame at a time; then voxelised a few frames at a time, up to `points_at_once` points in one sort.

    `centre` only picks the points that may fall into the grid (the reach holds the grid with a voxel to spare), so
    its rounding does not matter.
    """
    volume = int(np.prod(grid.shape))
    semantics = torch.empty((ego_from_scene.shape[0], *grid.shape), dtype=torch.uint8, device=centre.device)
    keys, labels, first = [], [], 0  # frames first .. f voxelised together
    for f, matrix in enumerate(ego_from_scene):
        near = (surface.static_points[:, :2] - centre[f]).norm(dim=1) <= reach_m
        points = [surface.static_points[near] @ matrix[:3, :3].T + matrix[:3, 3]]
        classes = [surface.static_classes[near]]
        if surface.object_points.shape[0]:
            present = valid[f, surface.object_slot]
            box_matrix = ego_from_box[f, surface.object_slot[present]]
            points.append(torch.einsum("nij,nj->ni", box_matrix[:, :3, :3], surface.object_points[present]) + box_matrix[:, :3, 3])
            classes.append(surface.object_classes[present])
        voxel, inside = voxel_index(grid, torch.cat(points))
        keys.append(voxel + (f - first) * volume)
        labels.append(torch.cat(classes)[inside].to(torch.uint8))
        if sum(k.numel() for k in keys) >= points_at_once or f == len(semantics) - 1:
            semantics[first:f + 1] = voxelize_frames(grid, torch.cat(keys), torch.cat(labels), f + 1 - first)
            keys, labels, first = [], [], f + 1
    return semantics


def _lidar_rays(surface, scene, grid, options, batch, ego_from_scene_b, offsets):
    """Rays of the sweeps within half a window of each frame, one per (frame, sweep, end voxel).

    offsets: [S + 1] where each sweep's rays start in `surface.ray_ends`.
    Returns origins [R, 3], ends [R, 3] (ego frame of their frame) and frame [R] int64.
    """
    device = surface.ray_ends.device
    half_window_us = options.mask_lidar_window_s * 1e6 / 2
    # 1. Each frame's rows of `surface.ray_ends`: its sweeps' rays, frame after frame.
    starts, counts = [], []
    for frame_index in batch:
        gap = np.abs(scene.sweep_timestamp_us - scene.frame_timestamp_us[frame_index])
        sweeps = np.flatnonzero(gap <= max(half_window_us, gap.min()))  # at least the nearest sweep
        starts.append(offsets[sweeps])
        counts.append(offsets[sweeps + 1] - offsets[sweeps])
    frame_rows = np.concatenate([[0], np.cumsum([c.sum() for c in counts])])  # [F + 1]
    owner, k = sparse.ragged_arange(torch.as_tensor(np.concatenate(counts), device=device))
    rows = torch.as_tensor(np.concatenate(starts), device=device)[owner] + k
    # 2. Ends in the ego frame of their frame (a frame's rows through its own transform, as one product).
    matrices = list(ego_from_scene_b)
    end = torch.cat([surface.ray_ends[rows[a:b]] @ m[:3, :3].T + m[:3, 3] for a, b, m in zip(frame_rows[:-1], frame_rows[1:], matrices)])
    sweep = surface.ray_sweep[rows]
    frame = torch.repeat_interleave(torch.arange(len(batch), device=device), torch.as_tensor(np.diff(frame_rows), device=device),
                                    output_size=int(frame_rows[-1]))
    # 3. One ray per (frame, sweep, end voxel): its first, the batch's frames in one sort.
    _, cell = torch.unique(sparse.pack(torch.floor(end / grid.voxel_size_m).long()), return_inverse=True)
    _, first = _first_of_each((frame * len(offsets) + sweep) * (int(cell.max()) + 1) + cell)  # frame-major
    per_frame = np.concatenate([[0], np.cumsum(torch.bincount(frame[first], minlength=len(batch)).cpu().numpy())])
    origin = surface.sweep_origin[sweep[first]]
    origins = torch.cat([origin[a:b] @ m[:3, :3].T + m[:3, 3] for a, b, m in zip(per_frame[:-1], per_frame[1:], matrices)])
    return origins, end[first], frame[first]


def _first_of_each(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique keys [K] and the index of the first occurrence of each in `keys` [N]: [K] int64."""
    unique, inverse = torch.unique(keys, return_inverse=True)
    first = torch.full((unique.numel(),), keys.numel(), dtype=torch.long, device=keys.device)
    first.scatter_reduce_(0, inverse, torch.arange(keys.numel(), device=keys.device), reduce="amin")
    return unique, first


def _reach_m(grid: OccGrid) -> float:
    """How far from the ego a point can fall into the grid, whatever the ego's heading."""
    return float(np.linalg.norm(np.maximum(np.abs(grid.lower_m), np.abs(grid.upper_m))[:2])) + grid.voxel_size_m


def _cloud(points: torch.Tensor, view: torch.Tensor, group: torch.Tensor, cell_m: float) -> Cloud:
    """Bin points into cells of `cell_m` per group: mean point and mean view direction per cell."""
    if points.shape[0] == 0:
        return Cloud(points, view, group, cell_m)
    keys, mean, _ = sparse.mean_by_key(sparse.pack(sparse.cells_of(points, cell_m), group), torch.cat([points, view], 1))
    _, cell_group = sparse.unpack(keys)
    view = mean[:, 3:] / mean[:, 3:].norm(dim=1, keepdim=True).clamp(min=1e-6)
    return Cloud(mean[:, :3].contiguous(), view, cell_group, cell_m)
