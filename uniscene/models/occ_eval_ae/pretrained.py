"""Loading a trained OccEvalAE folder (save_pretrained) with one clear message for each way it can be wrong,
and what the metrics record of it (`describe`)."""

import hashlib
import json
from pathlib import Path

from diffusers.utils import SAFETENSORS_WEIGHTS_NAME

from uniscene.models.checked_load import load_checked
from uniscene.models.occ_eval_ae.network import OccEvalAE
from uniscene.store import config_hash

WEIGHTS_FILE = SAFETENSORS_WEIGHTS_NAME  # what save_pretrained writes
TRAIN_COMMAND = "`uniscene train-occ-eval-ae`"


def load_eval_ae(path, grid_shape: tuple | None = None, device: str = "cpu") -> OccEvalAE:
    """The OccEvalAE saved at `path`, in eval mode on `device`; checked to be an OccEvalAE for `grid_shape` (X, Y, Z)."""
    return load_checked(OccEvalAE, path, grid_shape, device, TRAIN_COMMAND, "results/models/occ_eval_ae")


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
