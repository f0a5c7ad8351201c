"""Loading a trained OccVAE folder (save_pretrained) with one clear message for each way it can be wrong."""

import json
from pathlib import Path

from uniscene.errors import UserError
from uniscene.models.occ_vae.network import OccVAE


def load_vae(path, grid_shape: tuple | None = None, device: str = "cpu") -> OccVAE:
    """The OccVAE saved at `path`, in eval mode on `device`; checked to be an OccVAE for `grid_shape` (X, Y, Z)."""
    path = Path(path)
    config_file = path / OccVAE.config_name
    if not config_file.is_file():
        raise UserError(f"model folder {path} has no {OccVAE.config_name}: point at a folder written by `uniscene train-occ-vae` "
                        f"(results/models/occ_vae)")
    try:
        saved = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"model folder {path}: {config_file.name} is not valid JSON ({error}): retrain the model") from None
    kind = saved.get("_class_name") if isinstance(saved, dict) else None
    if kind != OccVAE.__name__:
        raise UserError(f"model folder {path} holds a {kind or 'model of unknown kind'}, not an OccVAE: point at the occupancy "
                        f"VAE's folder (results/models/occ_vae)")
    if grid_shape is not None and tuple(saved.get("grid_shape", ())) != tuple(grid_shape):
        raise UserError(f"the OccVAE at {path} was trained for the grid {tuple(saved.get('grid_shape', ()))}, the occupancy here is "
                        f"{tuple(grid_shape)}: use a model trained on this grid (grid.range_m, grid.voxel_size_m), or retrain")
    try:
        vae = OccVAE.from_pretrained(path, low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError, TypeError) as error:
        raise UserError(f"model folder {path} cannot be loaded as an OccVAE ({type(error).__name__}: {str(error)[:300]}): its "
                        f"weights do not match its {OccVAE.config_name}; retrain it with `uniscene train-occ-vae`") from None
    return vae.to(device).eval()
