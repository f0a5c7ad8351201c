"""`uniscene metrics <stage>`: score a stage's outputs against the synthetic ground truth.

Each stage's scoring lives in `uniscene/metrics/<stage>.py` as `evaluate(config, results) -> dict`;
the result is written to results/metrics/<stage>.json.
"""

import importlib
import json
import time

from uniscene.errors import UserError
from uniscene.store import write_json_atomic

STAGES = ("frames", "occ_label", "layout", "render", "lidar")


def config_stage(args) -> str:
    return f"metrics_{args.stage}"


def add_arguments(parser):
    parser.add_argument("stage", choices=STAGES, help="the stage to score")
    parser.add_argument("--results", default="results", help="the workflow's results folder")
    parser.add_argument("--out", required=True, help="JSON file to write (results/metrics/<stage>.json)")


def main(args, config):
    if config["dataset"]["kind"] != "synthetic":
        raise UserError("metrics need the ground truth that only the synthetic dataset has (dataset.kind: synthetic)")
    module = importlib.import_module(f"uniscene.metrics.{args.stage}")
    start = time.perf_counter()
    payload = module.evaluate(config, args.results)
    payload["evaluation_seconds"] = round(time.perf_counter() - start, 3)
    write_json_atomic(args.out, payload)
    print(json.dumps(payload, indent=2, default=str)[:4000])
