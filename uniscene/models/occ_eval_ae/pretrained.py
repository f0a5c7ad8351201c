"""Loading a trained OccEvalAE folder (save_pretrained) with one clear message for each way it can be wrong,
and what the metrics record of it (`describe`)."""

import hashlib
import json
from pathlib import Path

from diffusers.utils import SAFETENSORS_WEIGHTS_NAME

from uniscene.errors import UserError
from uniscene.models.occ_eval_ae.network import OccEvalAE
from uniscene.store import config_hash

WEIGHTS_FILE = SAFETENSORS_WEIGHTS_NAME  # what save_pretrained writes
TRAIN_COMMAND = "`uniscene train-occ-eval-ae` (`snakemake results/models/occ_eval_ae`)"


def load_eval_ae(path, grid_shape: tuple | None = None, device: str = "cpu") -> OccEvalAE:
    """The OccEvalAE saved at `path`, in eval mode on `device`; checked to be an OccEvalAE for `grid_shape` (X, Y, Z)."""
    path = Path(path)
    config_file = path / OccEvalAE.config_name
    if not config_file.is_file():
        raise UserError(f"model folder {path} has no {OccEvalAE.config_name}: point at a folder written by {TRAIN_COMMAND}")
    try:
        saved = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"model folder {path}: {config_file.name} is not valid JSON ({error}): retrain it with {TRAIN_COMMAND}") from None
    kind = saved.get("_class_name") if isinstance(saved, dict) else None
    if kind != OccEvalAE.__name__:
        raise UserError(f"model folder {path} holds a {kind or 'model of unknown kind'}, not an OccEvalAE: point at the evaluation "
                        f"autoencoder's folder (results/models/occ_eval_ae), written by {TRAIN_COMMAND}")
    if grid_shape is not None and tuple(saved.get("grid_shape", ())) != tuple(grid_shape):
        raise UserError(f"the OccEvalAE at {path} was trained for the grid {tuple(saved.get('grid_shape', ()))}, the occupancy here "
                        f"is {tuple(grid_shape)}: use one trained on this grid (grid.range_m, grid.voxel_size_m), or retrain")
    try:
        model = OccEvalAE.from_pretrained(path, low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError, TypeError, EnvironmentError) as error:
        raise UserError(f"model folder {path} cannot be loaded as an OccEvalAE ({type(error).__name__}: {str(error)[:300]}): "
                        f"retrain it with {TRAIN_COMMAND}") from None
    return model.to(device).eval()


def describe(path, model: OccEvalAE) -> dict:
    """The feature model's identity for a metrics file: folder, hash of its config, sha256 of its weights, what it was
    trained on (training.json, where present)."""
    path = Path(path)
    weights = path / WEIGHTS_FILE
    training = {}
    if (path / "training.json").is_file():
        training = json.loads((path / "training.json").read_text())
    return {
        "folder": str(path),
        "config_hash": config_hash(dict(model.config)),
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else None,
        "feature_dim": int(model.config.feature_dim),
        "patch_size": list(model.config.patch_size),
        "settings": training.get("settings"),
        "trained_on_scenes": training.get("scenes"),
        "training_frames": training.get("frames"),
    }
