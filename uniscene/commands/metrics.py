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
    "lidar": ("frames", "lidar", "lidar_raycast"),
    "occ_gen": ("frames", "layout", "occ_label", "occ_gen", "occ_gen_ddim50", "occ_gen_leak_noise_prior", "occ_gen_leak_meta"),
}
STAGES = tuple(INPUTS)
HELD_OUT_STAGES = ("lidar", "occ_gen")  # scored on the held-out scenes (every scene where none is held out)
# where a kind's store lies under results/scenes/<scene>/ when it is not <kind>.zarr (the generated chain)
STORE_PATHS = {"occ_gen": "gen/occ_gen", **{f"occ_gen_{v}": f"gen/variants/{v}" for v in ("ddim50", "leak_noise_prior", "leak_meta")}}
HELP_OF_KIND = {
    "frames": "frames.zarr of every scene to score (they name the scenes)",
    "occ_label": "occ_label.zarr of the same scenes, in the same order",
    "layout": "layout.zarr of the same scenes, in the same order",
    "render": "render.zarr of the same scenes, in the same order",
    "lidar": "lidar.zarr (learned sweeps) of the same scenes, in the same order",
    "lidar_raycast": "lidar_raycast.zarr (`uniscene lidar --method raycast`, the baseline) of the same scenes, in the same order",
    "occ_gen": "gen/occ_gen.zarr (occupancy generated from the layout) of the same scenes, in the same order",
    "occ_gen_ddim50": "gen/variants/ddim50.zarr (DDIM 50 steps on the first occ_dit.eval_frames frames) of the same scenes",
    "occ_gen_leak_noise_prior": "gen/variants/leak_noise_prior.zarr (the reference's noise-prior leak) of the same scenes",
    "occ_gen_leak_meta": "gen/variants/leak_meta.zarr (the reference's meta leak) of the same scenes",
}


def _flag(kind: str) -> str:
    return f"--{kind.replace('_', '-')}"


def config_stage(args) -> str:
    return f"metrics_{args.stage}"


def add_arguments(parser):
    parser.add_argument("stage", choices=STAGES, help="the stage to score")
    for kind, help_text in HELP_OF_KIND.items():
        parser.add_argument(_flag(kind), nargs="+", metavar="STORE", help=help_text)
    parser.add_argument("--out", required=True, help="JSON file to write (results/metrics/<stage>.json)")


def main(args, config):
    if config["dataset"]["kind"] != "synthetic":
        raise UserError("metrics need the ground truth that only the synthetic dataset has (dataset.kind: synthetic)")
    missing = [_flag(kind) for kind in INPUTS[args.stage] if not getattr(args, kind)]
    if missing:
        raise UserError(f"`uniscene metrics {args.stage}` scores the stores given by {', '.join(missing)}: name one per scene")
    unread = [_flag(kind) for kind in HELP_OF_KIND if kind not in INPUTS[args.stage] and getattr(args, kind)]
    if unread:
        raise UserError(f"`uniscene metrics {args.stage}` does not read {', '.join(unread)}: it reads "
                        f"{', '.join(_flag(kind) for kind in INPUTS[args.stage])}")
    scenes = scene_stores({kind: getattr(args, kind) for kind in INPUTS[args.stage]})
    module = importlib.import_module(f"uniscene.metrics.{args.stage}")
    start = time.perf_counter()
    payload = module.evaluate(config, scenes)
    payload["evaluation_seconds"] = round(time.perf_counter() - start, 3)
    write_json_atomic(args.out, payload)
    print(json.dumps(payload, indent=2, default=str)[:4000])
