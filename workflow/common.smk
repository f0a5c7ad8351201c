# Set-up shared by every rule: the config checked (defaults filled in), scene lists, paths, each stage's config.
import re
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)

from uniscene.config import checked_config
from uniscene.data import scenes as _scenes
from uniscene.errors import UserError
from uniscene.stage_config import STAGE_KEYS, stage_config, write_stage_config


def config_files() -> list[str]:
    """The config files in the order Snakemake merges them: the Snakefile's, then --configfile's."""
    cli_files = [Path(f) for f in workflow.config_settings.configfiles]
    files = [Path(f).absolute() for f in workflow.configfiles if Path(f).absolute() not in cli_files] + cli_files
    return [str(f.relative_to(Path.cwd())) if f.is_relative_to(Path.cwd()) else str(f) for f in files]


def config_sources() -> str:
    """The config's files and --config, as a user error names them (the same line as `uniscene <stage>`)."""
    return " + ".join(config_files() + (["--config"] if workflow.config_settings.config else [])) or "config"


try:
    checked_config(config, config_sources())
    SCENES = _scenes.selected_scenes(config)
    TRAIN_SCENES = _scenes.train_scenes(config)
    VAL_SCENES = _scenes.val_scenes(config)
except UserError as error:
    raise WorkflowError(str(error)) from None

SYNTHETIC = config["dataset"]["kind"] == "synthetic"
DATAROOT = config["dataset"]["dataroot"]
# Each stage's config keys (uniscene/stage_config.py): a rule's `params` hold them, so a job reruns when its
# stage's keys change and no other; its shell line passes the same subset as a small JSON file named by its hash.
STAGE_CONFIG = {stage: stage_config(config, stage) for stage in STAGE_KEYS}
STAGE_CONFIG_FILE = {stage: str(write_stage_config(config, stage, ".snakemake/uniscene/config")) for stage in STAGE_KEYS}
# Training jobs ask for train_gpus GPUs; with more than one they run one process per GPU under torchrun, which
# `uniscene` joins into a process group (uniscene/training/distributed.py: DDP, the global batch split among them).
TRAIN_GPUS = config["train_gpus"]
TRAIN_LAUNCH = "uniscene" if TRAIN_GPUS == 1 else f"torchrun --standalone --nproc_per_node {TRAIN_GPUS} -m uniscene.cli"


wildcard_constraints:
    scene="|".join(SCENES) if SCENES else "(?!)",


def dataset_input(wildcards=None):
    """The synthetic dataset is a rule output; a real nuScenes is just read."""
    return DATAROOT if SYNTHETIC else []


def unknown_scene(wildcards):
    """Input of a target under results/scenes/ whose scene is not selected: stops the DAG with a clear line."""
    raise WorkflowError(
        f"scene '{wildcards.scene}' is not among the scenes the config selects ({len(SCENES)}: "
        f"{', '.join(SCENES[:3])}{', ...' if len(SCENES) > 3 else ''}): list them with "
        f"`uniscene scenes --config {(config_files() or ['CONFIG'])[-1]}`, or add it to config key dataset.scenes"
    )


def scene_outputs(scene):
    return [
        f"results/scenes/{scene}/frames.zarr",
        f"results/scenes/{scene}/occ_label.zarr",
        f"results/scenes/{scene}/occ_label.png",
        f"results/scenes/{scene}/layout.zarr",
        f"results/scenes/{scene}/render.zarr",
        f"results/scenes/{scene}/lidar.zarr",
    ]


def all_outputs():
    outputs = [path for scene in SCENES for path in scene_outputs(scene)]
    outputs += ["results/models/occ_vae", "results/metrics/occ_vae.json"]  # scored against its own input: any dataset
    # the generated chain: occupancy from each held-out scene's layout, its renders and LiDAR (rules/occ_gen.smk)
    outputs += ["results/models/occ_dit"] + [f"results/scenes/{scene}/gen/{name}" for scene in VAL_SCENES
                                              for name in ("occ_gen.zarr", "occ_gen.png", "render.zarr", "lidar.zarr")]
    # video (rules/video.smk): the held-out scenes' label renders with and without cross-view attention, and the generated chain
    outputs += ["results/models/video", "results/models/video_no_crossview"] + [
        f"results/scenes/{scene}/{name}" for scene in VAL_SCENES
        for name in ("video.zarr", "video.mp4", "variants/video_no_crossview.zarr", "variants/video_no_crossview.mp4",
                     "gen/video.zarr", "gen/video.mp4")]
    # the exports of the held-out scenes' label and generated chains (rules/export.smk)
    outputs += expand("results/export/{chain}/{name}", chain=["label", "gen"], name=["nuscenes", "occ3d", "nuscenes_infos.pkl"])
    if SYNTHETIC:
        outputs += expand("results/metrics/{stage}.json", stage=["frames", "occ_label", "layout", "render", "lidar", "occ_gen", "video"])
    return outputs


# A target of a scene that the config does not select matches only this rule, whose input says so.
rule scene_unknown:
    input:
        unknown_scene,
    output:
        "results/scenes/{scene}/{path}",
    wildcard_constraints:
        scene=f"(?!(?:{'|'.join(map(re.escape, SCENES))})/)[^/]+",
        path=".+",
