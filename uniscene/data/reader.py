"""One reader of nuScenes-format datasets (the synthetic one and real v1.0-mini / v1.0-trainval).

Built on nuscenes-devkit: `open_dataset(dataroot, version)` loads the tables once per process
(cached by the pair) and `scene_data(nusc, scene)` turns one scene into arrays: its samples, the
sample_data chain of every channel (poses, calibrations, files), its 2 Hz keyframe annotations,
lidarseg files and map location. Every broken reference (a token that names no record, a chain
that leaves the scene or goes back in time, a file that is missing) raises UserError naming the
token and the fix. Transforms are 4x4 `target_from_source`; quaternions (w, x, y, z).

Letters: K keyframes (samples), B instances, N sample_data of one channel.
"""

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uniscene.classes import detection_class_of, occ_class_of
from uniscene.errors import UserError
from uniscene.geometry import make_transform

TABLES = (
    "category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor",
    "ego_pose", "log", "scene", "sample", "sample_data", "sample_annotation", "map",
)

# An annotation of these stands where it is while it is out of sight (the frames stage holds it, see
# uniscene.frames): vehicles marked parked, bicycles and motorcycles without rider, and the
# categories that never move on their own.
PARKED_ATTRIBUTES = frozenset({"vehicle.parked", "cycle.without_rider"})
STANDING_CATEGORIES = frozenset({"movable_object.barrier", "movable_object.trafficcone", "static_object.bicycle_rack"})

_DATASETS = {}  # (resolved dataroot, version) -> NuScenes
_LIDARSEG = {}  # id(NuScenes) -> {sample_data_token: lidarseg filename}
_MAPS = {}  # (resolved dataroot, location) -> NuScenesMap


def open_dataset(dataroot, version: str):
    """The devkit's `NuScenes` of `dataroot`/`version`, loaded once per process.

    Raises UserError naming the folder or table that is missing and how to fix it.
    """
    root = Path(dataroot).resolve()
    key = (str(root), version)
    if key in _DATASETS:
        return _DATASETS[key]
    if not root.is_dir():
        raise UserError(
            f"dataset root {dataroot} does not exist: set dataset.dataroot to the folder that holds {version}/, "
            f"samples/ and sweeps/ (for the synthetic dataset run `uniscene synth --config config.yaml --out {dataroot}`)"
        )
    missing = [t for t in TABLES if not (root / version / f"{t}.json").is_file()]
    if missing:
        raise UserError(
            f"nuScenes table(s) {', '.join(f'{t}.json' for t in missing)} missing in {root / version}: set "
            f"dataset.version to the version folder you have, or re-extract the dataset's metadata archive there"
        )
    from nuscenes.nuscenes import NuScenes

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            nusc = NuScenes(version=version, dataroot=str(root), verbose=False)
    except (AssertionError, KeyError, ValueError, OSError) as error:
        raise UserError(
            f"nuScenes tables in {root / version} cannot be loaded ({type(error).__name__}: {error}): re-extract the "
            f"dataset (tables, maps/ and lidarseg/ must match)"
        ) from error
    _DATASETS[key] = nusc
    return nusc


def _get(nusc, table: str, token: str, referrer: str) -> dict:
    try:
        return nusc.get(table, token)
    except KeyError:
        raise UserError(
            f"{referrer} names {table} token '{token}', which is not in {Path(nusc.table_root) / table}.json: the "
            f"tables are inconsistent; re-extract the dataset (or rerun `uniscene synth`)"
        ) from None


def scene_record(nusc, name: str) -> dict:
    for record in nusc.scene:
        if record["name"] == name:
            return record
    raise UserError(f"scene '{name}' is not in {Path(nusc.table_root) / 'scene.json'}: check dataset.scenes")


def scene_samples(nusc, scene: dict) -> list[dict]:
    """The scene's samples (keyframes) in time order, following `next` from `first_sample_token`."""
    samples, token = [], scene["first_sample_token"]
    while token:
        sample = _get(nusc, "sample", token, f"scene '{scene['name']}'")
        if sample["scene_token"] != scene["token"]:
            raise UserError(f"sample '{token}' of scene '{scene['name']}' belongs to another scene: fix sample.json")
        if samples and sample["timestamp"] <= samples[-1]["timestamp"]:
            raise UserError(f"sample '{token}' of scene '{scene['name']}' does not follow its predecessor in time: fix sample.json")
        samples.append(sample)
        token = sample["next"]
    return samples


@dataclass
class SensorChain:
    """Every sample_data of one channel in one scene, in time order. N captures."""

    channel: str
    token: np.ndarray  # [N] str
    timestamp_us: np.ndarray  # [N] int64
    is_keyframe: np.ndarray  # [N] bool
    sample_token: np.ndarray  # [N] str
    filename: np.ndarray  # [N] str, relative to the dataroot
    world_from_ego: np.ndarray  # [N, 4, 4] float64
    ego_from_sensor: np.ndarray  # [N, 4, 4] float64
    intrinsics: np.ndarray  # [N, 3, 3] float64 (zeros for sensors that are not cameras)
    image_size: np.ndarray  # [N, 2] int64 (height, width; zeros for sensors that are not cameras)


def sensor_chain(nusc, scene: dict, samples: list[dict], channel: str, *, check_files: bool = True) -> SensorChain:
    """The sample_data chain of `channel` through the scene (sweeps before the first keyframe included).

    Starts at the first sample's keyframe record of the channel, walks `prev` to the chain's start
    and `next` to its end. Raises UserError naming the token of a broken link, of a record that
    leaves the scene or goes back in time, and of a file missing on disk (with `check_files`).
    """
    where = f"scene '{scene['name']}'"
    if channel not in samples[0]["data"]:
        raise UserError(f"{where} has no {channel} data at its first sample '{samples[0]['token']}': the dataset lacks that sensor")
    scene_samples_tokens = {s["token"] for s in samples}
    start = samples[0]["data"][channel]
    records = [_get(nusc, "sample_data", start, f"sample '{samples[0]['token']}'")]
    while records[0]["prev"]:
        records.insert(0, _get(nusc, "sample_data", records[0]["prev"], f"sample_data '{records[0]['token']}' (prev)"))
    while records[-1]["next"]:
        records.append(_get(nusc, "sample_data", records[-1]["next"], f"sample_data '{records[-1]['token']}' (next)"))
    for before, record in zip(records[:-1], records[1:]):
        if record["timestamp"] <= before["timestamp"]:
            raise UserError(
                f"{channel} sample_data '{record['token']}' of {where} is not later than its prev '{before['token']}': "
                f"the sample_data chain is broken; fix sample_data.json"
            )
    for record in records:
        if record["sample_token"] not in scene_samples_tokens:
            raise UserError(
                f"{channel} sample_data '{record['token']}' in the chain of {where} belongs to sample "
                f"'{record['sample_token']}' of another scene: the sample_data chain is broken; fix sample_data.json"
            )
        if check_files and not (Path(nusc.dataroot) / record["filename"]).is_file():
            raise UserError(
                f"{channel} file {Path(nusc.dataroot) / record['filename']} of sample_data '{record['token']}' ({where}) "
                f"is missing: restore it from the dataset archive (sweeps/ and samples/)"
            )
    poses = [_get(nusc, "ego_pose", r["ego_pose_token"], f"sample_data '{r['token']}'") for r in records]
    calibs = [_get(nusc, "calibrated_sensor", r["calibrated_sensor_token"], f"sample_data '{r['token']}'") for r in records]
    intrinsics = np.zeros((len(records), 3, 3))
    for i, calib in enumerate(calibs):
        if calib.get("camera_intrinsic"):
            intrinsics[i] = np.asarray(calib["camera_intrinsic"], dtype=np.float64)
    return SensorChain(
        channel=channel,
        token=np.array([r["token"] for r in records]),
        timestamp_us=np.array([r["timestamp"] for r in records], dtype=np.int64),
        is_keyframe=np.array([bool(r["is_key_frame"]) for r in records]),
        sample_token=np.array([r["sample_token"] for r in records]),
        filename=np.array([r["filename"] for r in records]),
        world_from_ego=make_transform([p["rotation"] for p in poses], [p["translation"] for p in poses]),
        ego_from_sensor=make_transform([c["rotation"] for c in calibs], [c["translation"] for c in calibs]),
        intrinsics=intrinsics,
        image_size=np.array([[r.get("height") or 0, r.get("width") or 0] for r in records], dtype=np.int64),
    )


@dataclass
class KeyframeAnnotations:
    """The 2 Hz annotations of one scene as arrays over K keyframes and B instances (first-seen order)."""

    timestamp_us: np.ndarray  # [K] int64
    sample_token: np.ndarray  # [K] str
    instance_token: np.ndarray  # [B] str
    category: np.ndarray  # [B] str, full nuScenes category name
    center: np.ndarray  # [K, B, 3] float64, world frame (zeros where absent)
    size: np.ndarray  # [K, B, 3] float64, (w, l, h)
    rotation: np.ndarray  # [K, B, 4] float64, world frame (identity where absent)
    present: np.ndarray  # [K, B] bool
    parked: np.ndarray  # [K, B] bool: the annotation is parked (PARKED_ATTRIBUTES, STANDING_CATEGORIES)

    @property
    def detection_class(self) -> np.ndarray:
        """[B] int8: detection class 0..9 of each instance's category, -1 none."""
        return np.array([detection_class_of(c) for c in self.category], dtype=np.int8).reshape(-1)

    @property
    def occ_class(self) -> np.ndarray:
        """[B] uint8: occupancy class 0..16 of each instance's category."""
        return np.array([occ_class_of(c) for c in self.category], dtype=np.uint8).reshape(-1)


def keyframe_annotations(nusc, samples: list[dict]) -> KeyframeAnnotations:
    """Annotations of the scene's samples as [K, B] arrays (one slot per instance)."""
    records = [
        [_get(nusc, "sample_annotation", token, f"sample '{s['token']}'") for token in s["anns"]] for s in samples
    ]
    slot = {}
    for record in (r for per_sample in records for r in per_sample):
        slot.setdefault(record["instance_token"], len(slot))
    k, b = len(samples), len(slot)
    center, size = np.zeros((k, b, 3)), np.zeros((k, b, 3))
    present, parked = np.zeros((k, b), dtype=bool), np.zeros((k, b), dtype=bool)
    rotation = np.tile(np.array([1.0, 0.0, 0.0, 0.0]), (k, b, 1))
    categories = [""] * b
    for ki, per_sample in enumerate(records):
        for record in per_sample:
            bi = slot[record["instance_token"]]
            center[ki, bi], size[ki, bi] = record["translation"], record["size"]
            rotation[ki, bi], present[ki, bi] = record["rotation"], True
            if not categories[bi]:
                instance = _get(nusc, "instance", record["instance_token"], f"sample_annotation '{record['token']}'")
                categories[bi] = _get(nusc, "category", instance["category_token"], f"instance '{instance['token']}'")["name"]
            attributes = {_get(nusc, "attribute", a, f"sample_annotation '{record['token']}'")["name"] for a in record["attribute_tokens"]}
            parked[ki, bi] = categories[bi] in STANDING_CATEGORIES or bool(attributes & PARKED_ATTRIBUTES)
    return KeyframeAnnotations(
        timestamp_us=np.array([s["timestamp"] for s in samples], dtype=np.int64),
        sample_token=np.array([s["token"] for s in samples]),
        instance_token=np.array(list(slot), dtype=str).reshape(-1),
        category=np.array(categories, dtype=str).reshape(-1),
        center=center,
        size=size,
        rotation=rotation,
        present=present,
        parked=parked,
    )


def lidarseg_filenames(nusc) -> dict:
    """{LIDAR_TOP sample_data token: lidarseg label file relative to the dataroot}; empty without lidarseg."""
    if id(nusc) not in _LIDARSEG:
        _LIDARSEG[id(nusc)] = {r["sample_data_token"]: r["filename"] for r in getattr(nusc, "lidarseg", [])}
    return _LIDARSEG[id(nusc)]


def scene_location(nusc, scene: dict) -> str:
    """The map location of the scene's log (e.g. 'boston-seaport')."""
    return _get(nusc, "log", scene["log_token"], f"scene '{scene['name']}'")["location"]


def open_map(dataroot, location: str):
    """The devkit's `NuScenesMap` of a location (map expansion), loaded once per process."""
    key = (str(Path(dataroot).resolve()), location)
    if key not in _MAPS:
        path = Path(dataroot) / "maps" / "expansion" / f"{location}.json"
        if not path.is_file():
            raise UserError(f"map expansion file {path} is missing: install the nuScenes map expansion (v1.3) into {dataroot}/maps")
        from nuscenes.map_expansion.map_api import NuScenesMap

        _MAPS[key] = NuScenesMap(dataroot=str(dataroot), map_name=location)
    return _MAPS[key]


@dataclass
class SceneData:
    """Everything the frames stage needs of one scene, as arrays."""

    name: str
    location: str
    chains: dict  # channel -> SensorChain (the six cameras and LIDAR_TOP)
    annotations: KeyframeAnnotations
    lidarseg_filename: np.ndarray  # [S] str per LIDAR_TOP sample_data, "" where none


def scene_data(nusc, name: str, channels, *, check_files: bool = True) -> SceneData:
    """Read one scene: the chains of `channels`, its keyframe annotations, lidarseg files, location."""
    scene = scene_record(nusc, name)
    samples = scene_samples(nusc, scene)
    chains = {channel: sensor_chain(nusc, scene, samples, channel, check_files=check_files) for channel in channels}
    lidarseg = lidarseg_filenames(nusc)
    lidar_tokens = next((c.token for c in chains.values() if c.channel == "LIDAR_TOP"), np.array([], dtype=str))
    return SceneData(
        name=name,
        location=scene_location(nusc, scene),
        chains=chains,
        annotations=keyframe_annotations(nusc, samples),
        lidarseg_filename=np.array([lidarseg.get(t, "") for t in lidar_tokens], dtype=object),
    )
