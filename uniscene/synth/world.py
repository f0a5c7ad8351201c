"""The time-varying world of one synthetic scene, and ray casting into it.

`build_scene(config, scene_index)` re-creates a scene exactly from the config (seed, synth
section) and its index; the generator, the tests and the metrics all use it to query the
true surfaces. The world frame is the map frame of the scene's location; the ground is the
plane z = 0 and nothing has pitch or roll.

Letters: N rays, I instances, M boxes.
"""

import hashlib
from dataclasses import dataclass

import numpy as np

from uniscene.classes import LIDARSEG_TO_OCC
from uniscene.errors import UserError
from uniscene.geometry import make_transform, yaw_to_quaternion
from uniscene.synth import kernels
from uniscene.synth.agents import DT_S, Instances, build_ego, build_instances
from uniscene.sensors import ego_from_lidar
from uniscene.settings import Settings
from uniscene.synth.sensors import CameraRig, LidarPattern, camera_rig, lidar_pattern
from uniscene.synth.town import BoxSet, Town, build_town

LOCATIONS = ("singapore-onenorth", "boston-seaport", "singapore-queenstown", "singapore-hollandvillage")
REGION_PITCH_M = 500.0  # scenes of one location sit in a grid of (at least) 500 m regions of its map
BLOCK_PITCH_M = 70.0  # road centre line to road centre line
REGION_COLUMNS = 3
REGION_ORIGIN_M = (150.0, 150.0)
TIMESTAMP_BASE_US = 1_600_000_000_000_000
SCENE_TIMESTAMP_STRIDE_US = 3_600_000_000  # one hour between scene starts
CAMERA_PERIOD_US = 1_000_000 / 12
LIDAR_PERIOD_US = 50_000
SAMPLE_PERIOD_US = 500_000
EGO_BOX_OFFSET_M = 1.4  # rear axle (ego origin) to the centre of the ego car's box

@dataclass(frozen=True)
class SynthSettings(Settings):
    """The `synth:` config section (uniscene/schemas/config.schema.yaml: meanings, bounds and defaults)."""

    SECTION = "synth"

    num_scenes: int
    duration_s: float
    image_size: tuple[int, ...]  # (H, W) of the camera images
    density: float
    town_blocks: int
    lidar_azimuth_steps: int
    jpeg_quality: int
    workers: int  # 0: one per CPU core

    def __post_init__(self):
        h, w = self.image_size
        if h * w > 1600 * 900:  # the one bound the schema cannot say
            raise UserError(f"config key synth.image_size {list(self.image_size)} is larger than nuScenes' [900, 1600]")


def scene_name(index: int) -> str:
    return f"synth-{index:04d}"


def scene_seed(seed: int, index: int) -> int:
    digest = hashlib.sha256(f"uniscene-synth/{seed}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def region_pitch_m(town_blocks: int) -> float:
    """Spacing of the scenes' regions in a map: 500 m, or more for towns that would not fit."""
    return float(max(REGION_PITCH_M, 100.0 * np.ceil((town_blocks * BLOCK_PITCH_M + 130.0) / 100.0)))


def scene_location(index: int, town_blocks: int = 4) -> tuple:
    """(map name, town origin xy in the map frame) of scene `index`.

    Scene i lies in map LOCATIONS[i % 4], in region i // 4 of a grid of REGION_COLUMNS columns
    whose node (0, 0) is at REGION_ORIGIN_M + region_pitch_m * (column, row).
    """
    location = LOCATIONS[index % len(LOCATIONS)]
    slot = index // len(LOCATIONS)
    pitch = region_pitch_m(town_blocks)
    origin = (REGION_ORIGIN_M[0] + (slot % REGION_COLUMNS) * pitch, REGION_ORIGIN_M[1] + (slot // REGION_COLUMNS) * pitch)
    return location, origin


@dataclass
class RayHits:
    """First surfaces along rays. All [N]: range_m (inf: nothing within range), lidarseg (0..31),
    occ (0..16), instance (-1: not an instance), normal [N, 3] (world), ground (bool: the hit is
    the ground plane), marking (road marking code, ground hits only)."""

    range_m: np.ndarray
    lidarseg: np.ndarray
    occ: np.ndarray
    instance: np.ndarray
    normal: np.ndarray
    ground: np.ndarray
    marking: np.ndarray

    @property
    def hit(self) -> np.ndarray:
        return np.isfinite(self.range_m)


@dataclass
class SyntheticScene:
    """One scene: town, ego route and instances, with timing and sensors.

    Times are seconds since the scene start (`start_us`); camera frame k is at
    round(k * 1e6 / 12) us, LiDAR sweep j at j * 50 ms, sample m at m * 0.5 s.
    """

    index: int
    name: str
    location: str
    settings: SynthSettings
    town: Town
    instances: Instances
    ego_xy: np.ndarray  # [K, 2] on the time grid
    ego_yaw: np.ndarray  # [K] unwrapped
    ego_speed: np.ndarray  # [K]
    times_s: np.ndarray  # [K] the time grid
    start_us: int
    num_samples: int
    rig: CameraRig
    lidar: LidarPattern

    # -- timing ------------------------------------------------------------------------------
    @property
    def camera_offsets_us(self) -> np.ndarray:
        """Offsets of the 12 Hz camera frames from the scene start, [6 * (S - 1) + 1] int64."""
        k = np.arange(6 * (self.num_samples - 1) + 1)
        return np.round(k * CAMERA_PERIOD_US).astype(np.int64)

    @property
    def lidar_offsets_us(self) -> np.ndarray:
        return np.arange(10 * (self.num_samples - 1) + 1, dtype=np.int64) * LIDAR_PERIOD_US

    @property
    def sample_offsets_us(self) -> np.ndarray:
        return np.arange(self.num_samples, dtype=np.int64) * SAMPLE_PERIOD_US

    # -- poses -------------------------------------------------------------------------------
    def _lerp(self, t_s):
        t_s = np.clip(np.asarray(t_s, dtype=np.float64), 0.0, self.times_s[-1])
        f = t_s / DT_S
        k = np.minimum(np.floor(f).astype(np.int64), len(self.times_s) - 2)
        return k, f - k

    def ego_pose(self, t_s: float) -> np.ndarray:
        """world_from_ego [4, 4] at time t_s (seconds since the scene start)."""
        k, w = self._lerp(t_s)
        xy = self.ego_xy[k] * (1 - w) + self.ego_xy[k + 1] * w
        yaw = self.ego_yaw[k] * (1 - w) + self.ego_yaw[k + 1] * w
        return make_transform(yaw_to_quaternion(yaw), [xy[0], xy[1], 0.0])

    def ego_speed_at(self, t_s: float) -> float:
        k, w = self._lerp(t_s)
        return float(self.ego_speed[k] * (1 - w) + self.ego_speed[k + 1] * w)

    def instance_poses(self, t_s: float):
        """xy [I, 2], yaw [I] (wrapped to (-pi, pi]), speed [I] of all instances at t_s."""
        k, w = self._lerp(t_s)
        inst = self.instances
        xy = inst.xy[:, k] * (1 - w) + inst.xy[:, k + 1] * w
        yaw = inst.yaw[:, k] * (1 - w) + inst.yaw[:, k + 1] * w
        speed = inst.speed[:, k] * (1 - w) + inst.speed[:, k + 1] * w
        return xy, np.arctan2(np.sin(yaw), np.cos(yaw)), speed

    def boxes(self, t_s: float):
        """Annotation boxes at t_s: center [I, 3] (world), size_wlh [I, 3], yaw [I]."""
        xy, yaw, _ = self.instance_poses(t_s)
        size = self.instances.size_wlh
        center = np.concatenate([xy, size[:, 2:3] / 2], 1)
        return center, size.copy(), yaw

    def primitives(self, t_s: float):
        """All solid boxes at t_s: (BoxSet world frame, instance index [M], -1 for stuff)."""
        inst = self.instances
        static = self.town.static
        if len(inst.part_owner) == 0:
            return static, np.full(len(static), -1, np.int64)
        xy, yaw, _ = self.instance_poses(t_s)
        owner = inst.part_owner
        c, s = np.cos(yaw[owner]), np.sin(yaw[owner])
        local = inst.part_center
        center = np.stack([xy[owner, 0] + c * local[:, 0] - s * local[:, 1],
                           xy[owner, 1] + s * local[:, 0] + c * local[:, 1], local[:, 2]], 1)
        boxes = BoxSet(
            center=np.concatenate([static.center, center]),
            half=np.concatenate([static.half, inst.part_half]),
            yaw=np.concatenate([static.yaw, yaw[owner]]),
            lidarseg=np.concatenate([static.lidarseg, inst.part_lidarseg]),
        )
        return boxes, np.concatenate([np.full(len(static), -1, np.int64), owner])

    # -- ray casting -------------------------------------------------------------------------
    def raycast(self, origins, directions, t_s: float, max_range_m: float = 200.0, ray_group=None) -> RayHits:
        """First surface along each ray at time t_s.

        origins, directions: [N, 3] world frame (directions unit length); ray_group: [N] int or
        None, rays that share an origin (e.g. one camera's), for faster culling. Solids: the static
        boxes and the instances' parts; the ground plane z = 0 with its class raster.
        """
        origins = np.asarray(origins, dtype=np.float64)
        directions = np.asarray(directions, dtype=np.float64)
        if origins.ndim != 2 or origins.shape[1] != 3 or directions.shape != origins.shape:
            raise ValueError(f"origins and directions must both be [N, 3], got {origins.shape} and {directions.shape}")
        boxes, owner = self.primitives(t_s)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_ground = np.where(directions[:, 2] < -1e-9, -origins[:, 2] / directions[:, 2], np.inf)
        t_ground = np.where(t_ground < max_range_m, t_ground, np.inf)
        t_box, box, normal = kernels.first_box_hits(origins, directions, boxes.center, boxes.half, boxes.yaw, max_range_m,
                                                    t_limit=t_ground, ray_group=ray_group)
        ground = t_ground < t_box
        range_m = np.minimum(t_ground, t_box)
        n = len(origins)
        lidarseg = np.zeros(n, np.uint8)
        instance = np.full(n, -1, np.int64)
        marking = np.zeros(n, np.uint8)
        on_box = ~ground & (box >= 0)
        lidarseg[on_box] = boxes.lidarseg[box[on_box]]
        instance[on_box] = owner[box[on_box]]
        if ground.any():
            p = origins[ground] + directions[ground] * t_ground[ground, None]
            lidarseg[ground] = self.town.ground_class(p[:, 0], p[:, 1])
            marking[ground] = self.town.ground_marking(p[:, 0], p[:, 1])
            normal[ground] = (0.0, 0.0, 1.0)
        return RayHits(range_m, lidarseg, LIDARSEG_TO_OCC[lidarseg], instance, normal, ground, marking)

    # -- sensors -----------------------------------------------------------------------------
    def world_from_lidar(self, t_s: float) -> np.ndarray:
        return self.ego_pose(t_s) @ ego_from_lidar()


def build_scene(config: dict, scene_index: int) -> SyntheticScene:
    """Re-create synthetic scene `scene_index` from the config (deterministic)."""
    settings = SynthSettings.from_config(config)
    if not 0 <= scene_index < settings.num_scenes:
        raise UserError(f"scene index {scene_index} is outside synth.num_scenes={settings.num_scenes}")
    rng = np.random.default_rng(scene_seed(config["seed"], scene_index))
    location, origin = scene_location(scene_index, settings.town_blocks)
    num_samples = int(np.floor(settings.duration_s * 2 + 1e-9)) + 1
    duration = (num_samples - 1) * SAMPLE_PERIOD_US / 1e6
    times = np.arange(int(round(duration / DT_S)) + 2) * DT_S  # one sample past the end
    town = build_town(rng, origin, num_blocks=settings.town_blocks, pitch_m=BLOCK_PITCH_M)
    ego_xy, ego_yaw, ego_speed = build_ego(rng, town, times)
    instances = build_instances(rng, town, times, settings.density, ego_xy, ego_yaw)
    return SyntheticScene(
        index=scene_index, name=scene_name(scene_index), location=location, settings=settings, town=town,
        instances=instances, ego_xy=ego_xy, ego_yaw=ego_yaw, ego_speed=ego_speed, times_s=times,
        start_us=TIMESTAMP_BASE_US + scene_index * SCENE_TIMESTAMP_STRIDE_US, num_samples=num_samples,
        rig=camera_rig(settings.image_size), lidar=lidar_pattern(settings.lidar_azimuth_steps),
    )
