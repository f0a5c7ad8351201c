"""The interpolation core (uniscene.frames) against slow, obvious references, and its policy."""

import numpy as np
import pytest
from pyquaternion import Quaternion

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


def _reference(key_t, center, size, rotation, present, t, hold_us):
    """One box at a time with np.interp and pyquaternion's slerp (the devkit's tools)."""
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
                out_center[ti, bi] = [np.interp(time, [key_t[i0], key_t[i1]], [center[i0, bi, j], center[i1, bi, j]]) for j in range(3)]
                q = Quaternion.slerp(Quaternion(rotation[i0, bi]), Quaternion(rotation[i1, bi]), a)
                out_rotation[ti, bi], out_valid[ti, bi] = q.elements, True
            elif i0 is not None and present[i0, bi] and time - key_t[i0] <= hold_us:
                out_center[ti, bi], out_rotation[ti, bi], out_valid[ti, bi] = center[i0, bi], rotation[i0, bi], True
            elif i1 is not None and present[i1, bi] and key_t[i1] - time <= hold_us:
                out_center[ti, bi], out_rotation[ti, bi], out_valid[ti, bi] = center[i1, bi], rotation[i1, bi], True
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
