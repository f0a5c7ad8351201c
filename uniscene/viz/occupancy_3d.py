"""A 3D view of semantic occupancy as a picture: every exposed voxel face drawn in its class colour.

An orthographic camera looks down at `elevation_deg` from `azimuth_deg` (0: from behind the ego,
along +x). Each voxel face that borders free space (or the grid's edge) and faces the camera is
sampled on a regular pattern dense enough to leave no holes at the image's scale; the samples are
projected, and per pixel the one nearest the camera wins (a z-buffer by sort). Faces are shaded
by their direction (top brightest), so shapes read without lighting. NumPy only: a 200 x 200 x 16
grid takes about a second.
"""

import numpy as np

from uniscene.classes import FREE, OCC_COLORS
from uniscene.grid import OccGrid
from uniscene.viz.bev import occupancy_bev_rgb

BACKGROUND = np.array([250, 250, 250], np.uint8)
# the three face directions a camera above and behind sees (+z top, -x back, and the side facing it), and their shade
FACE_SHADE = {(0, 0, 1): 1.0, (-1, 0, 0): 0.78, (0, -1, 0): 0.62, (0, 1, 0): 0.62}


def _view_axes(azimuth_deg: float, elevation_deg: float) -> tuple:
    """Unit vectors (right, up, towards the camera) of the view, in the grid's frame."""
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    towards = np.array([-np.cos(el) * np.cos(az), -np.cos(el) * np.sin(az), np.sin(el)])  # from the scene to the camera
    right = np.array([np.sin(az), -np.cos(az), 0.0])
    up = np.cross(towards, right)
    return right, up, towards


def occupancy_3d_rgb(semantics: np.ndarray, grid: OccGrid, width_px: int = 800, azimuth_deg: float = 0.0,
                     elevation_deg: float = 40.0) -> np.ndarray:
    """semantics [X, Y, Z] uint8 -> an RGB picture [H, W, 3] uint8 of its occupied voxels."""
    occupied = semantics != FREE
    right, up, towards = _view_axes(azimuth_deg, elevation_deg)
    extent = np.asarray(grid.upper_m) - np.asarray(grid.lower_m)
    corners = np.asarray(grid.lower_m) + extent * np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    u_range = corners @ right
    v_range = corners @ up
    scale = (width_px - 1) / (u_range.max() - u_range.min())  # pixels per metre
    height_px = int(np.ceil((v_range.max() - v_range.min()) * scale)) + 1
    image = np.broadcast_to(BACKGROUND, (height_px, width_px, 3)).copy()
    if not occupied.any():
        return image

    samples_per_edge = max(2, int(np.ceil(grid.voxel_size_m * scale * 1.5)))
    offsets = (np.arange(samples_per_edge) + 0.5) / samples_per_edge - 0.5  # across a face, in voxels
    colours = OCC_COLORS[np.minimum(semantics[occupied], len(OCC_COLORS) - 1)].astype(np.float64)  # [N, 3] per voxel
    ijk = np.argwhere(occupied)
    padded = np.pad(occupied, 1, constant_values=False)
    points, point_colours, depths = [], [], []
    for normal, shade in FACE_SHADE.items():
        normal = np.asarray(normal)
        if normal @ towards <= 0:  # faces away from the camera
            continue
        neighbour = ijk + 1 + normal
        exposed = ~padded[neighbour[:, 0], neighbour[:, 1], neighbour[:, 2]]
        if not exposed.any():
            continue
        centre = np.asarray(grid.lower_m) + (ijk[exposed] + 0.5 + 0.5 * normal) * grid.voxel_size_m  # face centres [F, 3]
        tangents = np.eye(3)[np.abs(normal) == 0]  # the face's two in-plane axes
        grid_uv = np.stack(np.meshgrid(offsets, offsets, indexing="ij"), -1).reshape(-1, 2) @ tangents * grid.voxel_size_m
        face_points = (centre[:, None, :] + grid_uv[None]).reshape(-1, 3)
        points.append(face_points)
        point_colours.append(np.repeat(colours[exposed] * shade, len(grid_uv), axis=0))
        depths.append(face_points @ towards)
    points, point_colours, depths = np.concatenate(points), np.concatenate(point_colours), np.concatenate(depths)
    columns = np.clip(np.round((points @ right - u_range.min()) * scale).astype(np.int64), 0, width_px - 1)
    rows = np.clip(np.round((v_range.max() - points @ up) * scale).astype(np.int64), 0, height_px - 1)
    order = np.argsort(-depths, kind="stable")  # nearest to the camera first
    pixel = (rows * width_px + columns)[order]
    first = np.unique(pixel, return_index=True)[1]
    flat = image.reshape(-1, 3)
    flat[pixel[first]] = np.clip(point_colours[order][first], 0, 255).astype(np.uint8)
    return image


def height_slices_rgb(semantics: np.ndarray, grid: OccGrid, heights_m=(0.0, 1.0, 2.0)) -> list:
    """BEV pictures [X, Y, 3] of the voxel layer at each height (metres in the grid's frame), as the previews draw them."""
    layers = []
    for height in heights_m:
        k = int(np.clip((height - grid.lower_m[2]) // grid.voxel_size_m, 0, semantics.shape[2] - 1))
        layers.append((height, occupancy_bev_rgb(semantics[:, :, k:k + 1])))
    return layers
