"""What LiDAR generation reads of a scene: the sensor pose and occupancy of each 12 Hz frame,
and (for training and scoring) the sweep that was really recorded there.

The sensor pose of frame t is that of its nearest LIDAR_TOP sweep expressed in the frame's ego
frame (where the occupancy lives): ego_from_world[t] @ world_from_sweep_ego[s] @ ego_from_lidar[s],
s = lidar_sweep_index[t]. Generated and true sweeps are both in that sensor's frame.

Letters: T frames, X Y Z grid, H beams, W azimuths.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from uniscene.data.files import read_sweep
from uniscene.errors import UserError
from uniscene.geometry import invert_transform
from uniscene.grid import OccGrid
from uniscene.models.lidar.beams import BeamPattern, RangeImage, sweep_to_range_image
from uniscene.store import open_store

OCCUPANCY_STAGES = ("occ_label", "occ_gen")


@dataclass
class SceneLidarInputs:
    """timestamp_us: [T] int64; ego_from_sensor: [T, 4, 4] float64; sweep_paths: T absolute paths of
    the recorded sweeps; semantics: [T, X, Y, Z] uint8, lazily read (xarray)."""

    timestamp_us: np.ndarray
    ego_from_sensor: np.ndarray
    sweep_paths: list
    semantics: xr.DataArray


def load_scene_inputs(frames_path, occupancy_path, grid: OccGrid) -> SceneLidarInputs:
    """Read a scene's frames.zarr and an occupancy store (occ_label.zarr or occ_gen.zarr), checked to match."""
    frames = open_store(frames_path, "frames")
    occupancy = open_store(occupancy_path)
    stage = occupancy.attrs["uniscene"]["stage"]
    if stage not in OCCUPANCY_STAGES:
        raise UserError(f"store {occupancy_path} holds stage '{stage}', expected one of {OCCUPANCY_STAGES}: check --occupancy")
    grid.check_store(occupancy, occupancy_path)
    timestamps = frames["timestamp_us"].values
    if not np.array_equal(occupancy["timestamp_us"].values, timestamps):
        raise UserError(
            f"store {occupancy_path} has {occupancy.sizes['frame']} frames that do not match the {timestamps.size} frames of "
            f"{frames_path}: rebuild it from that frames store"
        )
    sweep = frames["lidar_sweep_index"].values
    world_from_sensor = frames["world_from_sweep_ego"].values[sweep] @ frames["ego_from_lidar"].values[sweep]
    ego_from_sensor = invert_transform(frames["world_from_ego"].values) @ world_from_sensor
    return SceneLidarInputs(timestamps, ego_from_sensor, recorded_sweep_paths(frames), occupancy["semantics"])


def recorded_sweep_paths(frames: xr.Dataset) -> list:
    """The T paths of the sweeps recorded at the frames of a frames.zarr (each frame's nearest LIDAR_TOP sweep)."""
    dataroot = Path(frames.attrs["dataroot"])
    return [dataroot / p for p in frames["sweep_path"].values[frames["lidar_sweep_index"].values]]


def true_range_images(sweep_paths, pattern: BeamPattern) -> RangeImage:
    """The recorded sweeps as range images, [T, H, W] each."""
    images = [sweep_to_range_image(read_sweep(path), pattern) for path in sweep_paths]
    return RangeImage(np.stack([i.range_m for i in images]), np.stack([i.intensity for i in images]))
