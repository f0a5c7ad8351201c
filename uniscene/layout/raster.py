"""BEV layouts: map layers and object footprints on the occupancy grid's x-y plane.

A layout is [T, C, X, Y] bool with the C = 18 channels of `classes.LAYOUT_CHANNEL_NAMES`:
the 8 map layers, then the 10 detection classes. Cell [i, j] is the ego-frame square
x in lower_x + i*voxel .. +voxel (forward), y in lower_y + j*voxel .. +voxel (left), as the
occupancy's `OccGrid`.

How it is made:
1. The map (nuScenes map expansion, read by nuscenes-devkit's `NuScenesMap`) is rasterised
   once per scene at a fine resolution over the region that the scene's ego poses cover
   (`rasterise_map`).
2. Every frame resamples that raster at its ego pose (`warp_map`, an affine warp): each cell
   takes S x S points, each reads the fine pixel it falls in (nearest), and a cell is set where
   the fraction of its points in a layer reaches `area_threshold` (areas) or is above zero
   (divider lines).
3. Boxes become filled oriented rectangles in their class' channel (`box_footprints`): a cell
   is set where the footprint covers part of it (or, with box_rule center, its centre), the
   same rule that decides which voxels an object occupies.

Letters: T frames, B boxes, C channels, L map layers, X Y grid cells, H W fine map pixels,
S supersamples per cell edge.
"""

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from uniscene.classes import DETECTION_CLASS_NAMES, LAYOUT_CHANNEL_NAMES, MAP_LAYER_NAMES
from uniscene.data.maps import LINE_LAYERS, MapRaster
from uniscene.geometry import invert_transform, quaternion_to_matrix
from uniscene.grid import OccGrid
from uniscene.settings import Settings

BOX_RULES = ("overlap", "center")  # when a box footprint sets a cell (see `box_footprints`)
NUM_MAP_LAYERS = len(MAP_LAYER_NAMES)  # 8
NUM_OBJECT_CHANNELS = len(DETECTION_CLASS_NAMES)  # 10


@dataclass(frozen=True)
class LayoutSettings(Settings):
    """The `layout:` config section (uniscene/schemas/config.schema.yaml: meanings and defaults)."""

    SECTION = "layout"

    map_resolution_m: float  # fine raster pixel edge
    map_margin_m: float  # extra map around the grid's reach from the ego path
    supersample: int  # S: samples per cell edge when resampling the fine raster
    area_threshold: float  # fraction of a cell that a map area must cover
    frame_batch: int  # frames resampled together
    preview_frames: int  # frames shown in the PNG preview
    box_rule: str  # when a box footprint sets a cell: overlap (the occupancy's rule) or center


# ---------------------------------------------------------------------------------------------
# Per-frame resampling


def _cell_samples_m(grid: OccGrid, supersample: int) -> np.ndarray:
    """Ego-frame (x, y) of S x S points per cell, [X*S, Y*S, 2], laid out so [X, S, Y, S] reshapes back."""
    num_x, num_y = grid.shape[:2]
    step = grid.voxel_size_m / supersample
    xs = grid.lower_m[0] + (np.arange(num_x * supersample) + 0.5) * step
    ys = grid.lower_m[1] + (np.arange(num_y * supersample) + 0.5) * step
    return np.stack(np.meshgrid(xs, ys, indexing="ij"), axis=-1)


def warp_map(raster: MapRaster, world_from_ego: np.ndarray, grid: OccGrid, *, supersample: int = 3,
             area_threshold: float = 0.5, device: str = "cpu", frame_batch: int = 32) -> np.ndarray:
    """Map layers at each frame's ego pose: world_from_ego [T, 4, 4] -> [T, L, X, Y] bool.

    Each cell's S x S sample points (on the ego's x-y plane, z = 0) read the fine pixel they fall
    in; a cell is set where at least ceil(area_threshold * S * S) of them hit an area layer, or
    one of them a line layer. The 8 layers of a fine pixel travel as the 8 bytes of one int64,
    so a point costs one gather, and the S * S points of a cell are counted by one sum of int64
    (a byte per layer; S <= 11 keeps every count in its byte). Outside the raster there is no map.
    """
    world_from_ego = np.asarray(world_from_ego, dtype=np.float64)
    if world_from_ego.ndim != 3 or world_from_ego.shape[1:] != (4, 4):
        raise ValueError(f"world_from_ego must be [T, 4, 4], got {world_from_ego.shape}")
    if len(raster.masks) != NUM_MAP_LAYERS:
        raise ValueError(f"raster must hold the {NUM_MAP_LAYERS} map layers, got {len(raster.masks)}")
    s = int(supersample)
    if not 1 <= s <= 11:
        raise ValueError(f"supersample must be 1..11 (a cell's count of points must fit a byte), got {supersample}")
    num_frames = world_from_ego.shape[0]
    num_x, num_y = grid.shape[:2]
    height, width = raster.masks.shape[1:]

    # 1. The raster as one int64 per pixel, byte l = layer l; its border is cleared, so that points
    #    clamped onto it from outside read no map.
    layers = raster.masks.astype(bool).astype(np.uint8)  # [L, H, W]
    layers[:, [0, -1], :] = 0
    layers[:, :, [0, -1]] = 0
    lanes = torch.from_numpy(np.ascontiguousarray(layers.reshape(NUM_MAP_LAYERS, -1).T).view(np.int64)[:, 0]).to(device)  # [H*W]
    needed = np.array([1 if name in LINE_LAYERS else min(s * s, max(1, int(np.ceil(area_threshold * s * s - 1e-6))))
                       for name in MAP_LAYER_NAMES], dtype=np.uint8)
    bias = int(np.array(128 - needed, dtype=np.uint8).view(np.int64)[0])  # count + bias reaches bit 7 of its byte iff count >= needed

    # 2. Sample points to fine pixels: (column, row) = pixel_from_plane @ (x, y, 1), separable in x and y.
    world_from_plane = world_from_ego[:, [0, 1, 3]][:, :, [0, 1, 3]]  # [T, 3, 3] (x, y, 1) -> (x, y, 1)
    pixel_from_plane = torch.from_numpy((raster.pixel_from_world() @ world_from_plane)[:, :2]).to(device, torch.float32)
    samples = _cell_samples_m(grid, s)  # [X*S, Y*S, 2]
    xs = torch.from_numpy(samples[:, 0, 0]).to(device, torch.float32)  # [X*S]
    ys = torch.from_numpy(samples[0, :, 1]).to(device, torch.float32)  # [Y*S]

    out = np.empty((num_frames, NUM_MAP_LAYERS, num_x, num_y), dtype=bool)
    for start in tqdm(range(0, num_frames, frame_batch), desc="layout: map layers", unit="batch", disable=None):
        a = pixel_from_plane[start:start + frame_batch]  # [t, 2, 3]
        column = (a[:, 0, 0, None] * xs + a[:, 0, 2, None] + 0.5)[:, :, None] + (a[:, 0, 1, None] * ys)[:, None, :]
        row = (a[:, 1, 0, None] * xs + a[:, 1, 2, None] + 0.5)[:, :, None] + (a[:, 1, 1, None] * ys)[:, None, :]
        index = row.clamp_(0, height - 1).to(torch.int64).mul_(width).add_(column.clamp_(0, width - 1).to(torch.int64))
        # 3. Count each cell's points per layer and threshold, byte-wise.
        counts = lanes[index].view(-1, num_x, s, num_y, s).sum((2, 4))  # [t, X, Y] int64, byte l = count of layer l
        cells = ((counts + bias).view(torch.uint8).view(-1, num_x, num_y, NUM_MAP_LAYERS) >> 7).bool()  # [t, X, Y, L]
        out[start:start + frame_batch] = cells.permute(0, 3, 1, 2).cpu().numpy()
    return out


# ---------------------------------------------------------------------------------------------
# 3. Box footprints


def boxes_in_ego(world_from_ego: np.ndarray, box_center: np.ndarray, box_rotation: np.ndarray):
    """Box centres and headings in each frame's ego frame.

    world_from_ego [T, 4, 4], box_center [T, B, 3] (world), box_rotation [T, B, 4] (w, x, y, z)
    -> (center_ego_m [T, B, 2], yaw_ego_rad [T, B]).
    """
    ego_from_world = invert_transform(np.asarray(world_from_ego, dtype=np.float64))  # [T, 4, 4]
    center = np.einsum("tij,tbj->tbi", ego_from_world[:, :3, :3], box_center) + ego_from_world[:, None, :3, 3]
    rotation = np.einsum("tij,tbjk->tbik", ego_from_world[:, :3, :3], quaternion_to_matrix(box_rotation))
    return center[..., :2], np.arctan2(rotation[..., 1, 0], rotation[..., 0, 0])


def _check_boxes(world_from_ego, box_center, box_size, box_rotation, box_valid, rule):
    if rule not in BOX_RULES:
        raise ValueError(f"rule must be one of {BOX_RULES}, got {rule!r}")
    num_frames = np.shape(world_from_ego)[0]
    num_boxes = np.shape(box_center)[1] if np.ndim(box_center) == 3 else -1
    for name, array, tail in (("box_center", box_center, (3,)), ("box_size", box_size, (3,)),
                              ("box_rotation", box_rotation, (4,)), ("box_valid", box_valid, ())):
        if np.shape(array) != (num_frames, num_boxes) + tail:
            raise ValueError(f"{name} must be [T, B{', ' if tail else ''}{', '.join(map(str, tail))}] with T = {num_frames} "
                             f"frames of world_from_ego, got {np.shape(array)}")


def _box_cell_batches(world_from_ego, box_center, box_size, box_rotation, use, grid: OccGrid, rule: str, device: str,
                      frame_batch: int):
    """Yield, per batch of frames, which cells of a window around each used box its footprint sets.

    use [T, B] bool: the boxes to draw. Yields (start, keep [B'] box slots, inside [t, B', W, W] bool,
    cells_i [t, B', W] and cells_j [t, B', W] int64 grid indices of the window's rows and columns).
    """
    world_from_ego = np.asarray(world_from_ego, dtype=np.float64)
    num_frames = world_from_ego.shape[0]
    num_x, num_y = grid.shape[:2]
    center_ego, yaw = boxes_in_ego(world_from_ego, np.asarray(box_center, dtype=np.float64),
                                   np.asarray(box_rotation, dtype=np.float64))  # [T, B, 2], [T, B]
    half_w = np.asarray(box_size, dtype=np.float64)[..., 0] / 2
    half_l = np.asarray(box_size, dtype=np.float64)[..., 1] / 2
    voxel = grid.voxel_size_m
    pad = voxel / 2 if rule == "overlap" else 0.0  # a cell's half edge, by which the overlap rule reaches further
    radius = np.hypot(half_w, half_l) + 2 * pad  # [T, B] metres: centre to corner, plus more than a cell's half-diagonal
    # Boxes that cannot reach the grid are dropped before the per-cell work.
    grid_reach = np.maximum(np.abs(grid.lower_m[:2]), np.abs(grid.upper_m[:2]))
    use = use & np.all(np.abs(center_ego) <= grid_reach + radius[..., None], axis=-1)
    keep = np.flatnonzero(use.any(0))  # box slots used in some frame
    if keep.size == 0:
        return

    # Each box is tested only on a square window of cells around it, as big as the largest box needs.
    window = min(int(np.ceil(2 * radius[use].max() / voxel)) + 2, max(num_x, num_y))
    first_i = np.maximum(np.floor((center_ego[..., 0] - radius - grid.lower_m[0]) / voxel), 0).astype(np.int64)
    first_j = np.maximum(np.floor((center_ego[..., 1] - radius - grid.lower_m[1]) / voxel), 0).astype(np.int64)

    def tensor(array, dtype=torch.float32):
        return torch.from_numpy(np.ascontiguousarray(array[:, keep])).to(device, dtype)

    cx, cy = tensor(center_ego[..., 0]), tensor(center_ego[..., 1])  # [T, B']
    cos, sin = tensor(np.cos(yaw)), tensor(np.sin(yaw))
    hw, hl = tensor(half_w)[..., None, None], tensor(half_l)[..., None, None]  # [T, B', 1, 1]
    use_t = tensor(use, torch.bool)
    offsets = torch.arange(window, device=device)
    cells_i = tensor(first_i, torch.int64)[..., None] + offsets  # [T, B', W] cell indices of each window
    cells_j = tensor(first_j, torch.int64)[..., None] + offsets
    for start in tqdm(range(0, num_frames, frame_batch), desc="layout: boxes", unit="batch", disable=None):
        t = slice(start, min(start + frame_batch, num_frames))
        dx = (grid.lower_m[0] + (cells_i[t] + 0.5) * voxel).float()[..., :, None] - cx[t, :, None, None]  # [t, B', W, 1]
        dy = (grid.lower_m[1] + (cells_j[t] + 0.5) * voxel).float()[..., None, :] - cy[t, :, None, None]  # [t, B', 1, W]
        c, s = cos[t, :, None, None], sin[t, :, None, None]  # [t, B', 1, 1]
        along = c * dx + s * dy  # [t, B', W, W] along the heading
        across = c * dy - s * dx
        if rule == "overlap":  # no separating axis among x, y, the heading and its normal
            reach = pad * (c.abs() + s.abs())
            inside = ((along.abs() < hl[t] + reach) & (across.abs() < hw[t] + reach)
                      & (dx.abs() < pad + hl[t] * c.abs() + hw[t] * s.abs())
                      & (dy.abs() < pad + hl[t] * s.abs() + hw[t] * c.abs()))
        else:
            inside = (along.abs() <= hl[t]) & (across.abs() <= hw[t])
        inside &= use_t[t, :, None, None] & (cells_i[t] < num_x)[..., :, None] & (cells_j[t] < num_y)[..., None, :]
        yield start, keep, inside, cells_i[t], cells_j[t]


def box_footprints(world_from_ego: np.ndarray, box_center: np.ndarray, box_size: np.ndarray, box_rotation: np.ndarray,
                   box_valid: np.ndarray, box_class: np.ndarray, grid: OccGrid, *, rule: str = "overlap",
                   device: str = "cpu", frame_batch: int = 32) -> np.ndarray:
    """Filled oriented box footprints per detection class -> [T, 10, X, Y] bool.

    world_from_ego [T, 4, 4]; box_center [T, B, 3] world; box_size [T, B, 3] (w, l, h) metres;
    box_rotation [T, B, 4] world (w, x, y, z); box_valid [T, B] bool; box_class [B] or [T, B] int,
    detection class 0..9 or -1 (none). rule "overlap": a cell is set where the footprint covers
    part of it (positive area; the occupancy's rule for voxels; separating-axis test of the cell
    square and the rectangle); "center": where the cell's centre lies in the footprint.
    """
    _check_boxes(world_from_ego, box_center, box_size, box_rotation, box_valid, rule)
    num_frames, num_boxes = np.shape(box_valid)
    num_x, num_y = grid.shape[:2]
    box_class = np.broadcast_to(np.asarray(box_class, dtype=np.int64), (num_frames, num_boxes))
    use = np.asarray(box_valid, dtype=bool) & (box_class >= 0) & (box_class < NUM_OBJECT_CHANNELS)
    klass = torch.from_numpy(np.where(use, box_class, 0)).to(device)  # [T, B]
    out = np.zeros((num_frames, NUM_OBJECT_CHANNELS, num_x, num_y), dtype=bool)
    for start, keep, inside, cells_i, cells_j in _box_cell_batches(world_from_ego, box_center, box_size, box_rotation,
                                                                   use, grid, rule, device, frame_batch):
        num_t = inside.shape[0]
        frame = torch.arange(num_t, device=device)[:, None, None, None]
        channel = klass[start:start + num_t][:, torch.from_numpy(keep).to(device), None, None]  # [t, B', 1, 1]
        flat = ((frame * NUM_OBJECT_CHANNELS + channel) * num_x + cells_i[..., :, None]) * num_y + cells_j[..., None, :]
        channels = torch.zeros(num_t * NUM_OBJECT_CHANNELS * num_x * num_y, dtype=torch.bool, device=device)
        channels[flat[inside]] = True  # [t, 10, X, Y] flat
        out[start:start + num_t] = channels.reshape(num_t, NUM_OBJECT_CHANNELS, num_x, num_y).cpu().numpy()
    return out


def box_cells(world_from_ego: np.ndarray, box_center: np.ndarray, box_size: np.ndarray, box_rotation: np.ndarray,
              box_valid: np.ndarray, grid: OccGrid, *, rule: str = "overlap", device: str = "cpu",
              frame_batch: int = 32) -> np.ndarray:
    """Every (frame, box, x, y) cell that a box's footprint sets, [N, 4] int64 (arguments as `box_footprints`).

    The footprints of single objects, e.g. to score each box against its object's voxels.
    """
    _check_boxes(world_from_ego, box_center, box_size, box_rotation, box_valid, rule)
    found = [np.zeros((0, 4), dtype=np.int64)]
    for start, keep, inside, cells_i, cells_j in _box_cell_batches(world_from_ego, box_center, box_size, box_rotation,
                                                                   np.asarray(box_valid, dtype=bool), grid, rule, device,
                                                                   frame_batch):
        t, b, wi, wj = inside.nonzero(as_tuple=True)
        found.append(torch.stack([t + start, torch.from_numpy(keep).to(device)[b], cells_i[t, b, wi], cells_j[t, b, wj]], 1)
                     .cpu().numpy())
    return np.concatenate(found)


# ---------------------------------------------------------------------------------------------
# The whole layout


def rasterise_layout(raster: MapRaster, world_from_ego, box_center, box_size, box_rotation, box_valid, box_class,
                     grid: OccGrid, settings: LayoutSettings, device: str = "cpu") -> np.ndarray:
    """The 18-channel layout of every frame, [T, C, X, Y] bool (arguments as `warp_map`, `box_footprints`)."""
    map_cells = warp_map(raster, world_from_ego, grid, supersample=settings.supersample,
                         area_threshold=settings.area_threshold, device=device, frame_batch=settings.frame_batch)
    object_cells = box_footprints(world_from_ego, box_center, box_size, box_rotation, box_valid, box_class, grid,
                                  rule=settings.box_rule, device=device, frame_batch=settings.frame_batch)
    return np.concatenate([map_cells, object_cells], axis=1)


def layout_dataset(layout: np.ndarray, timestamp_us, world_from_ego, box_center, box_size, box_rotation, box_valid,
                   box_class, box_instance_token, grid: OccGrid, attrs: dict):
    """The layout.zarr dataset (docs/stores.md): the layout and the boxes it was drawn from.

    layout [T, C, X, Y] bool; box_class [T, B] int8 (detection class per frame, so that an edit can
    re-class an object in a frame range); the other box arrays as in frames.zarr.
    """
    import xarray as xr

    if layout.ndim != 4 or layout.shape[1] != len(LAYOUT_CHANNEL_NAMES) or layout.shape[2:] != grid.shape[:2]:
        raise ValueError(f"layout must be [T, {len(LAYOUT_CHANNEL_NAMES)}, {grid.shape[0]}, {grid.shape[1]}], got {layout.shape}")
    num_frames, num_boxes = np.shape(box_valid)
    return xr.Dataset(
        {
            "layout": (("frame", "channel", "x", "y"), layout.astype(bool)),
            "timestamp_us": (("frame",), np.asarray(timestamp_us, dtype=np.int64)),
            "world_from_ego": (("frame", "row", "col"), np.asarray(world_from_ego, dtype=np.float64)),
            "box_center": (("frame", "box", "xyz"), np.asarray(box_center, dtype=np.float64).reshape(num_frames, num_boxes, 3)),
            "box_size": (("frame", "box", "xyz"), np.asarray(box_size, dtype=np.float32).reshape(num_frames, num_boxes, 3)),
            "box_rotation": (("frame", "box", "quat"), np.asarray(box_rotation, dtype=np.float64).reshape(num_frames, num_boxes, 4)),
            "box_valid": (("frame", "box"), np.asarray(box_valid, dtype=bool)),
            "box_class": (("frame", "box"), np.broadcast_to(np.asarray(box_class, dtype=np.int8), (num_frames, num_boxes)).copy()),
            "box_instance_token": (("box",), np.asarray(box_instance_token, dtype=object)),
        },
        attrs={
            "channel_names": list(LAYOUT_CHANNEL_NAMES),
            **grid.to_attrs(),
            **attrs,
        },
    )
