"""What a store, a model folder or an export holds, for humans (`uniscene inspect PATH`) and machines (`--json`).

`describe(path)` returns a JSON-ready dict:
- a store (a uniscene Zarr store): stage, scene, frames, each variable (dims, shape, dtype, chunk shape,
  codecs, bytes stored on disk and raw), the root attributes, and the provenance (version, git
  commit, config subset and hash, input fingerprints, seed, time);
- a model folder (`save_pretrained`: config.json, or a pipeline's model_index.json with a folder per
  component): each component's class, config and parameter count (read from the safetensors headers,
  no weights loaded), and training.json's summary (steps, weights, seconds, first and last losses);
- an export folder (export.json, written by `uniscene export`): its summary and provenance.
`format_text(description)` renders it as aligned text.
"""

import json
import struct
from pathlib import Path

from uniscene.errors import UserError
from uniscene.store import PROVENANCE_KEY, open_store

CHECKPOINT_FILE = "diffusion_pytorch_model.safetensors"


def describe(path) -> dict:
    """A description of the store, model folder or export at `path` (UserError where it is none of them)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist: pass a store (results/scenes/<scene>/<stage>.zarr), a model folder "
                        f"(results/models/<name>) or an export folder")
    if (path / "zarr.json").is_file():
        return describe_store(path)
    if (path / "model_index.json").is_file() or (path / "config.json").is_file():
        return describe_model(path)
    if (path / "export.json").is_file():
        return {"kind": "export", "path": str(path), **_read_json(path / "export.json")}
    raise UserError(f"{path} is no uniscene store (no zarr.json), model folder (no config.json or model_index.json) or export "
                    f"(no export.json): pass one of those")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{path} cannot be read as JSON ({error}): rewrite it (rerun the stage that writes it)") from None


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def describe_store(path: Path) -> dict:
    dataset = open_store(path)
    arrays = (_read_json(path / "zarr.json").get("consolidated_metadata") or {}).get("metadata") or {}
    variables = {}
    for name in dataset.variables:
        meta = arrays.get(name, {})
        var = dataset[name]
        codecs = [c.get("name") + (f"({c['configuration'].get('cname')}-{c['configuration'].get('clevel')}"
                                   f"{' ' + c['configuration']['shuffle'] if c['configuration'].get('shuffle') not in (None, 'shuffle') else ''})"
                                   if c.get("name") == "blosc" else "") for c in meta.get("codecs", [])]
        chunks = ((meta.get("chunk_grid") or {}).get("configuration") or {}).get("chunk_shape")
        variables[name] = {
            "dims": list(var.dims), "shape": list(var.shape), "dtype": str(var.dtype),
            "chunks": list(chunks) if chunks is not None else None, "codecs": codecs,
            "stored_bytes": _folder_bytes(path / name) if (path / name).is_dir() else 0,
            "raw_bytes": int(var.size * var.dtype.itemsize) if var.dtype.kind not in "OUT" else None,
            "coordinate": name in dataset.coords,
        }
    attrs = {k: v for k, v in dataset.attrs.items() if k != PROVENANCE_KEY}
    meta = dataset.attrs[PROVENANCE_KEY]
    return {
        "kind": "store", "path": str(path), "stage": meta["stage"], "scene": attrs.get("scene"),
        "frames": int(dataset.sizes["frame"]) if "frame" in dataset.sizes else None,
        "dims": {k: int(v) for k, v in dataset.sizes.items()}, "variables": variables,
        "stored_bytes": _folder_bytes(path), "attrs": attrs,
        "provenance": {k: v for k, v in meta.items() if k != "chunks"},
    }


def safetensors_parameters(path: Path) -> int:
    """Number of parameters in a .safetensors file, from its JSON header (no tensor is read)."""
    try:
        with open(path, "rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(size))
    except (OSError, ValueError, struct.error) as error:
        raise UserError(f"weights file {path} cannot be read ({error}): it is damaged; retrain the model") from None
    total = 0
    for name, entry in header.items():
        if name != "__metadata__":
            count = 1
            for n in entry["shape"]:
                count *= int(n)
            total += count
    return total


def _component(folder: Path) -> dict:
    config = _read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    weights = sorted(folder.glob("*.safetensors"))
    return {
        "class": config.get("_class_name"), "config": {k: v for k, v in config.items() if not k.startswith("_")},
        "parameters": sum(safetensors_parameters(w) for w in weights) if weights else None,
        "weights": [w.name for w in weights],
    }


def training_summary(training: dict) -> dict:
    """Steps, weights, seconds, number of history records and the first and last losses of a training.json."""
    history = training.get("history") or []
    seconds = {k: v for k, v in training.items() if k.endswith("seconds")}
    return {
        "steps": training.get("steps"), "weights": training.get("weights"), "world_size": training.get("world_size"),
        "device": training.get("device"), **seconds, "records": len(history),
        "first": {"step": history[0].get("step"), "losses": history[0].get("losses")} if history else None,
        "last": {"step": history[-1].get("step"), "losses": history[-1].get("losses")} if history else None,
    }


def describe_model(path: Path) -> dict:
    components = {}
    if (path / "model_index.json").is_file():
        index = _read_json(path / "model_index.json")
        pipeline = index.get("_class_name")
        for name, value in index.items():
            if name.startswith("_"):
                continue
            component = _component(path / name) if (path / name).is_dir() else {"config": {}, "parameters": None, "weights": []}
            if (path / name / "scheduler_config.json").is_file():
                component["config"] = {k: v for k, v in _read_json(path / name / "scheduler_config.json").items() if not k.startswith("_")}
            component["class"] = component.get("class") or (value[1] if isinstance(value, list) and len(value) == 2 else None)
            components[name] = component
    else:
        pipeline = None
        components["model"] = _component(path)
    out = {
        "kind": "model", "path": str(path), "pipeline": pipeline, "components": components,
        "parameters": sum(c["parameters"] or 0 for c in components.values()), "stored_bytes": _folder_bytes(path),
        "files": sorted(p.name for p in path.iterdir()),
    }
    if (path / "training.json").is_file():
        out["training"] = training_summary(_read_json(path / "training.json"))
    return out


# ------------------------------------------------------------------------------------------ text


def _bytes(n) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _short(value, width: int = 100) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= width else text[:width - 3] + "..."


def _table(rows: list) -> list:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def _losses(record) -> str:
    if not record:
        return "-"
    return f"step {record['step']}: " + ", ".join(f"{k} {v:.4g}" for k, v in (record.get("losses") or {}).items())


def format_text(description: dict) -> str:
    kind = description["kind"]
    lines = []
    if kind == "store":
        d, prov = description, description["provenance"]
        lines.append(f"{d['path']}: {d['stage']} store of scene {d['scene']}, "
                     f"{d['frames'] if d['frames'] is not None else 'no'} frames, {_bytes(d['stored_bytes'])} on disk")
        lines.append("dims: " + ", ".join(f"{k}={v}" for k, v in d["dims"].items()))
        lines.append("variables:")
        rows = [("name", "dims", "shape", "dtype", "chunks", "codecs", "stored", "raw")]
        for name, v in d["variables"].items():
            rows.append((name + (" (coord)" if v["coordinate"] else ""), ",".join(v["dims"]), "x".join(map(str, v["shape"])) or "()",
                         v["dtype"], "x".join(map(str, v["chunks"])) if v["chunks"] else "-", " + ".join(v["codecs"]) or "-",
                         _bytes(v["stored_bytes"]), _bytes(v["raw_bytes"])))
        lines += _table(rows)
        lines.append("attributes:")
        lines += [f"  {k}: {_short(v)}" for k, v in d["attrs"].items()] or ["  (none)"]
        lines.append("provenance:")
        for key in ("stage", "version", "git_commit", "created_utc", "seed", "config_hash", "format"):
            lines.append(f"  {key}: {prov.get(key)}")
        lines.append("  config: " + _short(prov.get("config"), 400))
        lines.append("  inputs:" + ("" if prov.get("inputs") else " (none)"))
        lines += [f"    {p}  {fp}" for p, fp in (prov.get("inputs") or {}).items()]
    elif kind == "model":
        d = description
        lines.append(f"{d['path']}: {'pipeline ' + d['pipeline'] if d['pipeline'] else 'model'}, {d['parameters']:,} parameters, "
                     f"{_bytes(d['stored_bytes'])} on disk")
        for name, c in d["components"].items():
            params = f"{c['parameters']:,} parameters" if c["parameters"] is not None else "no weights"
            lines.append(f"  {name}: {c['class']}, {params}")
            lines.append(f"    config: {_short(c['config'], 400)}")
        training = d.get("training")
        if training:
            seconds = ", ".join(f"{k} {v}" for k, v in training.items() if k.endswith("seconds"))
            lines.append(f"training: {training['steps']} steps, {training['weights']} weights, {training['records']} history records"
                         + (f", {seconds}" if seconds else "") + (f", device {training['device']}" if training.get("device") else ""))
            lines.append(f"  first {_losses(training['first'])}")
            lines.append(f"  last  {_losses(training['last'])}")
        else:
            lines.append("training: no training.json")
        lines.append("files: " + ", ".join(d["files"]))
    else:
        d = dict(description)
        prov = d.pop("provenance", {}) or {}
        lines.append(f"{d.pop('path')}: {d.pop('format', '?')} export")
        d.pop("kind")
        lines += [f"  {k}: {_short(v, 200)}" for k, v in d.items()]
        lines.append(f"provenance: uniscene {prov.get('version')} ({prov.get('git_commit')}), {prov.get('created_utc')}")
        lines += [f"    {p}  {fp}" for p, fp in (prov.get("inputs") or {}).items()]
    return "\n".join(lines)
