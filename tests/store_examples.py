"""Small datasets of every declared store layout (uniscene/store_layouts.py), for tests.

`example_dataset(stage)`: every variable and attribute of the layout, random values of the declared
dtypes. `complete(dataset, stage)`: a test's stand-in store (say, an occupancy holding only the
true semantics) with the declared variables it does not model added as zeros / False / "" and its
missing attributes as "stand-in", so that it passes `write_store`'s layout check.
"""

import numpy as np
import xarray as xr

from uniscene.grid import OccGrid
from uniscene.store_layouts import FIXED_DIM_SIZES, LAYOUTS, STR

SIZES = {"frame": 3, "cam": 2, "sweep": 4, "box": 2, "x": 4, "y": 5, "z": 2, "h": 3, "w": 4, "point": 7, "frame_edge": 4}
VOXEL_SIZE_M = 0.5


def _sizes(stage: str, sizes: dict) -> dict:
    return {**SIZES, **FIXED_DIM_SIZES, **LAYOUTS[stage].dim_sizes, **sizes}


def _random(dtype: str, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    if dtype == STR:
        return np.array([f"s{i}" for i in range(int(np.prod(shape)))], dtype=object).reshape(shape)
    if dtype == "bool":
        return rng.random(shape) > 0.5
    if np.dtype(dtype).kind == "f":
        return rng.normal(size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -100), min(info.max, 100), size=shape, dtype=dtype, endpoint=True)


def grid_for(sizes: dict) -> OccGrid:
    x, y, z = (sizes.get(d, 1) * VOXEL_SIZE_M for d in "xyz")
    return OccGrid((0.0, 0.0, 0.0, x, y, z), VOXEL_SIZE_M)


def example_dataset(stage: str, seed: int = 0, **sizes) -> xr.Dataset:
    """Every variable of `stage`'s layout (optional ones too) with random values, and every attribute."""
    layout, rng = LAYOUTS[stage], np.random.default_rng(seed)
    sizes = _sizes(stage, sizes)
    data, coords = {}, {}
    for name, var in layout.variables.items():
        values = _random(var.dtype, tuple(sizes[d] for d in var.dims), rng)
        (coords if var.coordinate else data)[name] = (var.dims, values)
    attrs = {name: f"example {name}" for name in {**layout.attrs, **layout.optional_attrs}}
    if layout.on_grid:
        attrs.update(grid_for(sizes).to_attrs())
    return xr.Dataset(data, coords=coords, attrs=attrs)


def complete(dataset: xr.Dataset, stage: str) -> xr.Dataset:
    """`dataset` with the required variables and attributes of `stage` it lacks, as zeros / False / "" / "stand-in"."""
    layout = LAYOUTS[stage]
    sizes = {**FIXED_DIM_SIZES, **layout.dim_sizes, **dict(dataset.sizes)}  # a dim the stand-in lacks has size 0
    out = dataset.copy()
    for name, var in layout.variables.items():
        if name in out.variables or var.optional:
            continue
        shape = tuple(sizes.get(d, 0) for d in var.dims)
        values = np.full(shape, "", dtype=object) if var.dtype == STR else np.zeros(shape, dtype=var.dtype)
        out = out.assign_coords({name: (var.dims, values)}) if var.coordinate else out.assign({name: (var.dims, values)})
    for name in layout.attrs:
        out.attrs.setdefault(name, "stand-in")
    return out
