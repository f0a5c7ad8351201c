"""Which config keys each stage reads: one table for the rules, the commands and the provenance.

A stage sees only its subset of the config. `uniscene <command>` keeps only its stage's keys
after loading the config (a read outside them fails at once, in the tests too); its rule
passes exactly that subset as a `params` value, so Snakemake reruns a job when, and only when,
a key of its stage changes (editing `render.min_alpha` reruns the renders and what reads them,
never the labelling or a model training); and its stores record that subset and its hash.

Keys are dotted paths: "render" is a whole section, "synth.lidar_azimuth_steps" one key of it;
`section_keys("occ_label", but=(...))` is a section less the keys that another stage reads.

Adding a stage is one line here, e.g.

    "occ_vae_train": ("device", "seed", "grid", "occ_vae"),

then `STAGE = "occ_vae_train"` in its command module (uniscene/commands/<name>.py), and in its
rule (the file holds the same subset, under a name made of its hash, for a short job line):

    params:
        config=STAGE_CONFIG["occ_vae_train"],
        config_file=STAGE_CONFIG_FILE["occ_vae_train"],
    shell:
        "uniscene occ-vae-train --config {params.config_file:q} ... > {log} 2>&1"
"""

import json
from pathlib import Path

from uniscene.config import schema


def section_keys(section: str, but: tuple = ()) -> tuple:
    """The dotted keys of a config section (as the schema lists them), less `but`."""
    return tuple(f"{section}.{key}" for key in schema()["properties"][section]["properties"] if key not in but)


SCENE_LIST = ("dataset", "synth.num_scenes")  # what the scene selection reads (uniscene/data/scenes.py)
BEAMS = ("dataset.kind", "synth.lidar_azimuth_steps")  # the LIDAR_TOP pattern (models/lidar/beams.py)
VIDEO_GEN = tuple(f"video.{key}" for key in ("sampler", "inference_steps", "guidance_scale", "first_frame"))  # models/video/settings.py
OCC_GEN = tuple(f"occ_dit.{key}" for key in ("sampler", "inference_steps", "guidance_scale", "leak_noise_prior",
                                               "noise_prior_weight", "leak_meta", "compile"))  # generation (models/occ_dit/settings.py)

STAGE_KEYS = {
    "synth": ("seed", "grid", "synth", "dataset.version"),
    "frames": ("dataset.kind", "dataset.dataroot", "dataset.version", "dataset.info_pkl", "synth.num_scenes", "frames"),
    "scenes": SCENE_LIST,
    "occ_label": ("device", "grid", "occ_label"),
    "layout": ("device", "grid", "layout"),
    "layout_edit": ("device",),
    "render": ("device", "grid", "render"),
    "train_lidar": ("device", "seed", "grid", *BEAMS, *section_keys("lidar", but=("ray_drop",))),
    "lidar": ("device", "seed", "grid", *BEAMS, "lidar.ray_drop", "lidar.cast_batch"),
    "lidar_raycast": ("device", "grid", *BEAMS, "lidar.cast_batch"),  # the baseline draws nothing: no ray_drop, no seed
    # the dataset's tables order Occ3D's samples (occ_vae.source occ3d / both)
    "train_occ_vae": ("device", "seed", "grid", "dataset.dataroot", "dataset.version", *section_keys("occ_vae", but=("eval_batch",))),
    "eval_occ_vae": ("device", "grid", "dataset.dataroot", "dataset.version", "occ_vae.clip_frames", "occ_vae.eval_batch"),
    "train_occ_dit": ("device", "seed", "grid", *(k for k in section_keys("occ_dit") if k not in OCC_GEN + ("occ_dit.eval_frames",))),
    "occ_gen": ("device", "seed", "grid", *OCC_GEN),
    "train_video": ("device", "seed", *section_keys("video", but=tuple(k.split(".")[1] for k in VIDEO_GEN))),
    "video": ("device", "seed", *VIDEO_GEN),
    "export_nuscenes": ("export.jpeg_quality",),  # the exports read their stores, and this
    "export_occ3d": (),
    "export_infos": (),
    "report": ("grid",),  # the report's figures (uniscene report): the occupancy views read the grid
    "metrics_frames": SCENE_LIST,
    "metrics_occ_label": ("grid", *SCENE_LIST),
    "metrics_layout": SCENE_LIST,
    "metrics_render": ("grid", *SCENE_LIST, "render"),
    "metrics_lidar": (*SCENE_LIST, *BEAMS),
    "metrics_occ_gen": ("device", "grid", *SCENE_LIST, "occ_dit.eval_frames"),
    "train_occ_eval_ae": ("device", "grid", "occ_eval_ae"),  # its own seed: occ_eval_ae.seed
    "train_segmenter": ("device", "seed", "dataset.kind", "dataset.dataroot", "segmenter"),
    "metrics_video": ("device", *SCENE_LIST, "video_metrics"),
}


def stage_config(config: dict, stage: str) -> dict:
    """The part of `config` (defaults filled in) that `stage` reads, nested as in the config, keys sorted."""
    subset = {}
    for key in STAGE_KEYS[stage]:
        *sections, name = key.split(".")
        source, target = config, subset
        for section in sections:
            source, target = source[section], target.setdefault(section, {})
        target[name] = source[name]
    return json.loads(json.dumps(subset, sort_keys=True))


def write_stage_config(config: dict, stage: str, folder) -> Path:
    """`folder/<stage>-<hash>.json` holding the stage's subset; written (atomically) only where missing.

    The hash is the one the stage's stores record, so a store's provenance names its file.
    """
    from uniscene.store import atomic_file, config_hash

    subset = stage_config(config, stage)
    path = Path(folder) / f"{stage}-{config_hash(subset)}.json"
    if not path.is_file():
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(subset, indent=1, sort_keys=True) + "\n")
    return path
