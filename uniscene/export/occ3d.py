"""Occupancy in Occ3D-nuScenes' layout: `gts/<scene_name>/<sample_token>/labels.npz` (`uniscene export occ3d`).

One labels.npz per keyframe (2 Hz sample) of an occupancy store (occ_label.zarr, or a generated
chain's occ_gen.zarr), named by the sample token frames.zarr gives that frame, each holding
`semantics` (0..16, 17 free), `mask_lidar` and `mask_camera` as [X, Y, Z] uint8 arrays (200 x 200 x 16
on the default grid, as Occ3D's own files). Occupancy networks that read Occ3D train on it unchanged;
uniscene reads it back with uniscene/data/occ3d.py (`occ_vae.occ3d_root`).

Masks follow Occ3D's definition, not uniscene's (docs/occ3d.md): in Occ3D's files `mask_camera` lies
inside `mask_lidar` (a voxel counts as seen by the cameras only where the LiDAR observed it too),
while uniscene's `mask_camera` also marks free space in the cameras' view that no LiDAR ray reached.
The export writes `mask_camera = mask_camera & mask_lidar`; `mask_lidar` and `semantics` as stored.

Sample tokens are the source dataset's, which the nuScenes export of the same chain keeps too
(uniscene/export/nuscenes.py), so the two exports belong together.

Letters: T frames, K keyframes, X Y Z grid.
"""

from pathlib import Path

import numpy as np

from uniscene.classes import FREE
from uniscene.data.occ3d import FILE_NAME, write_labels_file
from uniscene.errors import UserError
from uniscene.grid import OccGrid
from uniscene.store import atomic_directory, open_store, provenance, write_json_atomic

OCC3D_SHAPE = (200, 200, 16)  # Occ3D-nuScenes' grid: [-40, -40, -1, 40, 40, 5.4] m at 0.4 m
OCCUPANCY_STAGES = ("occ_label", "occ_gen")


def occ3d_masks(mask_lidar: np.ndarray, mask_camera: np.ndarray) -> tuple:
    """(mask_lidar, mask_camera) uint8 in Occ3D's definition from uniscene's bool masks [..., X, Y, Z]: camera inside LiDAR."""
    mask_lidar = np.asarray(mask_lidar, dtype=bool)
    return mask_lidar.astype(np.uint8), (np.asarray(mask_camera, dtype=bool) & mask_lidar).astype(np.uint8)


def _scene_keyframes(frames_path, occupancy_path) -> tuple:
    """(scene, occupancy dataset, [K] occupancy rows of the keyframes, [K] sample tokens) of one scene."""
    frames = open_store(frames_path, "frames")
    occupancy = open_store(occupancy_path)
    stage = occupancy.attrs["uniscene"]["stage"]
    if stage not in OCCUPANCY_STAGES:
        raise UserError(f"store {occupancy_path} holds stage '{stage}': pass an occ_label.zarr or occ_gen.zarr (--occupancy)")
    scene = str(frames.attrs["scene"])
    if str(occupancy.attrs.get("scene")) != scene:
        raise UserError(f"occupancy store {occupancy_path} is of scene '{occupancy.attrs.get('scene')}', frames store {frames_path} "
                        f"of '{scene}': pass the stores of one scene in the same order")
    frame_t = frames["timestamp_us"].values
    occ_t = occupancy["timestamp_us"].values
    rows = np.minimum(np.searchsorted(frame_t, occ_t), len(frame_t) - 1)
    if len(occ_t) == 0 or np.any(frame_t[rows] != occ_t):
        raise UserError(f"occupancy store {occupancy_path} holds frames that frames store {frames_path} lacks: it was made from other "
                        f"frames; rerun the stage that writes it")
    keyframe = frames["is_keyframe"].values[rows]
    if not keyframe.any():
        raise UserError(f"occupancy store {occupancy_path} holds no keyframe (2 Hz sample) of scene '{scene}': Occ3D has labels at "
                        f"samples only; export frames that include a keyframe")
    tokens = frames["sample_token"].values.astype(object)[rows][keyframe]
    return scene, occupancy, np.flatnonzero(keyframe), tokens


def export_occ3d(out, scenes: list, *, config_subset: dict | None = None) -> dict:
    """Write each scene's keyframes ((frames path, occupancy path) pairs) under `out/gts/`, atomically; returns a summary."""
    if not scenes:
        raise UserError("no scene to export: pass the stores of at least one scene")
    opened = [_scene_keyframes(frames, occupancy) for frames, occupancy in scenes]
    names = [scene for scene, *_ in opened]
    if len(set(names)) != len(names):
        raise UserError(f"scenes {sorted({n for n in names if names.count(n) > 1})} are given twice: pass each scene's stores once")
    grids = {(tuple(occ.attrs["grid_range_m"]), float(occ.attrs["voxel_size_m"])) for _, occ, _, _ in opened}
    if len(grids) != 1:
        raise UserError(f"the occupancy stores lie on {len(grids)} grids ({sorted(grids)}): export stores of one grid together")
    grid = OccGrid.from_attrs(opened[0][1].attrs, scenes[0][1])
    counts = {"labels": 0, "camera_voxels_dropped": 0}
    with atomic_directory(out) as tmp:
        for scene, occupancy, rows, tokens in opened:
            for row, token in zip(rows, tokens):
                frame = occupancy.isel(frame=int(row))
                semantics = frame["semantics"].values
                if semantics.max(initial=0) > FREE:
                    raise UserError(f"occupancy store of scene '{scene}' holds class {int(semantics.max())} (classes are 0..{FREE}): "
                                    f"rerun the stage that writes it")
                mask_lidar, mask_camera = occ3d_masks(frame["mask_lidar"].values, frame["mask_camera"].values)
                counts["camera_voxels_dropped"] += int(frame["mask_camera"].values.sum()) - int(mask_camera.sum())
                write_labels_file(tmp / "gts" / scene / token / FILE_NAME, semantics, mask_lidar, mask_camera)
                counts["labels"] += 1
        summary = {"format": "occ3d", "scenes": names, **counts, "grid_shape": list(grid.shape),
                   "grid": {"range_m": list(grid.range_m), "voxel_size_m": grid.voxel_size_m},
                   "occ3d_grid": tuple(grid.shape) == OCC3D_SHAPE,
                   "mask_camera": "Occ3D's: uniscene's mask_camera & mask_lidar"}
        write_json_atomic(tmp / "export.json", {**summary, "provenance": provenance(
            "export_occ3d", config_subset or {}, [str(p) for pair in scenes for p in pair])})
    return summary


def labels_path(root, scene: str, sample_token: str) -> Path:
    """`root/gts/<scene>/<sample_token>/labels.npz`."""
    return Path(root) / "gts" / scene / sample_token / FILE_NAME
