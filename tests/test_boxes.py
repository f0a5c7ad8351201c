"""uniscene.boxes.Boxes: its transforms against matrices built by hand, its store variables round trip."""

import numpy as np
import xarray as xr

from uniscene.boxes import Boxes
from uniscene.geometry import make_transform, quaternion_to_matrix, yaw_to_quaternion


def _boxes(rng, times=3, slots=4) -> Boxes:
    rotation = yaw_to_quaternion(rng.uniform(-np.pi, np.pi, (times, slots)))  # [T, B, 4]
    valid = rng.random((times, slots)) < 0.7
    rotation[~valid] = 0.0  # an invalid slot may hold a zero quaternion
    return Boxes(rng.normal(size=(times, slots, 3)) * 10, rng.uniform(0.5, 5, (times, slots, 3)), rotation, valid,
                 rng.normal(size=(times, slots, 3)))


def test_world_from_box_and_in_frame():
    rng = np.random.default_rng(0)
    boxes = _boxes(rng)
    world_from_box = boxes.world_from_box()  # [T, B, 4, 4]
    valid = boxes.valid
    np.testing.assert_allclose(world_from_box[..., :3, 3], boxes.center)
    np.testing.assert_allclose(world_from_box[valid][:, :3, :3], quaternion_to_matrix(boxes.rotation[valid]))
    np.testing.assert_allclose(world_from_box[~valid][:, :3, :3], np.broadcast_to(np.eye(3), (int((~valid).sum()), 3, 3)))

    ego_from_world = make_transform(yaw_to_quaternion(0.7), [3.0, -2.0, 0.5])
    moved = boxes.in_frame(ego_from_world)
    np.testing.assert_allclose(moved.center, boxes.center @ ego_from_world[:3, :3].T + ego_from_world[:3, 3])
    np.testing.assert_allclose(moved.world_from_box(), ego_from_world @ world_from_box, atol=1e-12)
    np.testing.assert_allclose(moved.velocity, boxes.velocity @ ego_from_world[:3, :3].T)
    assert moved.size is boxes.size and moved.valid is boxes.valid
    no_velocity = Boxes(boxes.center, boxes.size, boxes.rotation, boxes.valid)
    assert no_velocity.in_frame(ego_from_world).velocity is None


def test_store_variables_round_trip():
    boxes = _boxes(np.random.default_rng(1))
    dataset = xr.Dataset(boxes.variables("sweep", "sweep_box_"))
    assert dataset["sweep_box_center"].dims == ("sweep", "box", "xyz") and dataset["sweep_box_rotation"].dims == ("sweep", "box", "quat")
    assert dataset["sweep_box_size"].dtype == np.float32 and dataset["sweep_box_velocity"].dtype == np.float32
    back = Boxes.from_dataset(dataset, "sweep_box_")
    np.testing.assert_array_equal(back.center, boxes.center)
    np.testing.assert_array_equal(back.rotation, boxes.rotation)
    np.testing.assert_array_equal(back.valid, boxes.valid)
    np.testing.assert_array_equal(back.size, boxes.size.astype(np.float32))
    np.testing.assert_array_equal(back.velocity, boxes.velocity.astype(np.float32))
    without_velocity = Boxes.from_dataset(dataset.drop_vars("sweep_box_velocity"), "sweep_box_")
    assert without_velocity.velocity is None and "box_velocity" not in without_velocity.variables("frame", "box_")
