"""Loading a saved model folder with one clear UserError for each way it can be wrong (shared by the occupancy models)."""

import json
from pathlib import Path

from uniscene.errors import UserError


def load_checked(cls, path, grid_shape: tuple | None, device: str, retrain: str, folder: str):
    """`cls.from_pretrained(path)` in eval mode on `device`, after checking that `path` holds a `cls` for `grid_shape`.

    retrain: how the user writes such a folder (a command); folder: where the workflow keeps it.
    """
    path, name = Path(path), cls.__name__
    config_file = path / cls.config_name
    if not config_file.is_file():
        raise UserError(f"model folder {path} has no {cls.config_name}: point at a folder written by {retrain} ({folder})")
    try:
        saved = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"model folder {path}: {config_file.name} is not valid JSON ({error}): retrain it with {retrain}") from None
    kind = saved.get("_class_name") if isinstance(saved, dict) else None
    if kind != name:
        raise UserError(f"model folder {path} holds a {kind or 'model of unknown kind'}, not an {name}: point at the {name}'s "
                        f"folder ({folder}), written by {retrain}")
    if grid_shape is not None and tuple(saved.get("grid_shape", ())) != tuple(grid_shape):
        raise UserError(f"the {name} at {path} was trained for the grid {tuple(saved.get('grid_shape', ()))}, the occupancy here is "
                        f"{tuple(grid_shape)}: use a model trained on this grid (grid.range_m, grid.voxel_size_m), or retrain")
    try:
        model = cls.from_pretrained(path, low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError, TypeError) as error:
        raise UserError(f"model folder {path} cannot be loaded as an {name} ({type(error).__name__}: {str(error)[:300]}): its "
                        f"weights do not match its {cls.config_name}; retrain it with {retrain}") from None
    return model.to(device).eval()
