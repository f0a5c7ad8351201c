"""Loading and checking the workflow config (the same one Snakemake validates).

The CLI accepts `--config` as a YAML file or as inline YAML/JSON (which is how the rules pass
Snakemake's resolved config). Values are checked against workflow/schemas/config.schema.yaml.
"""

import json
from pathlib import Path

import yaml

from uniscene.errors import UserError

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


def load_config(source: str | None) -> dict:
    """Config from a YAML file path or inline YAML/JSON text; validated against the schema."""
    if source is None:
        source = "config.yaml"
    path = Path(source)
    if "\n" not in source and not source.lstrip().startswith("{") and len(source) < 4096:
        if not path.is_file():
            raise UserError(f"config file {source} not found: pass --config PATH (e.g. the repository's config.yaml)")
        try:
            config = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise UserError(f"config file {source} is not valid YAML: {error}") from error
        where = source
    else:
        try:
            config = yaml.safe_load(source)
        except yaml.YAMLError as error:
            raise UserError(f"inline --config is not valid YAML/JSON: {error}") from error
        where = "--config"
    if not isinstance(config, dict):
        raise UserError(f"{where} must hold a mapping of config keys")
    validate_config(config, where)
    return config


def validate_config(config: dict, where: str = "config") -> None:
    """Raise UserError naming the first offending key and its allowed values."""
    import jsonschema

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise UserError(f"{where}: invalid value for key '{key}': {error.message}")


def config_subset(config: dict, keys) -> dict:
    """The part of the config that a stage uses (recorded, with its hash, in the store)."""
    return {key: config[key] for key in keys if key in config}


def resolve_device(config: dict) -> str:
    import torch

    device = config.get("device", "auto")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("config key 'device' is 'cuda' but no CUDA device is visible: set device: auto or cpu")
    return device


def dumps(config: dict) -> str:
    """Compact JSON of a config, for passing through a shell command line."""
    return json.dumps(config, separators=(",", ":"), sort_keys=True)
