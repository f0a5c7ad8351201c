"""`uniscene metrics <stage>`: score a stage's stores against the synthetic ground truth.

The stores come from the command line, one of each kind per scene in the same scene order
(`--frames a b --layout a b`); the rule `metrics_score` names them. Each stage's scoring lives
in `uniscene/metrics/<stage>.py` as `evaluate(config, scenes) -> dict` (scenes: a list of
`uniscene.metrics.SceneStores`); the result is written to --out (results/metrics/<stage>.json).
"""

import importlib
import json
import time

from uniscene.errors import UserError
from uniscene.metrics import scene_stores
from uniscene.store import write_json_atomic

# stage -> the store kinds its metrics read (each a --<kind> argument)
INPUTS = {
    "frames": ("frames",),
    "occ_label": ("frames", "occ_label"),
    "layout": ("frames", "layout"),
    "render": ("frames", "render"),
    "lidar": ("frames", "lidar", "lidar_raycast", "lidar_gen"),
    "occ_gen": ("frames", "layout", "occ_label", "occ_gen", "occ_gen_ddim50", "occ_gen_leak_noise_prior", "occ_gen_leak_meta"),
    "video": ("frames", "render", "video", "video_no_crossview", "video_gen", "render_gen"),
}
OPTIONAL_KINDS = ("lidar_gen", "video_gen", "render_gen")  # scored where given (the rule gives them; a hand run may leave them out)
STAGES = tuple(INPUTS)
HELD_OUT_STAGES = ("lidar", "occ_gen", "video")  # scored on the held-out scenes (every scene where none is held out)
# where a kind's store lies under results/scenes/<scene>/ when it is not <kind>.zarr (the generated chain)
STORE_PATHS = {"occ_gen": "gen/occ_gen", "lidar_gen": "gen/lidar", "video_no_crossview": "variants/video_no_crossview",
               "video_gen": "gen/video", "render_gen": "gen/render", **{f"occ_gen_{v}": f"gen/variants/{v}" for v in ("ddim50", "leak_noise_prior", "leak_meta")}}
HELP_OF_KIND = {
    "frames": "frames.zarr of every scene to score (they name the scenes)",
    "occ_label": "occ_label.zarr of the same scenes, in the same order",
    "layout": "layout.zarr of the same scenes, in the same order",
    "render": "render.zarr of the same scenes, in the same order",
    "lidar": "lidar.zarr (learned sweeps) of the same scenes, in the same order",
    "lidar_raycast": "lidar_raycast.zarr (`uniscene lidar --method raycast`, the baseline) of the same scenes, in the same order",
    "lidar_gen": "gen/lidar.zarr (learned sweeps from the generated occupancy) of the same scenes, in the same order (optional)",
    "occ_gen": "gen/occ_gen.zarr (occupancy generated from the layout) of the same scenes, in the same order",
    "occ_gen_ddim50": "gen/variants/ddim50.zarr (DDIM 50 steps on the first occ_dit.eval_frames frames) of the same scenes",
    "occ_gen_leak_noise_prior": "gen/variants/leak_noise_prior.zarr (the reference's noise-prior leak) of the same scenes",
    "occ_gen_leak_meta": "gen/variants/leak_meta.zarr (the reference's meta leak) of the same scenes",
    "video": "video.zarr (generated from the label renders, cross-view attention on) of the same scenes, in the same order",
    "video_no_crossview": "variants/video_no_crossview.zarr (the same, cross-view attention off) of the same scenes, in the same order",
    "video_gen": "gen/video.zarr (video of the generated chain) of the same scenes, in the same order (optional; needs --render-gen)",
    "render_gen": "gen/render.zarr (the generated chain's render) of the same scenes, in the same order (optional, with --video-gen)",
}
# stage -> the trained models its metrics read (each a --<name> DIR argument)
MODEL_ARGUMENTS = {"video": {"segmenter": "the trained segmentation network (results/models/segmenter, `uniscene train-segmenter`)"},
                   "occ_gen": {"occ_eval_ae": "the evaluation-only occupancy autoencoder whose features F3D and MMD compare "
                                              "(results/models/occ_eval_ae, `uniscene train-occ-eval-ae`)"}}


def _flag(kind: str) -> str:
    return f"--{kind.replace('_', '-')}"


def config_stage(args) -> str:
    return f"metrics_{args.stage}"


def add_arguments(parser):
    parser.add_argument("stage", choices=STAGES, help="the stage to score")
    for kind, help_text in HELP_OF_KIND.items():
        parser.add_argument(_flag(kind), nargs="+", metavar="STORE", help=help_text)
    for models in MODEL_ARGUMENTS.values():
        for name, help_text in models.items():
            parser.add_argument(_flag(name), metavar="DIR", help=help_text)
    parser.add_argument("--out", required=True, help="JSON file to write (results/metrics/<stage>.json)")


def main(args, config):
    if config["dataset"]["kind"] != "synthetic":
        raise UserError("metrics need the ground truth that only the synthetic dataset has (dataset.kind: synthetic)")
    missing = [_flag(kind) for kind in INPUTS[args.stage] if not getattr(args, kind) and kind not in OPTIONAL_KINDS]
    if missing:
        raise UserError(f"`uniscene metrics {args.stage}` scores the stores given by {', '.join(missing)}: name one per scene")
    unread = [_flag(kind) for kind in HELP_OF_KIND if kind not in INPUTS[args.stage] and getattr(args, kind)]
    if unread:
        raise UserError(f"`uniscene metrics {args.stage}` does not read {', '.join(unread)}: it reads "
                        f"{', '.join(_flag(kind) for kind in INPUTS[args.stage])}")
    scenes = scene_stores({kind: getattr(args, kind) for kind in INPUTS[args.stage] if getattr(args, kind)})
    models = MODEL_ARGUMENTS.get(args.stage, {})
    unread_models = [_flag(name) for stage_models in MODEL_ARGUMENTS.values() for name in stage_models if name not in models and getattr(args, name)]
    missing_models = [_flag(name) for name in models if not getattr(args, name)]
    if unread_models or missing_models:
        raise UserError(f"`uniscene metrics {args.stage}` " + (f"does not read {', '.join(unread_models)}" if unread_models else
                        f"needs {', '.join(missing_models)} DIR (a trained model folder)"))
    module = importlib.import_module(f"uniscene.metrics.{args.stage}")
    start = time.perf_counter()
    payload = module.evaluate(config, scenes, **{name: getattr(args, name) for name in models})
    payload["evaluation_seconds"] = round(time.perf_counter() - start, 3)
    write_json_atomic(args.out, payload)
    print(json.dumps(payload, indent=2, default=str)[:4000])
