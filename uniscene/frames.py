"""12 Hz frames: boxes at any time from 2 Hz keyframe annotations, and the frames of one scene.

A frame is a CAM_FRONT capture (keyframe or sweep) with its own logged ego pose; every camera
contributes its capture nearest in time, the LiDAR its nearest LIDAR_TOP sweep. Boxes are
interpolated to the frame's time between the two keyframes around it: the centre by a cubic
Hermite curve whose tangents are the keyframe velocities (the devkit's `box_velocity`: central
difference of the instance's neighbouring annotations, so the curve is a Catmull-Rom spline
through the annotations; at a track's ends, `curve_tangents`), size linearly, rotation by slerp,
velocity linearly between the keyframe velocities. The same interpolation gives the boxes at
every LIDAR_TOP sweep's time.
Why cubic: a straight line between two annotations 0.5 s apart cuts the corner of a turn and
misses braking (0.15 m at the middle of a 20 m radius turn at 10 m/s); occupancy labels carve
each object in its box at every sweep, so that error erodes moving objects. On the demo scenes,
moving boxes between keyframes: mean centre error 0.055 -> 0.008 m together with the
extrapolation below (benchmarks/RESULTS.md).

One-sided instances (policy, config `frames.hold_one_sided_s`, default 0.25 s = half the
keyframe interval): an instance annotated at only one of the two keyframes around a time
(it enters or leaves the annotated range, or it is occluded at the other keyframe), and any
instance at a time before the scene's first or after its last keyframe, keeps the size and
rotation of that one annotation and moves on at its velocity for times within
`hold_one_sided_s` of it (it stands still where that annotation has no neighbour to give a
velocity), and does not exist (`valid` False) farther away. So it exists where its own keyframe
is the nearest one; 0 drops one-sided instances everywhere except exactly at their keyframe.
Parked instances (policy, config `frames.hold_parked_s`, default 20 s, a nuScenes scene): an
instance whose first annotation is parked (`uniscene.data.reader.PARKED_ATTRIBUTES`: vehicle.parked,
cycle.without_rider; and barriers, cones, bicycle racks) stands in that box, still, for
`hold_parked_s` before it; one whose last annotation is parked, for `hold_parked_s` after it.
Annotators box an object only at keyframes where it has a LiDAR point, so a parked car far away
or hidden behind others is unannotated at the keyframes before it comes into view, yet it stands
there and the cameras see it: on the demo scenes such cars were 2,300 of the 5,400 car voxels
that the labels missed (benchmarks/RESULTS.md).
At a keyframe, every annotated instance has exactly its annotation. Slots where an instance
does not exist hold zeros (centre, size, velocity) and the identity rotation.

Letters: K keyframes, B instances, T query times (frames or sweeps), V cameras.
"""

from dataclasses import dataclass

import numpy as np
import xarray as xr

from uniscene.boxes import IDENTITY_QUATERNION, Boxes
from uniscene.errors import UserError
from uniscene.geometry import slerp
from uniscene.sensors import CAMERA_NAMES, LIDAR_NAME
from uniscene.settings import Settings


@dataclass(frozen=True)
class FramesSettings(Settings):
    """The `frames:` config section (uniscene/schemas/config.schema.yaml: meanings and defaults)."""

    SECTION = "frames"

    hold_one_sided_s: float
    hold_parked_s: float
    max_camera_offset_s: float


def keyframe_velocity(timestamp_us: np.ndarray, center: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Velocity (m/s) of each annotation, as nuscenes-devkit's `box_velocity`.

    Central difference of the previous and next keyframe where the instance is annotated there,
    else the one-sided difference, else zero. timestamp_us [K], center [K, B, 3], present [K, B]
    -> [K, B, 3].
    """
    k = len(timestamp_us)
    time_s = np.asarray(timestamp_us, dtype=np.float64) * 1e-6
    index = np.arange(k)
    prev_ok = np.zeros_like(present)
    next_ok = np.zeros_like(present)
    prev_ok[1:] = present[:-1] & present[1:]
    next_ok[:-1] = present[1:] & present[:-1]
    first = np.where(prev_ok, np.maximum(index - 1, 0)[:, None], index[:, None])  # [K, B]
    last = np.where(next_ok, np.minimum(index + 1, k - 1)[:, None], index[:, None])  # [K, B]
    columns = np.arange(center.shape[1])[None, :]
    dt = time_s[last] - time_s[first]  # [K, B]
    delta = center[last, columns] - center[first, columns]  # [K, B, 3]
    moving = dt > 0
    return np.where(moving[..., None], delta / np.where(moving, dt, 1.0)[..., None], 0.0)


def curve_tangents(timestamp_us: np.ndarray, center: np.ndarray, present: np.ndarray, velocity: np.ndarray) -> np.ndarray:
    """Tangents (m/s) of the centre curve at each annotation: [K] [K, B, 3] [K, B] [K, B, 3] -> [K, B, 3].

    The devkit velocity (`velocity`, from `keyframe_velocity`), except at the first and the last
    annotation of a run of three or more: there the slope of the parabola through the three. The
    one-sided difference there points along the chord, which cuts a turn's corner at every
    track's ends (0.09 m on a 20 m turn at 10 m/s, tests/test_frames.py).
    """
    tangent = velocity
    time_s = np.asarray(timestamp_us, dtype=np.float64) * 1e-6
    start = _parabola_start_slope(time_s, center, present)
    end = -_parabola_start_slope(-time_s[::-1], center[::-1], present[::-1])[::-1]  # the same with time reversed
    for slope in (start, end):
        tangent = np.where(np.isnan(slope), tangent, slope)
    return tangent


def _parabola_start_slope(time_s: np.ndarray, center: np.ndarray, present: np.ndarray) -> np.ndarray:
    """[K, B, 3] the slope at each annotation that starts a run of three, of the parabola through them; NaN elsewhere."""
    k = len(time_s)
    out = np.full(center.shape, np.nan)
    if k < 3:
        return out
    before = np.zeros_like(present)
    before[1:] = present[:-1]
    starts = present[:-2] & present[1:-1] & present[2:] & ~before[:-2]  # [K-2, B]
    h1, h2 = (time_s[1:-1] - time_s[:-2])[:, None, None], (time_s[2:] - time_s[1:-1])[:, None, None]
    slope = (-(2 * h1 + h2) / (h1 * (h1 + h2)) * center[:-2] + (h1 + h2) / (h1 * h2) * center[1:-1]
             - h1 / (h2 * (h1 + h2)) * center[2:])
    out[:-2] = np.where(starts[..., None], slope, np.nan)
    return out


def interpolate_boxes(
    key_timestamp_us: np.ndarray,
    center: np.ndarray,
    size: np.ndarray,
    rotation: np.ndarray,
    present: np.ndarray,
    timestamp_us: np.ndarray,
    hold_one_sided_s: float,
    parked: np.ndarray | None = None,
    hold_parked_s: float = 0.0,
) -> Boxes:
    """Boxes at `timestamp_us` from keyframe annotations (policy in the module docstring).

    key_timestamp_us [K] strictly increasing, center [K, B, 3], size [K, B, 3],
    rotation [K, B, 4] (w, x, y, z), present [K, B] bool, timestamp_us [T], parked [K, B] bool
    (None: none) -> Boxes over [T, B] (float64, with velocities).
    """
    key_t = np.asarray(key_timestamp_us, dtype=np.int64)
    t = np.asarray(timestamp_us, dtype=np.int64)
    k, b = present.shape
    if key_t.shape != (k,) or center.shape != (k, b, 3) or size.shape != (k, b, 3) or rotation.shape != (k, b, 4):
        raise ValueError(
            f"keyframe arrays disagree: timestamps {key_t.shape}, center {center.shape}, size {size.shape}, "
            f"rotation {rotation.shape}, present {present.shape} (want [K], [K,B,3], [K,B,3], [K,B,4], [K,B])"
        )
    if k == 0:
        raise ValueError("no keyframes to interpolate from")
    if np.any(np.diff(key_t) <= 0):
        raise ValueError("keyframe timestamps must increase strictly")
    if hold_one_sided_s < 0 or hold_parked_s < 0:
        raise ValueError(f"hold_one_sided_s and hold_parked_s must be >= 0, got {hold_one_sided_s}, {hold_parked_s}")
    hold_us = int(round(hold_one_sided_s * 1e6))
    velocity = keyframe_velocity(key_t, center, present)
    tangent = curve_tangents(key_t, center, present, velocity)

    # 1. the keyframes around each time: k0 <= t < k1 (k0 = -1 before the first, k1 = K after the last)
    k0 = np.searchsorted(key_t, t, side="right") - 1  # [T]
    k1 = k0 + 1
    i0, i1 = np.clip(k0, 0, k - 1), np.clip(k1, 0, k - 1)
    has0 = (k0 >= 0)[:, None] & present[i0]  # [T, B]
    has1 = (k1 < k)[:, None] & present[i1]  # [T, B]
    span = np.where(k1 < k, key_t[i1] - key_t[i0], 1)  # [T]
    alpha = np.where((k0 >= 0) & (k1 < k), (t - key_t[i0]) / np.maximum(span, 1), 0.0)  # [T]
    exact = (k0 >= 0) & (t == key_t[i0])  # [T]

    # 2. both keyframes annotated: interpolate; at a keyframe itself, alpha is 0 and the box is exact
    both = has0 & (has1 | exact[:, None])  # [T, B]
    a = alpha[:, None, None]
    out_center = _hermite(center[i0], tangent[i0], center[i1], tangent[i1], a, (span * 1e-6)[:, None, None])
    out_size = (1 - a) * size[i0] + a * size[i1]
    out_velocity = (1 - a) * velocity[i0] + a * velocity[i1]
    out_rotation = slerp(rotation[i0], rotation[i1], np.broadcast_to(alpha[:, None], (len(t), b)))
    out = (out_center, out_size, out_velocity, out_rotation)
    out = _where(exact[:, None] & has0, (center[i0], size[i0], velocity[i0], rotation[i0]), out)

    # 3. one-sided: the one annotation, moving on at its velocity, within hold_us of its keyframe
    hold0 = has0 & ~both & ((t - key_t[i0]) <= hold_us)[:, None]
    hold1 = has1 & ~both & ~hold0 & ((key_t[i1] - t) <= hold_us)[:, None]
    for held, source in ((hold0, i0), (hold1, i1)):
        moved = tangent[source] * ((t - key_t[source]) * 1e-6)[:, None, None]
        out = _where(held, (center[source] + moved, size[source], velocity[source], rotation[source]), out)

    # 4. parked before the first or after the last annotation: that box, still, within hold_parked_s
    stands = np.zeros_like(both)
    if parked is not None:
        hold_parked_us = hold_parked_s * 1e6
        columns = np.arange(b)
        first, last = np.argmax(present, 0), k - 1 - np.argmax(present[::-1], 0)  # [B]
        before = (t[:, None] < key_t[first]) & (key_t[first] - t[:, None] <= hold_parked_us) & parked[first, columns]
        after = (t[:, None] > key_t[last]) & (t[:, None] - key_t[last] <= hold_parked_us) & parked[last, columns]
        for held, source in ((before & present.any(0), first), (after & present.any(0), last)):
            out = _where(held, (center[source, columns], size[source, columns], 0.0, rotation[source, columns]), out)
            stands |= held

    # 5. nowhere else: zeros and the identity rotation
    valid = both | hold0 | hold1 | stands
    out_center, out_size, out_velocity, out_rotation = _where(~valid, (0.0, 0.0, 0.0, IDENTITY_QUATERNION), out)
    return Boxes(center=out_center, size=out_size, rotation=out_rotation, velocity=out_velocity, valid=valid)


def _where(take: np.ndarray, values: tuple, boxes: tuple) -> tuple:
    """(centre, size, velocity, rotation) `boxes` with `values` where `take` [T, B] holds."""
    return tuple(np.where(take[..., None], value, box) for value, box in zip(values, boxes))


def _hermite(p0: np.ndarray, v0: np.ndarray, p1: np.ndarray, v1: np.ndarray, a: np.ndarray, span_s: np.ndarray) -> np.ndarray:
    """The cubic from p0 at velocity v0 to p1 at velocity v1 over span_s seconds, at fraction a of the span."""
    a2, a3 = a * a, a * a * a
    return (2 * a3 - 3 * a2 + 1) * p0 + (a3 - 2 * a2 + a) * span_s * v0 + (3 * a2 - 2 * a3) * p1 + (a3 - a2) * span_s * v1


def nearest_index(source_timestamp_us: np.ndarray, query_timestamp_us: np.ndarray) -> np.ndarray:
    """Index of the source time nearest each query time (ties: the earlier). [N] sorted, [T] -> [T] int64."""
    source = np.asarray(source_timestamp_us, dtype=np.int64)
    query = np.asarray(query_timestamp_us, dtype=np.int64)
    if source.size == 0:
        raise ValueError("no source times")
    right = np.clip(np.searchsorted(source, query), 0, len(source) - 1)
    left = np.clip(right - 1, 0, len(source) - 1)
    take_left = np.abs(query - source[left]) <= np.abs(source[right] - query)
    return np.where(take_left, left, right).astype(np.int64)


def match_cameras(
    frame_timestamp_us: np.ndarray, frame_token: np.ndarray, camera_timestamps_us: dict, max_offset_s: float
) -> dict:
    """Each camera's capture nearest each frame: {camera: [T] index into its captures}.

    Fallback for a camera that missed a capture: its nearest capture is used while it lies within
    `max_offset_s` of the frame; farther away raises UserError naming the frame's CAM_FRONT
    sample_data token and the camera. frame_timestamp_us [T], frame_token [T] str.
    """
    out = {}
    for camera, timestamps in camera_timestamps_us.items():
        if len(timestamps) == 0:
            raise UserError(f"camera {camera} has no captures in the scene of frame '{frame_token[0]}': the dataset lacks that camera")
        index = nearest_index(timestamps, frame_timestamp_us)
        offset_us = np.abs(np.asarray(timestamps)[index] - frame_timestamp_us)
        bad = np.flatnonzero(offset_us > max_offset_s * 1e6)
        if bad.size:
            i = bad[0]
            raise UserError(
                f"camera {camera} has no capture within {max_offset_s} s of frame '{frame_token[i]}' (CAM_FRONT "
                f"sample_data; nearest {offset_us[i] / 1e3:.0f} ms away): restore that camera's sample_data, or raise "
                f"frames.max_camera_offset_s"
            )
        out[camera] = index
    return out


def scene_frames(scene, hold_one_sided_s: float, max_camera_offset_s: float, hold_parked_s: float = 0.0) -> xr.Dataset:
    """The frames.zarr dataset (docs/stores.md) of one scene read by `uniscene.data.reader.scene_data`.

    T frames = the CAM_FRONT chain; S sweeps = the LIDAR_TOP chain; V = `CAMERA_NAMES`.
    """
    front, lidar = scene.chains[CAMERA_NAMES[0]], scene.chains[LIDAR_NAME]
    ann = scene.annotations

    # 1. cameras: each one's capture nearest the CAM_FRONT capture
    cam_timestamps = {c: scene.chains[c].timestamp_us for c in CAMERA_NAMES}
    cam_index = match_cameras(front.timestamp_us, front.token, cam_timestamps, max_camera_offset_s)

    # 2. boxes at every frame and every sweep; a keyframe capture takes its sample's annotations as
    #    they are (as the devkit's get_boxes), although the camera fired a few ms off the sample time
    boxes_args = (ann.timestamp_us, ann.center, ann.size, ann.rotation, ann.present)
    holds = dict(hold_one_sided_s=hold_one_sided_s, parked=ann.parked, hold_parked_s=hold_parked_s)
    frame_boxes = interpolate_boxes(*boxes_args, box_times(front, ann), **holds)  # [T, B]
    sweep_boxes = interpolate_boxes(*boxes_args, box_times(lidar, ann), **holds)  # [S, B]

    data = {"world_from_ego": (("frame", "row", "col"), front.world_from_ego)}
    data.update(camera_variables(scene.chains, np.stack([cam_index[c] for c in CAMERA_NAMES], 1)))
    data["lidar_sweep_index"] = ("frame", nearest_index(lidar.timestamp_us, front.timestamp_us))
    data.update(sweep_variables(lidar, scene.lidarseg_filename))
    data.update(instance_variables(ann.instance_token, ann.category, ann.detection_class, ann.occ_class))
    data.update(frame_boxes.variables("frame", "box_"))
    data.update(sweep_boxes.variables("sweep", "sweep_box_"))
    return xr.Dataset(data, attrs={"scene": scene.name, "location": scene.location, "camera_names": list(CAMERA_NAMES)})


def box_times(chain, annotations) -> np.ndarray:
    """[N] int64: the time to take boxes at per capture: its sample's time at keyframes, else its own."""
    sample_time_us = dict(zip(annotations.sample_token, annotations.timestamp_us))
    keyed = [sample_time_us[s] if key else t for s, key, t in zip(chain.sample_token, chain.is_keyframe, chain.timestamp_us)]
    return np.array(keyed, dtype=np.int64).reshape(-1)


def camera_variables(chains: dict, cam_index: np.ndarray) -> dict:
    """Frame and camera variables from the captures `cam_index` [T, V] (into each camera's chain).

    chains: camera name -> uniscene.data.reader.SensorChain; frames are the CAM_FRONT captures.
    """
    ordered = [chains[c] for c in CAMERA_NAMES]
    pick = lambda name: np.stack([getattr(ch, name)[cam_index[:, v]] for v, ch in enumerate(ordered)], 1)  # noqa: E731
    front_chain, front_index = ordered[0], cam_index[:, 0]
    return {
        "frame_token": ("frame", front_chain.token[front_index].astype(object)),
        "timestamp_us": ("frame", front_chain.timestamp_us[front_index]),
        "is_keyframe": ("frame", front_chain.is_keyframe[front_index]),
        "sample_token": ("frame", front_chain.sample_token[front_index].astype(object)),
        "cam_image_path": (("frame", "cam"), pick("filename").astype(object)),
        "cam_sample_data_token": (("frame", "cam"), pick("token").astype(object)),
        "cam_timestamp_us": (("frame", "cam"), pick("timestamp_us")),
        "cam_intrinsics": (("frame", "cam", "k_row", "k_col"), pick("intrinsics")),
        "cam_image_size": (("cam", "hw"), np.stack([ch.image_size[0] for ch in ordered])),
        "ego_from_cam": (("frame", "cam", "row", "col"), pick("ego_from_sensor")),
    }


def sweep_variables(lidar, lidarseg_filename: np.ndarray) -> dict:
    """Sweep variables of the LIDAR_TOP chain (S sweeps) and its lidarseg files [S] ("" where none)."""
    return {
        "sweep_token": ("sweep", lidar.token.astype(object)),
        "sweep_path": ("sweep", lidar.filename.astype(object)),
        "sweep_timestamp_us": ("sweep", lidar.timestamp_us),
        "sweep_is_keyframe": ("sweep", lidar.is_keyframe),
        "sweep_lidarseg_path": ("sweep", np.asarray(lidarseg_filename, dtype=object)),
        "world_from_sweep_ego": (("sweep", "row", "col"), lidar.world_from_ego),
        "ego_from_lidar": (("sweep", "row", "col"), lidar.ego_from_sensor),
    }


def instance_variables(instance_token, category, detection_class, occ_class) -> dict:
    """Per-slot variables: tokens [B] str, full category names [B] str, classes [B] (-1 none) and [B]."""
    return {
        "box_instance_token": ("box", np.asarray(instance_token, dtype=object).reshape(-1)),
        "box_category": ("box", np.asarray(category, dtype=object).reshape(-1)),
        "box_class": ("box", np.asarray(detection_class, dtype=np.int8).reshape(-1)),
        "box_occ_class": ("box", np.asarray(occ_class, dtype=np.uint8).reshape(-1)),
    }

