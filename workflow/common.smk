# Set-up shared by every rule: scene lists, paths, the config handed to `uniscene`.
import sys

sys.path.insert(0, workflow.basedir)

from uniscene.config import dumps
from uniscene.data import scenes as _scenes
from uniscene.errors import UserError

try:
    SCENES = _scenes.selected_scenes(config)
    TRAIN_SCENES = _scenes.train_scenes(config)
    VAL_SCENES = _scenes.val_scenes(config)
except UserError as error:
    raise WorkflowError(str(error))

SYNTHETIC = config["dataset"]["kind"] == "synthetic"
DATAROOT = config["dataset"]["dataroot"]
CONFIG_JSON = dumps(config)


wildcard_constraints:
    scene="|".join(SCENES) if SCENES else "(?!)",


def dataset_input(wildcards=None):
    """The synthetic dataset is a rule output; a real nuScenes is just read."""
    return DATAROOT if SYNTHETIC else []


def occupancy_store(scene, stage):
    """Occupancy that `stage` (render or lidar) starts from: its config's source, label or generated."""
    name = {"label": "occ_label", "generated": "occ_gen"}[config[stage].get("source", "label")]
    return f"results/scenes/{scene}/{name}.zarr"


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
    if SYNTHETIC:
        outputs += expand("results/metrics/{stage}.json", stage=["frames", "occ_label", "layout", "render", "lidar"])
    return outputs
