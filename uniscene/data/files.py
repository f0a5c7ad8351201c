"""Reading nuScenes sensor files: LiDAR sweeps (`.pcd.bin`) and lidarseg labels (`_lidarseg.bin`)."""

from pathlib import Path

import numpy as np

from uniscene.errors import UserError

SWEEP_COLUMNS = ("x", "y", "z", "intensity", "ring")
POINT_BYTES = 4 * len(SWEEP_COLUMNS)  # float32 per column


def read_sweep(path) -> np.ndarray:
    """Points of a LIDAR_TOP sweep in the sensor frame, [N, 5] float32 (x, y, z, intensity, ring)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"LiDAR sweep {path} is missing: restore it from the dataset archive (or rerun `uniscene synth`)")
    size = path.stat().st_size
    if size == 0 or size % POINT_BYTES:  # np.fromfile would drop a cut number silently
        raise UserError(
            f"LiDAR sweep {path} is {'empty' if size == 0 else 'truncated'} ({size} bytes, not a whole number of "
            f"{POINT_BYTES}-byte points of 5 float32): restore it from the dataset archive (or rerun `uniscene synth`)"
        )
    raw = np.fromfile(path, dtype=np.float32)
    return raw.reshape(-1, 5)


def read_lidarseg(path, num_points: int) -> np.ndarray:
    """Per-point lidarseg class indices (0..31), [N] uint8, checked against the sweep's point count."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"lidarseg file {path} is missing: install nuScenes-lidarseg into the dataroot or restore the file")
    labels = np.fromfile(path, dtype=np.uint8)
    if labels.size != num_points:
        raise UserError(f"lidarseg file {path} has {labels.size} labels for a sweep of {num_points} points: restore it")
    return labels


def write_sweep(path, points: np.ndarray) -> None:
    """Write [N, 5] points as a nuScenes `.pcd.bin` (float32, row-major)."""
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 5:
        raise ValueError(f"points must be [N, 5] (x, y, z, intensity, ring), got {points.shape}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    points.tofile(path)
