"""PNG previews for the report: colour-coded BEV layouts and occupancy, a few frames side by side.

Images are drawn as a driver's map: forward (+x) up, left (+y) to the left, axes in metres.
Letters: T frames, C channels, X Y grid cells.
"""

from pathlib import Path

import numpy as np

from uniscene.classes import FREE, LAYOUT_CHANNEL_NAMES, MAP_LAYER_NAMES, OCC_CLASS_ID, OCC_CLASS_NAMES, OCC_COLORS
from uniscene.grid import OccGrid
from uniscene.store import atomic_file

# Display colours (RGB) of the layout channels: map layers, then objects in the occupancy colours.
LAYOUT_COLORS = np.concatenate([
    np.array([
        (105, 105, 105),  # drivable_area
        (240, 240, 240),  # ped_crossing
        (170, 110, 190),  # walkway
        (230, 40, 40),  # stop_line
        (70, 130, 180),  # carpark_area
        (255, 215, 0),  # road_divider
        (250, 250, 210),  # lane_divider
        (130, 130, 100),  # road_block
    ], dtype=np.uint8),
    OCC_COLORS[[OCC_CLASS_ID[name] for name in LAYOUT_CHANNEL_NAMES[len(MAP_LAYER_NAMES):]]],
])  # [C, 3]
# Areas first (road blocks and car parks under the drivable area's markings), lines and objects on top.
_PAINT_ORDER = [LAYOUT_CHANNEL_NAMES.index(name) for name in (
    "drivable_area", "road_block", "carpark_area", "walkway", "ped_crossing", "stop_line", "road_divider", "lane_divider",
)] + list(range(len(MAP_LAYER_NAMES), len(LAYOUT_CHANNEL_NAMES)))
_ALPHA = {"road_block": 0.35}  # road blocks cover roads: a tint, not a fill
BACKGROUND = np.array((25, 25, 25), dtype=np.float32)
EGO_LENGTH_M, EGO_WIDTH_M = 4.1, 1.7  # about the nuScenes car


def layout_rgb(layout: np.ndarray) -> np.ndarray:
    """Colour-coded layout of one frame: [C, X, Y] bool -> [X, Y, 3] uint8 (indexed like the grid)."""
    if layout.ndim != 3 or layout.shape[0] != len(LAYOUT_CHANNEL_NAMES):
        raise ValueError(f"layout must be [{len(LAYOUT_CHANNEL_NAMES)}, X, Y], got {layout.shape}")
    rgb = np.broadcast_to(BACKGROUND, layout.shape[1:] + (3,)).copy()
    for channel in _PAINT_ORDER:
        alpha = _ALPHA.get(LAYOUT_CHANNEL_NAMES[channel], 1.0)
        mask = layout[channel]
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * LAYOUT_COLORS[channel]
    return rgb.round().astype(np.uint8)


def preview_frames(num_frames: int, count: int) -> list[int]:
    """`count` frame indices spread evenly over the scene, first and last included."""
    return sorted(set(np.linspace(0, num_frames - 1, min(count, num_frames)).round().astype(int).tolist()))


def occupancy_bev_rgb(semantics: np.ndarray, visible: np.ndarray | None = None) -> np.ndarray:
    """Bird's-eye view of one frame's occupancy [X, Y, Z] uint8: the class colour of each column's highest
    occupied voxel -> [X, Y, 3] uint8. With `visible` [X, Y, Z] bool, only voxels it holds count."""
    occupied = semantics != FREE
    if visible is not None:
        occupied &= visible
    top = semantics.shape[2] - 1 - np.argmax(occupied[:, :, ::-1], axis=2)  # [X, Y] highest occupied layer
    cls = np.take_along_axis(semantics, top[..., None], axis=2)[..., 0]
    rgb = OCC_COLORS[np.minimum(cls, len(OCC_COLORS) - 1)].astype(np.float32)
    rgb[~occupied.any(2)] = BACKGROUND
    return rgb.round().astype(np.uint8)


def save_layout_preview(path, layout: np.ndarray, grid: OccGrid, frame_indices, titles=None) -> Path:
    """A PNG of a few frames of a layout [T, C, X, Y] bool, ego marked, with a legend; written atomically."""
    from matplotlib.patches import Patch

    frame_indices = list(frame_indices)
    handles = [Patch(color=LAYOUT_COLORS[c] / 255, label=LAYOUT_CHANNEL_NAMES[c]) for c in range(len(LAYOUT_CHANNEL_NAMES))]
    return _save_bev_figure(path, [[layout_rgb(layout[i]) for i in frame_indices]], grid,
                            titles or [f"frame {i}" for i in frame_indices], handles)


def save_occupancy_preview(path, semantics: np.ndarray, mask_camera: np.ndarray, grid: OccGrid, frame_indices, titles=None) -> Path:
    """A PNG of a few frames of semantic occupancy [T, X, Y, Z] seen from above: all voxels (top row) and the
    voxels inside mask_camera [T, X, Y, Z] (bottom row); written atomically."""
    from matplotlib.patches import Patch

    frame_indices = list(frame_indices)
    rows = [[occupancy_bev_rgb(semantics[i]) for i in frame_indices],
            [occupancy_bev_rgb(semantics[i], mask_camera[i]) for i in frame_indices]]
    titles = titles or [f"frame {i}" for i in frame_indices]
    present = np.unique(np.concatenate([semantics[i][semantics[i] != FREE] for i in frame_indices]))
    handles = [Patch(color=OCC_COLORS[c] / 255, label=OCC_CLASS_NAMES[c]) for c in present]
    return _save_bev_figure(path, rows, grid, titles + [f"{t}, in mask_camera" for t in titles], handles)


def _save_bev_figure(path, rows, grid: OccGrid, titles, handles) -> Path:
    """Rows of [X, Y, 3] BEV images as a driver's map, ego marked, titles row by row, a legend below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Polygon

    x_min, y_min = grid.lower_m[:2]
    x_max, y_max = grid.upper_m[:2]
    columns = len(rows[0])
    fig, axes = plt.subplots(len(rows), columns, figsize=(3.6 * columns, 0.6 + 4.0 * len(rows)), squeeze=False)
    for ax, image, title in zip(axes.reshape(-1), [image for row in rows for image in row], titles):
        # [X, Y, 3] -> image rows from +x down, columns from +y (left) to the right.
        ax.imshow(image[::-1, ::-1], extent=(y_max, y_min, x_min, x_max), interpolation="nearest")
        ego = np.array([(0, EGO_LENGTH_M / 2), (EGO_WIDTH_M / 2, -EGO_LENGTH_M / 2), (-EGO_WIDTH_M / 2, -EGO_LENGTH_M / 2)])
        ax.add_patch(Polygon(ego, closed=True, facecolor="white", edgecolor="black", linewidth=0.8))  # (y, x) points
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("y (m, left)", fontsize=7)
        ax.set_ylabel("x (m, forward)", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.grid(False)
    handles = list(handles) + [Patch(facecolor="white", edgecolor="black", label="ego")]
    fig.legend(handles=handles, loc="lower center", ncol=7, fontsize=6, frameon=False)
    fig.tight_layout(rect=(0, 0.1 / len(rows), 1, 1))
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return Path(path)
