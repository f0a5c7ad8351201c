"""Which scenes the workflow processes: names known at DAG-build time, checked against the dataset.

Fast on purpose: Snakemake calls this on every invocation (850 nuScenes scenes in a few ms),
so it reads only `scene.json` (real nuScenes) or the config (the synthetic dataset, which
may not have been written yet).
"""

import json
from pathlib import Path

from uniscene.errors import UserError

# nuScenes' official validation split (nuscenes.utils.splits.val) is used for val_scenes: auto.


def synthetic_scene_names(config: dict) -> list[str]:
    return [f"synth-{i:04d}" for i in range(int(config["synth"]["num_scenes"]))]


def dataset_scene_names(config: dict) -> list[str]:
    """All scene names of the configured dataset, in dataset order."""
    dataset = config["dataset"]
    if dataset["kind"] == "synthetic":
        return synthetic_scene_names(config)
    table = Path(dataset["dataroot"]) / dataset["version"] / "scene.json"
    if not table.is_file():
        raise UserError(
            f"nuScenes table {table} not found: set dataset.dataroot to the folder that holds "
            f"{dataset['version']}/ (and samples/, sweeps/, maps/), or dataset.version to the version you have"
        )
    try:
        return [record["name"] for record in json.loads(table.read_text())]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise UserError(f"nuScenes table {table} is not a valid scene table ({error}): re-extract the dataset") from error


def selected_scenes(config: dict) -> list[str]:
    """The scenes named by dataset.scenes ("all" or a list), each checked to exist."""
    available = dataset_scene_names(config)
    wanted = config["dataset"]["scenes"]
    if wanted == "all":
        return available
    known = set(available)
    unknown = [name for name in wanted if name not in known]
    if unknown:
        hint = ", ".join(available[:5]) + (", ..." if len(available) > 5 else "")
        raise UserError(f"config key dataset.scenes names unknown scene(s) {unknown}: the dataset has {hint}")
    return list(wanted)


def check_scene(config: dict, scene: str) -> None:
    """UserError unless the dataset has `scene` (selected or not: a scene's stages do not read the selection)."""
    available = dataset_scene_names(config)
    if scene not in available:
        hint = ", ".join(available[:5]) + (", ..." if len(available) > 5 else "")
        raise UserError(f"unknown scene '{scene}': the dataset has {hint} (`uniscene scenes --config CONFIG` lists the selected ones)")


def val_scenes(config: dict) -> list[str]:
    """Held-out scenes among the selected ones (models never train on them)."""
    scenes = selected_scenes(config)
    wanted = config["dataset"]["val_scenes"]
    if wanted != "auto":
        missing = [s for s in wanted if s not in scenes]
        if missing:
            raise UserError(f"config key dataset.val_scenes names scenes {missing} that are not in dataset.scenes")
        return list(wanted)
    if config["dataset"]["kind"] == "synthetic":
        return scenes[-1:] if len(scenes) > 1 else []
    from nuscenes.utils.splits import val as nuscenes_val

    official = set(nuscenes_val)
    return [s for s in scenes if s in official]


def train_scenes(config: dict) -> list[str]:
    held_out = set(val_scenes(config))
    return [s for s in selected_scenes(config) if s not in held_out]
