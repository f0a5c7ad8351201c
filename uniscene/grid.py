"""The occupancy grid: an ego-frame box (x forward, y left, z up) cut into cubic voxels.

Arrays on the grid are indexed [x, y, z]. The default (docs/architecture.md, Conventions) is Occ3D's grid:
range [-40, -40, -1, 40, 40, 5.4] m at 0.4 m, shape (200, 200, 16).
"""

from dataclasses import dataclass

import numpy as np

from uniscene.errors import UserError
from uniscene.settings import Settings


@dataclass(frozen=True)
class OccGrid(Settings):
    SECTION = "grid"  # its default, in the schema, is the grid above

    range_m: tuple[float, ...]  # (x_min, y_min, z_min, x_max, y_max, z_max), metres, ego frame
    voxel_size_m: float

    def __post_init__(self):
        if len(self.range_m) != 6:
            raise UserError(f"grid.range_m must have 6 numbers (x_min y_min z_min x_max y_max z_max), got {list(self.range_m)}")
        if self.voxel_size_m <= 0:
            raise UserError(f"grid.voxel_size_m must be positive, got {self.voxel_size_m}")
        extent = np.asarray(self.range_m[3:]) - np.asarray(self.range_m[:3])
        cells = extent / self.voxel_size_m
        if np.any(extent <= 0) or not np.allclose(cells, np.round(cells), atol=1e-6):
            raise UserError(
                f"grid.range_m {list(self.range_m)} must span a whole number of voxels of "
                f"grid.voxel_size_m={self.voxel_size_m} along each axis"
            )

    def to_attrs(self) -> dict:
        """The store attributes that record this grid (the one place they are written)."""
        return {"grid_range_m": [float(v) for v in self.range_m], "voxel_size_m": float(self.voxel_size_m)}

    @classmethod
    def from_attrs(cls, attrs: dict, path) -> "OccGrid":
        """The grid a store was made on, from its attributes (`to_attrs`); UserError naming `path` if they are absent."""
        if "grid_range_m" not in attrs or "voxel_size_m" not in attrs:
            raise UserError(f"store {path} has no grid attributes (grid_range_m, voxel_size_m): delete it and rerun the stage that writes it")
        return cls(tuple(float(v) for v in attrs["grid_range_m"]), float(attrs["voxel_size_m"]))

    def check_store(self, dataset, path) -> None:
        """UserError unless the store `dataset` (read from `path`) was made on this grid: range, voxel size and the
        sizes of its `x`, `y` (and `z`) dimensions. Every stage that reads an occupancy or layout store calls this."""
        stored = OccGrid.from_attrs(dataset.attrs, path)
        same = np.allclose(stored.range_m, self.range_m, rtol=0, atol=1e-6) and abs(stored.voxel_size_m - self.voxel_size_m) <= 1e-9
        sizes = {dim: dataset.sizes[dim] for dim in "xyz" if dim in dataset.sizes}
        if not same or any(sizes[dim] != self.shape["xyz".index(dim)] for dim in sizes):
            raise UserError(
                f"store {path} is on the grid {list(stored.range_m)} at {stored.voxel_size_m} m (x y z sizes "
                f"{list(sizes.values())}), the config's grid is {list(self.range_m)} at {self.voxel_size_m} m {list(self.shape)}: "
                f"set grid.range_m / grid.voxel_size_m to match, or rerun the stage that writes the store with this grid"
            )

    @property
    def lower_m(self) -> np.ndarray:  # [3]
        return np.asarray(self.range_m[:3], dtype=np.float64)

    @property
    def upper_m(self) -> np.ndarray:  # [3]
        return np.asarray(self.range_m[3:], dtype=np.float64)

    @property
    def shape(self) -> tuple:  # (X, Y, Z)
        return tuple(int(round(v)) for v in (self.upper_m - self.lower_m) / self.voxel_size_m)

    def voxel_centers(self) -> np.ndarray:
        """Ego-frame centres of all voxels, [X, Y, Z, 3] float32."""
        axes = [self.lower_m[i] + (np.arange(n) + 0.5) * self.voxel_size_m for i, n in enumerate(self.shape)]
        return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).astype(np.float32)

    def index_of(self, points_ego: np.ndarray):
        """Voxel index of ego-frame points [N, 3] -> (ijk [N, 3] int64, inside [N] bool)."""
        ijk = np.floor((np.asarray(points_ego)[:, :3] - self.lower_m) / self.voxel_size_m).astype(np.int64)
        inside = np.all((ijk >= 0) & (ijk < np.asarray(self.shape)), axis=1)
        return ijk, inside
