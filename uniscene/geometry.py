"""Rigid transforms and quaternions.

4x4 matrices are named `target_from_source` and compose so that neighbours match:
`ego_from_lidar = ego_from_world @ world_from_lidar`. Quaternions are (w, x, y, z), as nuScenes.
"""

import numpy as np


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrices of unit quaternions (w, x, y, z): [..., 4] -> [..., 3, 3]."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def matrix_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternions (w, x, y, z) with w >= 0 of rotation matrices: [..., 3, 3] -> [..., 4]."""
    r = np.asarray(rotation, dtype=np.float64)
    # Shepperd's method, vectorised: pick the largest of the four squared components.
    t = np.stack(
        [
            1 + r[..., 0, 0] + r[..., 1, 1] + r[..., 2, 2],
            1 + r[..., 0, 0] - r[..., 1, 1] - r[..., 2, 2],
            1 - r[..., 0, 0] + r[..., 1, 1] - r[..., 2, 2],
            1 - r[..., 0, 0] - r[..., 1, 1] + r[..., 2, 2],
        ],
        -1,
    )
    k = np.argmax(t, axis=-1)
    s = np.sqrt(np.maximum(np.take_along_axis(t, k[..., None], -1)[..., 0], 1e-12)) * 2
    m = lambda i, j: r[..., i, j]  # noqa: E731
    candidates = np.stack(
        [
            np.stack([s / 4, (m(2, 1) - m(1, 2)) / s, (m(0, 2) - m(2, 0)) / s, (m(1, 0) - m(0, 1)) / s], -1),
            np.stack([(m(2, 1) - m(1, 2)) / s, s / 4, (m(0, 1) + m(1, 0)) / s, (m(0, 2) + m(2, 0)) / s], -1),
            np.stack([(m(0, 2) - m(2, 0)) / s, (m(0, 1) + m(1, 0)) / s, s / 4, (m(1, 2) + m(2, 1)) / s], -1),
            np.stack([(m(1, 0) - m(0, 1)) / s, (m(0, 2) + m(2, 0)) / s, (m(1, 2) + m(2, 1)) / s, s / 4], -1),
        ],
        -2,
    )
    q = np.take_along_axis(candidates, k[..., None, None].repeat(4, -1), -2)[..., 0, :]
    q = q * np.where(q[..., :1] < 0, -1.0, 1.0)
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def yaw_to_quaternion(yaw: np.ndarray) -> np.ndarray:
    """Quaternions (w, x, y, z) of rotations by `yaw` radians about +z: [...] -> [..., 4]."""
    yaw = np.asarray(yaw, dtype=np.float64)
    zeros = np.zeros_like(yaw)
    return np.stack([np.cos(yaw / 2), zeros, zeros, np.sin(yaw / 2)], -1)


def quaternion_yaw(q: np.ndarray) -> np.ndarray:
    """Yaw (radians, about +z) of quaternions (w, x, y, z): [..., 4] -> [...]."""
    rotation = quaternion_to_matrix(q)
    return np.arctan2(rotation[..., 1, 0], rotation[..., 0, 0])


def slerp(q0: np.ndarray, q1: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical linear interpolation of unit quaternions: q0, q1 [..., 4], t [...] -> [..., 4]."""
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)[..., None]
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(dot < 0, -q1, q1)  # take the short way round
    dot = np.clip(np.abs(dot), -1.0, 1.0)
    theta = np.arccos(dot)
    sin_theta = np.sin(theta)
    near = sin_theta < 1e-6  # nearly equal: linear interpolation is exact enough and stable
    safe = np.where(near, 1.0, sin_theta)
    w0 = np.where(near, 1 - t, np.sin((1 - t) * theta) / safe)
    w1 = np.where(near, t, np.sin(t * theta) / safe)
    q = w0 * q0 + w1 * q1
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def make_transform(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """4x4 transforms from rotations [..., 3, 3] (or quaternions [..., 4]) and translations [..., 3]."""
    rotation = np.asarray(rotation, dtype=np.float64)
    if rotation.shape[-1] == 4:
        rotation = quaternion_to_matrix(rotation)
    translation = np.asarray(translation, dtype=np.float64)
    out = np.zeros(rotation.shape[:-2] + (4, 4))
    out[..., :3, :3] = rotation
    out[..., :3, 3] = translation
    out[..., 3, 3] = 1.0
    return out


def invert_transform(target_from_source: np.ndarray) -> np.ndarray:
    """source_from_target of rigid 4x4 transforms [..., 4, 4]."""
    rotation = target_from_source[..., :3, :3]
    translation = target_from_source[..., :3, 3]
    rotation_t = np.swapaxes(rotation, -1, -2)
    return make_transform(rotation_t, -np.einsum("...ij,...j->...i", rotation_t, translation))


def transform_points(target_from_source: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform [4, 4] to points [N, 3] (extra columns are kept as they are)."""
    points = np.asarray(points)
    out = points.copy()
    out[:, :3] = points[:, :3] @ target_from_source[:3, :3].T + target_from_source[:3, 3]
    return out
