"""Quaternions and rigid transforms against pyquaternion (nuScenes' own) and numpy's linear algebra."""

import numpy as np
import pytest
from pyquaternion import Quaternion

from uniscene import geometry

N = 200


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def random_quaternions(rng, n: int) -> np.ndarray:
    """[n, 4] unit quaternions (w, x, y, z), uniform on the sphere, w of either sign."""
    q = rng.normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def random_transforms(rng, n: int) -> np.ndarray:
    return geometry.make_transform(random_quaternions(rng, n), rng.uniform(-50, 50, size=(n, 3)))


def assert_same_rotation(q_a: np.ndarray, q_b: np.ndarray) -> None:
    """q and -q are the same rotation."""
    sign = np.where(np.sum(q_a * q_b, axis=-1, keepdims=True) < 0, -1.0, 1.0)
    np.testing.assert_allclose(q_a, sign * q_b, atol=1e-9)


def test_quaternion_to_matrix_matches_pyquaternion(rng):
    q = random_quaternions(rng, N)
    rotation = geometry.quaternion_to_matrix(q)  # [N, 3, 3]
    expected = np.stack([Quaternion(*qi).rotation_matrix for qi in q])
    np.testing.assert_allclose(rotation, expected, atol=1e-12)
    np.testing.assert_allclose(rotation @ np.swapaxes(rotation, -1, -2), np.broadcast_to(np.eye(3), rotation.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rotation), 1.0, atol=1e-12)


def test_quaternion_matrix_round_trip(rng):
    q = random_quaternions(rng, N)
    q_back = geometry.matrix_to_quaternion(geometry.quaternion_to_matrix(q))
    assert np.all(q_back[:, 0] >= 0)
    assert_same_rotation(q_back, q)
    # The branches of Shepperd's method: identity and half turns about each axis (w = 0).
    special = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0.6, 0.8, 0]], dtype=float)
    assert_same_rotation(geometry.matrix_to_quaternion(geometry.quaternion_to_matrix(special)), special)


def test_matrix_to_quaternion_matches_pyquaternion(rng):
    rotation = geometry.quaternion_to_matrix(random_quaternions(rng, N))
    expected = np.stack([Quaternion(matrix=r).elements for r in rotation])
    assert_same_rotation(geometry.matrix_to_quaternion(rotation), expected)


def test_batched_shapes(rng):
    q = random_quaternions(rng, 5 * 7).reshape(5, 7, 4)
    rotation = geometry.quaternion_to_matrix(q)
    assert rotation.shape == (5, 7, 3, 3)
    assert geometry.matrix_to_quaternion(rotation).shape == (5, 7, 4)
    assert geometry.slerp(q, q[::-1], np.full((5, 7), 0.3)).shape == (5, 7, 4)


def test_yaw_round_trip(rng):
    yaw = rng.uniform(-np.pi, np.pi, size=N)
    q = geometry.yaw_to_quaternion(yaw)
    np.testing.assert_allclose(geometry.quaternion_yaw(q), yaw, atol=1e-12)
    np.testing.assert_allclose([Quaternion(*qi).yaw_pitch_roll[0] for qi in q], yaw, atol=1e-12)


def test_slerp_matches_pyquaternion(rng):
    q0 = random_quaternions(rng, N)
    q1 = random_quaternions(rng, N)
    q1[:10] = q0[:10] + 1e-9 * rng.normal(size=(10, 4))  # nearly equal: the linear branch
    q1[10:20] = -q0[10:20]  # the same rotation written with the opposite sign
    t = rng.uniform(0, 1, size=N)
    expected = np.stack([Quaternion.slerp(Quaternion(*a), Quaternion(*b), amount=ti).elements for a, b, ti in zip(q0, q1, t)])
    assert_same_rotation(geometry.slerp(q0, q1, t), expected)


def test_slerp_end_points_and_constant_speed(rng):
    q0 = random_quaternions(rng, N)
    q1 = random_quaternions(rng, N)
    assert_same_rotation(geometry.slerp(q0, q1, np.zeros(N)), q0)
    assert_same_rotation(geometry.slerp(q0, q1, np.ones(N)), q1)

    def angle(a, b):
        return 2 * np.arccos(np.clip(np.abs(np.sum(a * b, axis=-1)), 0, 1))

    t = rng.uniform(0, 1, size=N)
    np.testing.assert_allclose(angle(q0, geometry.slerp(q0, q1, t)), t * angle(q0, q1), atol=1e-7)


def test_invert_transform_matches_linalg(rng):
    world_from_ego = random_transforms(rng, N)
    ego_from_world = geometry.invert_transform(world_from_ego)
    np.testing.assert_allclose(ego_from_world, np.linalg.inv(world_from_ego), atol=1e-9)
    np.testing.assert_allclose(world_from_ego @ ego_from_world, np.broadcast_to(np.eye(4), (N, 4, 4)), atol=1e-9)


def test_make_transform_from_quaternion_or_matrix(rng):
    q = random_quaternions(rng, N)
    translation_m = rng.uniform(-10, 10, size=(N, 3))
    from_q = geometry.make_transform(q, translation_m)
    np.testing.assert_allclose(from_q, geometry.make_transform(geometry.quaternion_to_matrix(q), translation_m))
    np.testing.assert_allclose(from_q[:, 3], np.broadcast_to([0, 0, 0, 1], (N, 4)))


def test_compose_and_transform_points(rng):
    world_from_ego, ego_from_lidar = random_transforms(rng, 2)
    points = np.concatenate([rng.uniform(-40, 40, size=(N, 3)), rng.uniform(0, 1, size=(N, 2))], axis=1)  # [N, 5]
    world_from_lidar = world_from_ego @ ego_from_lidar
    in_world = geometry.transform_points(world_from_lidar, points)
    np.testing.assert_allclose(in_world, geometry.transform_points(world_from_ego, geometry.transform_points(ego_from_lidar, points)))
    np.testing.assert_array_equal(in_world[:, 3:], points[:, 3:])  # extra columns ride along
    expected = np.stack([Quaternion(matrix=world_from_lidar[:3, :3]).rotate(p) for p in points[:, :3]]) + world_from_lidar[:3, 3]
    np.testing.assert_allclose(in_world[:, :3], expected, atol=1e-9)
    back = geometry.transform_points(geometry.invert_transform(world_from_lidar), in_world)
    np.testing.assert_allclose(back, points, atol=1e-9)
