"""The interpolation core (uniscene.frames) against slow, obvious references, and its policy."""

import numpy as np
import pytest
from pyquaternion import Quaternion
from scipy.interpolate import CubicHermiteSpline

from uniscene.errors import UserError
from uniscene.frames import interpolate_boxes, keyframe_velocity, match_cameras, nearest_index
from uniscene.geometry import yaw_to_quaternion


def _random_keyframes(rng, k=6, b=7):
    key_t = np.cumsum(rng.integers(400_000, 600_000, k)).astype(np.int64)
    center = rng.normal(size=(k, b, 3)) * 10
    size = rng.uniform(0.5, 5, size=(k, b, 3))
    rotation = rng.normal(size=(k, b, 4))
    rotation /= np.linalg.norm(rotation, axis=-1, keepdims=True)
    present = rng.random((k, b)) < 0.7
    return key_t, center, size, rotation, present


def _reference_tangent(key_t, center, present, i, bi):
    """The curve's slope (m/s) at annotation (i, bi): the devkit's box_velocity (a difference over its annotated
    neighbours), or at the end of a run of three annotations, the slope of the parabola through them (np.polyfit)."""
    time_s = key_t * 1e-6

    def has(j):
        return 0 <= j < len(key_t) and present[j, bi]

    run = None
    if has(i + 1) and has(i + 2) and not has(i - 1):
        run = [i, i + 1, i + 2]
    elif has(i - 1) and has(i - 2) and not has(i + 1):
        run = [i - 2, i - 1, i]
    if run is not None:
        return np.array([np.polyval(np.polyder(np.polyfit(time_s[run], center[run, bi, j], 2)), time_s[i]) for j in range(3)])
    first, last = (i - 1 if has(i - 1) else i), (i + 1 if has(i + 1) else i)
    return (center[last, bi] - center[first, bi]) / (time_s[last] - time_s[first]) if last > first else np.zeros(3)


def _reference(key_t, center, size, rotation, present, t, hold_us):
    """One box at a time with SciPy's CubicHermiteSpline and pyquaternion's slerp."""
    k, b = present.shape
    out_center, out_valid = np.zeros((len(t), b, 3)), np.zeros((len(t), b), bool)
    out_rotation = np.tile([1.0, 0, 0, 0], (len(t), b, 1))
    for ti, time in enumerate(t):
        for bi in range(b):
            exact = [i for i in range(k) if key_t[i] == time and present[i, bi]]
            before = [i for i in range(k) if key_t[i] <= time]
            after = [i for i in range(k) if key_t[i] > time]
            i0, i1 = (before[-1] if before else None), (after[0] if after else None)
            if exact:
                out_center[ti, bi], out_rotation[ti, bi], out_valid[ti, bi] = center[exact[0], bi], rotation[exact[0], bi], True
            elif i0 is not None and i1 is not None and present[i0, bi] and present[i1, bi]:
                a = (time - key_t[i0]) / (key_t[i1] - key_t[i0])
                tangent = [_reference_tangent(key_t, center, present, i, bi) for i in (i0, i1)]
                curve = CubicHermiteSpline(key_t[[i0, i1]] * 1e-6, center[[i0, i1], bi], np.stack(tangent))
                out_center[ti, bi] = curve(time * 1e-6)
                q = Quaternion.slerp(Quaternion(rotation[i0, bi]), Quaternion(rotation[i1, bi]), a)
                out_rotation[ti, bi], out_valid[ti, bi] = q.elements, True
            else:
                for i in (i0, i1):
                    if i is not None and present[i, bi] and abs(time - key_t[i]) <= hold_us and not out_valid[ti, bi]:
                        moved = _reference_tangent(key_t, center, present, i, bi) * (time - key_t[i]) * 1e-6
                        out_center[ti, bi], out_rotation[ti, bi], out_valid[ti, bi] = center[i, bi] + moved, rotation[i, bi], True
    return out_center, out_rotation, out_valid


@pytest.mark.parametrize("hold_s", [0.0, 0.25])
def test_interpolation_matches_reference(hold_s):
    rng = np.random.default_rng(0)
    key_t, center, size, rotation, present = _random_keyframes(rng)
    t = np.sort(np.concatenate([rng.integers(key_t[0] - 400_000, key_t[-1] + 400_000, 80), key_t]))
    boxes = interpolate_boxes(key_t, center, size, rotation, present, t, hold_s)
    ref_center, ref_rotation, ref_valid = _reference(key_t, center, size, rotation, present, t, hold_s * 1e6)
    np.testing.assert_array_equal(boxes.valid, ref_valid)
    np.testing.assert_allclose(boxes.center, ref_center, atol=1e-9)
    sign = np.sign(np.sum(boxes.rotation * ref_rotation, -1, keepdims=True))  # q and -q are one rotation
    np.testing.assert_allclose(boxes.rotation, sign * ref_rotation, atol=1e-9)


def test_turning_and_braking_cars_are_followed_between_keyframes():
    """True motion sampled at 2 Hz keyframes, queried at 12 Hz: a car on a 20 m turn at 10 m/s, one braking at 3 m/s^2
    and one entering the annotated range (seen at the last keyframe only, so it is extrapolated back)."""
    key_t = np.arange(6, dtype=np.int64) * 500_000
    t = np.arange(0, 2_750_000, 83_333, dtype=np.int64)

    def truth(time_us):
        s = time_us * 1e-6
        turn = 20.0 * np.stack([np.sin(s * 10 / 20), 1 - np.cos(s * 10 / 20), 0 * s], -1)
        braking = np.stack([12 * s - 1.5 * s**2, 0 * s, 0 * s], -1)
        entering = np.stack([8 * s, 5 + 0 * s, 0 * s], -1)
        return np.stack([turn, braking, entering], 1)  # [T, 3 boxes, 3]

    present = np.ones((6, 3), bool)
    present[:, 2] = [False, False, False, False, True, True]
    rotation = np.tile([1.0, 0, 0, 0], (6, 3, 1))
    boxes = interpolate_boxes(key_t, truth(key_t), np.ones((6, 3, 3)), rotation, present, t, 0.25)
    error = np.linalg.norm(boxes.center - truth(t), axis=-1)
    linear = np.linalg.norm(np.stack([np.interp(t, key_t, truth(key_t)[:, 0, j]) for j in range(3)], -1) - truth(t)[:, 0], axis=-1)
    assert linear.max() > 0.1  # what a straight line between the annotations misses on the turn
    assert error[:, 0][t <= key_t[-1]].max() < 0.02
    assert error[:, 1][t <= key_t[-1]].max() < 0.02  # braking: a quadratic, between its central-difference tangents
    assert boxes.valid[:, 2].sum() > 0 and error[:, 2][boxes.valid[:, 2]].max() < 1e-9  # constant velocity: exact


def test_keyframes_are_exact_and_invalid_slots_are_neutral():
    rng = np.random.default_rng(1)
    key_t, center, size, rotation, present = _random_keyframes(rng)
    boxes = interpolate_boxes(key_t, center, size, rotation, present, key_t, 0.0)
    np.testing.assert_array_equal(boxes.valid, present)
    np.testing.assert_array_equal(boxes.center[present], center[present])
    np.testing.assert_array_equal(boxes.size[present], size[present])
    np.testing.assert_array_equal(boxes.rotation[present], rotation[present])
    np.testing.assert_array_equal(boxes.center[~present], 0.0)
    np.testing.assert_array_equal(boxes.rotation[~present], np.tile([1.0, 0, 0, 0], ((~present).sum(), 1)))


def test_one_sided_and_scene_end_policy():
    """Instance 0 is seen at both keyframes, instance 1 only at the second, instance 2 only at the first."""
    key_t = np.array([0, 500_000], dtype=np.int64)
    center = np.zeros((2, 3, 3))
    center[1, :, 0] = 5.0
    rotation = np.broadcast_to(yaw_to_quaternion(np.array([[0.0, 0, 0], [1.0, 1, 1]]))[..., :], (2, 3, 4)).copy()
    present = np.array([[True, False, True], [True, True, False]])
    t = np.array([-300_000, -200_000, 100_000, 200_000, 300_000, 400_000, 700_000, 800_000], dtype=np.int64)
    held = interpolate_boxes(key_t, center, np.ones((2, 3, 3)), rotation, present, t, 0.25)
    np.testing.assert_array_equal(held.valid[:, 0], [False, True, True, True, True, True, True, False])  # scene ends
    np.testing.assert_array_equal(held.valid[:, 1], [False, False, False, False, True, True, True, False])
    np.testing.assert_array_equal(held.valid[:, 2], [False, True, True, True, False, False, False, False])
    np.testing.assert_allclose(held.center[2:6, 0, 0], [1.0, 2.0, 3.0, 4.0])  # linear between the keyframes
    np.testing.assert_allclose(held.center[4:7, 1, 0], 5.0)  # held at its one annotation
    np.testing.assert_allclose(held.velocity[2:6, 0, 0], 10.0)  # 5 m in 0.5 s
    dropped = interpolate_boxes(key_t, center, np.ones((2, 3, 3)), rotation, present, t, 0.0)
    np.testing.assert_array_equal(dropped.valid[:, 0], [False, False, True, True, True, True, False, False])
    assert not dropped.valid[:, 1:].any()


def test_parked_instances_stand_at_their_first_and_last_annotation():
    """Instance 0 is parked at keyframes 1 and 2 (the annotators' few centimetres of jitter between them); instance 1
    drives through the same keyframes; instance 2 is parked at keyframe 1 and drives off by keyframe 2."""
    key_t = np.array([0, 500_000, 1_000_000, 1_500_000], dtype=np.int64)
    center = np.zeros((4, 3, 3))
    center[1:3, 0, 0] = [10.0, 10.03]
    center[1:3, 1, 0] = [0.0, 5.0]
    center[1:3, 2, 0] = [20.0, 21.0]
    rotation = np.tile([1.0, 0, 0, 0], (4, 3, 1))
    present = np.zeros((4, 3), bool)
    present[1:3] = True
    parked = np.zeros((4, 3), bool)
    parked[1:3, 0] = parked[1, 2] = True
    t = np.array([-600_000, 0, 100_000, 400_000, 1_100_000, 1_400_000, 2_000_000, 2_300_000], dtype=np.int64)
    boxes = interpolate_boxes(key_t, center, np.ones((4, 3, 3)), rotation, present, t, 0.25, parked, 1.0)
    np.testing.assert_array_equal(boxes.valid[:, 0], [False, True, True, True, True, True, True, False])
    np.testing.assert_array_equal(boxes.center[1:4, 0, 0], 10.0)  # still, at its first annotation
    np.testing.assert_array_equal(boxes.center[4:7, 0, 0], 10.03)  # still, at its last annotation
    np.testing.assert_array_equal(boxes.velocity[[1, 2, 3, 4, 5, 6], 0], 0.0)
    np.testing.assert_array_equal(boxes.valid[:, 1], [False, False, False, True, True, False, False, False])
    np.testing.assert_array_equal(boxes.valid[:, 2], [False, True, True, True, True, False, False, False])
    np.testing.assert_array_equal(boxes.center[1:4, 2, 0], 20.0)
    unparked = interpolate_boxes(key_t, center, np.ones((4, 3, 3)), rotation, present, t, 0.25)
    np.testing.assert_array_equal(unparked.valid[:, 0], unparked.valid[:, 1])


def test_keyframe_velocity_is_devkit_central_difference():
    key_t = np.array([0, 500_000, 1_000_000, 1_500_000], dtype=np.int64)
    center = np.zeros((4, 1, 3))
    center[:, 0, 0] = [0.0, 1.0, 3.0, 6.0]
    present = np.array([[True], [True], [True], [False]])
    velocity = keyframe_velocity(key_t, center, present)
    np.testing.assert_allclose(velocity[:, 0, 0], [2.0, 3.0, 4.0, 0.0])


def test_nearest_index_matches_brute_force():
    rng = np.random.default_rng(2)
    source = np.sort(rng.choice(10_000_000, 300, replace=False)).astype(np.int64)
    query = rng.integers(-1_000_000, 11_000_000, 500)
    expected = np.argmin(np.abs(source[None, :] - query[:, None]), axis=1)
    np.testing.assert_array_equal(source[nearest_index(source, query)], source[expected])


def test_camera_gap_falls_back_then_names_the_frame():
    frame_t = np.arange(0, 1_000_000, 83_333, dtype=np.int64)
    tokens = np.array([f"front-{i}" for i in range(len(frame_t))])
    cam_t = frame_t + 20_000
    one_missing = np.delete(cam_t, 4)
    index = match_cameras(frame_t, tokens, {"CAM_BACK": one_missing}, 0.1)["CAM_BACK"]
    assert abs(one_missing[index[4]] - frame_t[4]) < 100_000
    with pytest.raises(UserError, match="front-5"):  # front-4 still has capture 3, 63 ms away
        match_cameras(frame_t, tokens, {"CAM_BACK": np.delete(cam_t, [4, 5])}, 0.1)
