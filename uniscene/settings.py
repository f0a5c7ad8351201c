"""One way to turn a config section into typed settings.

Each section a stage reads is a frozen dataclass whose fields are the section's keys, typed and
without defaults (the schema, uniscene/schemas/config.schema.yaml, holds every default, and
uniscene.config fills them in):

    @dataclass(frozen=True)
    class LayoutSettings(Settings):
        SECTION = "layout"
        supersample: int
        ...

    LayoutSettings.from_config(config)         # from a loaded config
    default_settings(LayoutSettings, supersample=2)   # the schema's defaults, changed (tests)

Checks that the schema cannot say go in `__post_init__`.

A class may take only some of a section's keys (LidarSettings trains, LidarCasting casts, LidarSampling samples);
the others are left to the classes that read them. A key that neither the class nor the
schema knows is an error naming it.
"""

import dataclasses
import types
import typing

from uniscene.errors import UserError


class Settings:
    """Base of the settings dataclasses: `SECTION` names the config section they are read from."""

    SECTION = ""

    @classmethod
    def from_config(cls, config: dict):
        return section_settings(cls, config, cls.SECTION)


def section_settings(cls, config: dict, section: str):
    """`cls` built from `config[section]`: its fields' keys, each converted to the field's type."""
    from uniscene.config import schema

    values = config.get(section)
    if not isinstance(values, dict):
        raise UserError(f"config section {section} is missing: add it, or load the config with uniscene.config.load_config, "
                        "which fills in the schema's defaults")
    fields = [field.name for field in dataclasses.fields(cls)]
    known = set(schema()["properties"].get(section, {}).get("properties", {})) | set(fields)
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"config section {section} has unknown key(s) {', '.join(unknown)}: remove or rename them "
                        f"(known keys: {', '.join(sorted(known))})")
    missing = [name for name in fields if name not in values]
    if missing:
        raise UserError(f"config key(s) {', '.join(f'{section}.{name}' for name in missing)} missing: set them, or load the "
                        "config with uniscene.config.load_config, which fills in the schema's defaults")
    hints = typing.get_type_hints(cls)
    return cls(**{name: _convert(values[name], hints[name]) for name in fields})


def default_settings(cls, **changes):
    """`cls` (a Settings) from the schema's defaults of its section, with `changes` (for tests and benchmarks)."""
    from uniscene.config import defaults

    return cls.from_config({cls.SECTION: {**defaults()[cls.SECTION], **changes}})


def _convert(value, hint):
    """YAML's value as the field's type: ints to float fields, lists to tuples (frozen settings hash)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        return next((_convert(value, arg) for arg in args if arg is not type(None) and _fits(value, arg)), value)
    if hint is float and _fits(value, float):
        return float(value)
    if (hint is tuple or origin is tuple) and isinstance(value, (list, tuple)):
        item = args[0] if args else None
        return tuple(_convert(v, item) if item else v for v in value)
    return value


def _fits(value, hint) -> bool:
    base = typing.get_origin(hint) or hint
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if base is tuple:
        return isinstance(value, (list, tuple))
    return isinstance(value, base) if isinstance(base, type) else True
