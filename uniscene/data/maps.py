"""nuScenes map expansion: reading a map (nuscenes-devkit's `NuScenesMap`) and rasterising its
layers once per scene at a fine resolution, axis-aligned with the world frame.

Both the layout stage (map channels) and the labeller (ground classes under the occupancy) read
maps through here; neither imports the other.

Letters: L map layers, H W fine map pixels.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uniscene.classes import MAP_LAYER_NAMES
from uniscene.errors import UserError
from uniscene.grid import OccGrid

# Map layers that are lines (drawn 2 fine pixels wide by the devkit); the others are areas.
LINE_LAYERS = ("road_divider", "lane_divider")
MAP_EXPANSION_NAME = "nuScenes-map-expansion-v1.3"


@dataclass(frozen=True)
class MapRaster:
    """A scene's map layers at fine resolution, axis-aligned with the world frame.

    masks: [L, H, W] uint8 (0/1), row = world y, column = world x.
    origin_m: world (x, y) of the centre of pixel [0, 0] (the devkit fills a pixel whose centre
        lies in a polygon after rounding vertices to pixel centres).
    """

    masks: np.ndarray
    origin_m: tuple
    resolution_m: float

    def pixel_from_world(self) -> np.ndarray:
        """[3, 3] affine taking world (x, y, 1) to fine-pixel (column, row, 1) coordinates."""
        scale = 1.0 / self.resolution_m
        return np.array([[scale, 0, -self.origin_m[0] * scale], [0, scale, -self.origin_m[1] * scale], [0, 0, 1.0]])


# ---------------------------------------------------------------------------------------------
# Map files


def expansion_path(dataroot, map_name: str) -> Path:
    return Path(dataroot) / "maps" / "expansion" / f"{map_name}.json"


def load_map(dataroot, map_name: str):
    """nuscenes-devkit's NuScenesMap of `map_name`, with a UserError naming the file when it is missing."""
    from nuscenes.map_expansion.map_api import locations

    from uniscene.data import reader

    path = expansion_path(dataroot, map_name)
    if not path.is_file():
        raise UserError(
            f"map expansion file {path} not found: download {MAP_EXPANSION_NAME} from https://www.nuscenes.org/download "
            f"and extract it into {Path(dataroot) / 'maps'} so that {path} exists"
        )
    if map_name not in locations:
        raise UserError(f"map '{map_name}' (the scene's log location) is not a nuScenes map; nuscenes-devkit knows {locations}")
    try:
        return reader.open_map(dataroot, map_name)
    except Exception as error:  # the devkit raises a bare Exception for maps older than v1.3, KeyError for bad files
        raise UserError(f"map expansion file {path} cannot be read ({error!r}): download {MAP_EXPANSION_NAME} again") from error


# ---------------------------------------------------------------------------------------------
# Fine raster, once per scene


def scene_region_m(world_from_ego: np.ndarray, grid: OccGrid, margin_m: float) -> tuple:
    """World (x_min, y_min, x_max, y_max) that every frame's grid can reach, plus a margin.

    world_from_ego: [T, 4, 4].
    """
    corners = np.array([[grid.lower_m[0], grid.lower_m[1]], [grid.upper_m[0], grid.lower_m[1]],
                        [grid.lower_m[0], grid.upper_m[1]], [grid.upper_m[0], grid.upper_m[1]]])
    reach_m = float(np.max(np.linalg.norm(corners, axis=1))) + margin_m  # any yaw
    positions = world_from_ego[:, :2, 3]  # [T, 2]
    lower = positions.min(0) - reach_m
    upper = positions.max(0) + reach_m
    return float(lower[0]), float(lower[1]), float(upper[0]), float(upper[1])


def _explode_lines(geometry):
    """Split multi-part lines: the devkit's line drawing iterates over a MultiLineString (shapely 1 only)."""
    if geometry.geom_type in ("MultiLineString", "GeometryCollection"):
        return [part for item in geometry.geoms for part in _explode_lines(item)]
    return [geometry] if geometry.geom_type == "LineString" else []


def rasterise_map(nusc_map, region_m: tuple, resolution_m: float) -> MapRaster:
    """The 8 layout map layers of `nusc_map` over a world region (x_min, y_min, x_max, y_max).

    The devkit's `get_map_mask` in two steps (`get_map_geom`, `map_geom_to_mask`), so that lines
    cut into several pieces by the region's edge can be split first.
    """
    x_min, y_min, x_max, y_max = region_m
    width = int(np.ceil((x_max - x_min) / resolution_m))
    height = int(np.ceil((y_max - y_min) / resolution_m))
    patch_w, patch_h = width * resolution_m, height * resolution_m
    patch_box = (x_min + patch_w / 2, y_min + patch_h / 2, patch_h, patch_w)
    explorer = nusc_map.explorer
    geometry = explorer.get_map_geom(patch_box, 0.0, list(MAP_LAYER_NAMES))
    geometry = [(name, [part for geom in geoms for part in _explode_lines(geom)] if name in LINE_LAYERS else geoms)
                for name, geoms in geometry]
    masks = explorer.map_geom_to_mask(geometry, (0.0, 0.0, patch_h, patch_w), (height, width))  # [L, H, W]
    return MapRaster(masks=masks.astype(np.uint8), origin_m=(x_min, y_min), resolution_m=resolution_m)
