"""Loading and checking the workflow config (the same checks and defaults as the Snakefile's).

The CLI accepts `--config` as a YAML or JSON file, or as inline YAML/JSON. The schema,
uniscene/schemas/config.schema.yaml, is the one source of every default: `fill_defaults`
writes the `default:` of each key a config leaves out, then `validate_config` checks every
value. A hand-run command and a Snakemake job therefore see the same values.
"""

import copy
import functools
import json
from pathlib import Path

import yaml

from uniscene.errors import UserError

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"


@functools.cache
def schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def load_config(source: str | None) -> dict:
    """Config from a YAML/JSON file path or inline YAML/JSON text; defaults filled in, validated."""
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
    if config is None:  # an empty file: every key at its default
        config = {}
    if not isinstance(config, dict):
        raise UserError(f"{where} must hold a mapping of config keys")
    return checked_config(config, where)


def checked_config(config: dict, where: str = "config") -> dict:
    """`config` with the schema's defaults filled in (in place) and every value checked."""
    fill_defaults(config)
    validate_config(config, where)
    return config


@functools.cache
def _filling_validator():
    """A validator class whose `properties` check first writes the defaults of absent keys."""
    import jsonschema

    base = jsonschema.Draft202012Validator

    def properties(validator, properties, instance, schema):
        if validator.is_type(instance, "object"):
            for name, subschema in properties.items():
                if name not in instance and "default" in subschema:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": properties})


def fill_defaults(config: dict) -> dict:
    """Write the schema's default of every key that `config` leaves out (nested sections too)."""
    for _ in _filling_validator()(schema()).iter_errors(config):
        pass  # errors are reported by validate_config, on the filled config
    return config


def defaults() -> dict:
    """The config that a file naming no key gets: every default of the schema."""
    return fill_defaults({})


def validate_config(config: dict, where: str = "config") -> None:
    """Raise UserError naming the first offending key, what is wrong and what the key holds."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return
    error = errors[0]
    path = [str(p) for p in error.absolute_path]
    if error.validator == "additionalProperties":
        known = ", ".join(sorted(error.schema.get("properties", {})))
        unknown = ", ".join(sorted(set(error.instance) - set(error.schema.get("properties", {}))))
        section = ".".join(path)
        raise UserError(f"{where}: unknown config key(s) {unknown}{' in ' + section if section else ''}: "
                        f"remove or rename them (known keys: {known})")
    key = ".".join(path) or "(top level)"
    description = _description(path)
    raise UserError(f"{where}: invalid value for key '{key}': {error.message}" + (f" (expected: {description})" if description else ""))


def _description(path: list[str]) -> str:
    node = schema()
    for name in path:
        node = node.get("properties", {}).get(name)
        if node is None:
            return ""
    text = " ".join(str(node.get("description", "")).split())
    return text.split("; ")[0].split(". ")[0][:200]  # its first clause: the message stays one short line


def resolve_device(config: dict) -> str:
    import torch

    device = config["device"]
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("config key 'device' is 'cuda' but no CUDA device is visible: set device: auto or cpu")
    return device


def dumps(config: dict) -> str:
    """Compact JSON of a config, for passing through a shell command line."""
    return json.dumps(config, separators=(",", ":"), sort_keys=True)
