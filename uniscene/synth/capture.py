"""Sensor captures of a synthetic scene: LIDAR_TOP sweeps and the six camera images.

A capture is instantaneous: the world is frozen at its timestamp (no rolling shutter, no
motion within a sweep).

Letters: N points, V cameras, H W pixels.
"""

from dataclasses import dataclass

import numpy as np

from uniscene.classes import FREE, LIDARSEG_CLASS_ID, OCC_COLORS
from uniscene.sensors import LIDAR_MAX_RANGE_M, LIDAR_MIN_RANGE_M
from uniscene.synth.town import MARK_WHITE, MARK_YELLOW
from uniscene.synth.world import SyntheticScene

CAMERA_MAX_RANGE_M = 250.0
SKY = 255

# LiDAR reflectivity per lidarseg class (0..31), before the incidence-angle falloff
_REFLECTIVITY = np.full(32, 0.3)
for _name, _value in {
    "flat.driveable_surface": 0.08, "flat.sidewalk": 0.16, "flat.terrain": 0.22, "flat.other": 0.13,
    "static.manmade": 0.28, "static.vegetation": 0.2, "vehicle.car": 0.45, "vehicle.truck": 0.4,
    "vehicle.bus.rigid": 0.42, "vehicle.construction": 0.5, "vehicle.trailer": 0.35, "vehicle.motorcycle": 0.38,
    "vehicle.bicycle": 0.3, "human.pedestrian.adult": 0.18, "human.pedestrian.child": 0.18,
    "movable_object.barrier": 0.7, "movable_object.trafficcone": 0.9,
}.items():
    _REFLECTIVITY[LIDARSEG_CLASS_ID[_name]] = _value
_MARKING_REFLECTIVITY = 0.6

SUN_DIRECTION = np.array([0.45, 0.3, 0.84]) / np.linalg.norm([0.45, 0.3, 0.84])
SKY_HORIZON = np.array([205.0, 220.0, 238.0])
SKY_ZENITH = np.array([80.0, 130.0, 210.0])
MARKING_COLORS = {MARK_WHITE: (235.0, 235.0, 235.0), MARK_YELLOW: (235.0, 200.0, 40.0)}


@dataclass
class LidarSweep:
    """points: [N, 5] float32 (x, y, z, intensity, ring) in the LIDAR_TOP frame; lidarseg: [N] uint8;
    instance: [N] int64 (-1 for stuff)."""

    points: np.ndarray
    lidarseg: np.ndarray
    instance: np.ndarray


def capture_lidar(scene: SyntheticScene, t_s: float) -> LidarSweep:
    world_from_lidar = scene.world_from_lidar(t_s)
    directions = scene.lidar.directions @ world_from_lidar[:3, :3].T
    origins = np.broadcast_to(world_from_lidar[:3, 3], directions.shape)
    hits = scene.raycast(origins, directions, t_s, LIDAR_MAX_RANGE_M)
    keep = hits.hit & (hits.range_m >= LIDAR_MIN_RANGE_M)
    r = hits.range_m[keep]
    xyz = scene.lidar.directions[keep] * r[:, None]
    cos_incidence = np.abs((hits.normal[keep] * directions[keep]).sum(1))
    reflectivity = _REFLECTIVITY[hits.lidarseg[keep]]
    reflectivity = np.where(hits.marking[keep] > 0, _MARKING_REFLECTIVITY, reflectivity)
    intensity = np.round(255.0 * reflectivity * (0.25 + 0.75 * cos_incidence) * np.clip(12.0 / (r + 8.0), 0.2, 1.0) + 1.0)
    points = np.concatenate([xyz, intensity[:, None], scene.lidar.ring[keep, None]], 1).astype(np.float32)
    return LidarSweep(points, hits.lidarseg[keep].astype(np.uint8), hits.instance[keep])


@dataclass
class CameraCapture:
    """image: [V, H, W, 3] uint8; semantics: [V, H, W] uint8 occupancy class (255 sky);
    depth: [V, H, W] float32 camera z-depth (0 for sky); instance: [V, H, W] int64 (-1 none)."""

    image: np.ndarray
    semantics: np.ndarray
    depth: np.ndarray
    instance: np.ndarray


class CameraRays:
    """Pixel rays of the rig in the ego frame, computed once per scene."""

    def __init__(self, scene: SyntheticScene):
        self.origins_ego, self.dirs_ego, self.z_of_dir = scene.rig.pixel_rays_ego()  # [V, 3], [V, H, W, 3], [V, H, W]
        v, h, w = self.z_of_dir.shape
        self.shape = (v, h, w)
        self.origins_flat = np.repeat(self.origins_ego, h * w, axis=0)  # [V*H*W, 3]
        self.dirs_flat = self.dirs_ego.reshape(-1, 3)
        self.camera_of_ray = np.repeat(np.arange(v), h * w)


def capture_cameras(scene: SyntheticScene, t_s: float, rays: CameraRays) -> CameraCapture:
    world_from_ego = scene.ego_pose(t_s)
    rotation, translation = world_from_ego[:3, :3], world_from_ego[:3, 3]
    origins = rays.origins_flat @ rotation.T + translation
    directions = rays.dirs_flat @ rotation.T
    hits = scene.raycast(origins, directions, t_s, CAMERA_MAX_RANGE_M, ray_group=rays.camera_of_ray)
    v, h, w = rays.shape
    hit = hits.hit
    semantics = np.where(hit, hits.occ, SKY).astype(np.uint8)
    depth = np.where(hit, hits.range_m * rays.z_of_dir.reshape(-1), 0.0).astype(np.float32)

    # colour: class albedo with texture, Lambert shading, road markings, haze, sky gradient
    albedo = OCC_COLORS[np.minimum(hits.occ, FREE)].astype(np.float64)
    for code, colour in MARKING_COLORS.items():
        albedo[hits.marking == code] = colour
    points = origins + directions * np.where(hit, hits.range_m, 0.0)[:, None]
    albedo *= _texture(points)[:, None]
    shade = 0.42 + 0.58 * np.clip((hits.normal * SUN_DIRECTION).sum(1), 0.0, 1.0)
    colour = albedo * shade[:, None]
    elevation = np.clip(directions[:, 2], 0.0, 1.0)[:, None]
    sky = SKY_HORIZON * (1 - elevation ** 0.6) + SKY_ZENITH * elevation ** 0.6
    haze = (1.0 - np.exp(-np.where(hit, hits.range_m, 0.0) / 350.0))[:, None]
    colour = np.where(hit[:, None], colour * (1 - haze) + SKY_HORIZON * haze, sky)
    image = np.clip(np.round(colour), 0, 255).astype(np.uint8).reshape(v, h, w, 3)
    return CameraCapture(image, semantics.reshape(v, h, w), depth.reshape(v, h, w), hits.instance.reshape(v, h, w))


def _texture(points):
    """Deterministic value noise in [0.85, 1.1] from the world position of a surface point."""
    cells = np.floor(points * 3.0).astype(np.int64)
    key = (cells[:, 0] * 73856093) ^ (cells[:, 1] * 19349663) ^ (cells[:, 2] * 83492791)
    key = (key ^ (key >> 13)) * 1274126177
    value = ((key >> 7) & 1023) / 1023.0
    return 0.88 + 0.2 * value

