"""Boxes of B instance slots at T times (frames or sweeps), in the world frame: the one box type of every stage.

The frames stage makes them (`uniscene.frames.interpolate_boxes`) and stores them in frames.zarr;
the labeller reads them back to carve objects; the layout draws them and its editor changes them
(`uniscene.layout.edit.LayoutBoxes`, the same boxes with classes and tokens). A slot where the
instance does not exist at a time has `valid` False, zeros and the identity rotation.

Letters: T times, B box slots.
"""

from dataclasses import dataclass

import numpy as np

from uniscene.geometry import make_transform, matrix_to_quaternion

IDENTITY_QUATERNION = np.array([1.0, 0.0, 0.0, 0.0])


@dataclass(frozen=True)
class Boxes:
    """Boxes at T times; arrays as docs/stores.md (frames.zarr `box_*` and `sweep_box_*`)."""

    center: np.ndarray  # [T, B, 3] metres
    size: np.ndarray  # [T, B, 3] (w, l, h) metres, as nuScenes (float32 in stores)
    rotation: np.ndarray  # [T, B, 4] (w, x, y, z)
    valid: np.ndarray  # [T, B] bool
    velocity: np.ndarray | None = None  # [T, B, 3] m/s where the source has it (frames.zarr), else None

    @classmethod
    def from_dataset(cls, dataset, prefix: str = "box_") -> "Boxes":
        """The `<prefix>center`, `size`, `rotation`, `valid` (and `velocity` where stored) variables, as stored."""
        velocity = f"{prefix}velocity"
        return cls(dataset[f"{prefix}center"].values, dataset[f"{prefix}size"].values, dataset[f"{prefix}rotation"].values,
                   dataset[f"{prefix}valid"].values, dataset[velocity].values if velocity in dataset else None)

    def variables(self, dim: str, prefix: str) -> dict:
        """Dataset variables of the boxes along `dim` (frame or sweep), dtypes as docs/stores.md."""
        out = {
            f"{prefix}center": ((dim, "box", "xyz"), self.center),
            f"{prefix}size": ((dim, "box", "xyz"), self.size.astype(np.float32)),
            f"{prefix}rotation": ((dim, "box", "quat"), self.rotation),
        }
        if self.velocity is not None:
            out[f"{prefix}velocity"] = ((dim, "box", "xyz"), self.velocity.astype(np.float32))
        out[f"{prefix}valid"] = ((dim, "box"), self.valid)
        return out

    def world_from_box(self) -> np.ndarray:
        """[T, B, 4, 4]; identity rotation where the quaternion is zero (an invalid slot)."""
        rotation = np.where(np.linalg.norm(self.rotation, axis=-1, keepdims=True) > 0, self.rotation, IDENTITY_QUATERNION)
        return make_transform(rotation, self.center)

    def in_frame(self, target_from_world: np.ndarray) -> "Boxes":
        """The same boxes with centres and rotations (and velocities) in another frame ([4, 4] or [T, 1, 4, 4])."""
        target_from_box = target_from_world @ self.world_from_box()
        velocity = None if self.velocity is None else np.einsum("...ij,...j->...i", target_from_world[..., :3, :3], self.velocity)
        return Boxes(target_from_box[..., :3, 3], self.size, matrix_to_quaternion(target_from_box[..., :3, :3]), self.valid, velocity)
