"""The LIDAR_TOP beam pattern and range images: sweeps <-> [H, W] grids of rays.

A range image has one row per beam (the sweep's `ring` column) and one column per azimuth bin;
each pixel holds the range and intensity of the nearest return of that ray (range 0: no return).
Azimuth is measured in the sensor frame from +x towards +y; column w's ray points at
azimuth -pi + w * 2 pi / W and the column holds the returns within half a step of it (the
synthetic LIDAR_TOP fires exactly at these azimuths).

Letters: N points, H beams (rings), W azimuth columns, B sweeps.
"""

from dataclasses import dataclass

import numpy as np

from uniscene import sensors

NUSCENES_AZIMUTH_STEPS = 1084  # HDL-32E firings per turn at 20 Hz (~34,700 points per sweep)


@dataclass(frozen=True)
class BeamPattern:
    elevation_deg: tuple  # [H], elevation of ring 0, 1, ... above the sensor's x-y plane
    num_azimuths: int  # W
    max_range_m: float  # returns farther than this are never recorded
    min_range_m: float  # nor nearer than this

    @property
    def shape(self) -> tuple:  # (H, W)
        return len(self.elevation_deg), self.num_azimuths

    def azimuth_rad(self) -> np.ndarray:
        """Centre azimuth of each column, [W] float64."""
        return -np.pi + np.arange(self.num_azimuths) * (2 * np.pi / self.num_azimuths)

    def directions(self) -> np.ndarray:
        """Sensor-frame unit vector of every ray, [H, W, 3] float64."""
        elevation = np.deg2rad(np.asarray(self.elevation_deg, dtype=np.float64))[:, None]
        azimuth = self.azimuth_rad()[None, :]
        return np.stack(
            np.broadcast_arrays(np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)),
            -1,
        )

    def column_of(self, points: np.ndarray) -> np.ndarray:
        """Azimuth column of sensor-frame points [N, >=2] -> [N] int64."""
        azimuth = np.arctan2(points[:, 1], points[:, 0])
        column = np.round((azimuth + np.pi) / (2 * np.pi) * self.num_azimuths).astype(np.int64)
        return column % self.num_azimuths


def lidar_top(num_azimuths: int = NUSCENES_AZIMUTH_STEPS) -> BeamPattern:
    """nuScenes' LIDAR_TOP (Velodyne HDL-32E) as the synthetic dataset fires it: 32 beams evenly
    from -30.67 to +10.67 degrees (ring 0 lowest), `num_azimuths` steps per turn, 1 to 70 m."""
    low, high = sensors.LIDAR_ELEVATION_DEG
    elevation = np.linspace(low, high, sensors.LIDAR_NUM_BEAMS)
    return BeamPattern(tuple(elevation.tolist()), int(num_azimuths), sensors.LIDAR_MAX_RANGE_M, sensors.LIDAR_MIN_RANGE_M)


def beam_pattern(config: dict) -> BeamPattern:
    """The LIDAR_TOP pattern of the configured dataset (the synthetic one's azimuth steps come from its config).

    Reads dataset.kind and synth.lidar_azimuth_steps (stage_config.BEAMS).
    """
    if config["dataset"]["kind"] == "synthetic":
        return lidar_top(config["synth"]["lidar_azimuth_steps"])
    return lidar_top()


@dataclass
class RangeImage:
    """One or more sweeps as range images.

    range_m: [..., H, W] float32, 0 where the ray returned nothing.
    intensity: [..., H, W] float32, 0 where the ray returned nothing.
    """

    range_m: np.ndarray
    intensity: np.ndarray

    @property
    def returned(self) -> np.ndarray:  # [..., H, W] bool
        return self.range_m > 0


def sweep_to_range_image(points: np.ndarray, pattern: BeamPattern) -> RangeImage:
    """Bin a sweep [N, 5] (x, y, z, intensity, ring; sensor frame) into an [H, W] range image.

    Where several points fall into one pixel the nearest is kept; points with a ring outside the
    pattern or beyond its max range are dropped.
    """
    if points.ndim != 2 or points.shape[1] != 5:
        raise ValueError(f"points must be [N, 5] (x, y, z, intensity, ring), got {points.shape}")
    height, width = pattern.shape
    range_m = np.linalg.norm(points[:, :3], axis=1)
    row = np.round(points[:, 4]).astype(np.int64)
    keep = (row >= 0) & (row < height) & (range_m > 0) & (range_m <= pattern.max_range_m)
    flat = row[keep] * width + pattern.column_of(points[keep])
    range_m, intensity = range_m[keep], points[keep, 3]
    order = np.lexsort((range_m, flat))  # by pixel, nearest first
    first = np.ones(order.size, dtype=bool)
    first[1:] = flat[order][1:] != flat[order][:-1]
    chosen = order[first]
    image_range = np.zeros(height * width, dtype=np.float32)
    image_intensity = np.zeros(height * width, dtype=np.float32)
    image_range[flat[chosen]] = range_m[chosen]
    image_intensity[flat[chosen]] = intensity[chosen]
    return RangeImage(image_range.reshape(height, width), image_intensity.reshape(height, width))


def range_image_to_sweep(image: RangeImage, pattern: BeamPattern) -> np.ndarray:
    """Points [N, 5] (x, y, z, intensity, ring; sensor frame) of the returning rays of one [H, W] image."""
    if image.range_m.shape != pattern.shape:
        raise ValueError(f"range image is {image.range_m.shape}, the beam pattern is {pattern.shape}")
    rows, cols = np.nonzero(image.returned)
    xyz = pattern.directions()[rows, cols] * image.range_m[rows, cols, None]
    return np.concatenate(
        [xyz, image.intensity[rows, cols, None], rows[:, None].astype(np.float64)], axis=1
    ).astype(np.float32)
