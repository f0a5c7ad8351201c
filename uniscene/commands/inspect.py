"""`uniscene inspect PATH`: what a store, a model folder or an export holds (uniscene/inspect.py).

For a store: stage, scene, frames, each variable's dims, shape, dtype, chunks, codecs and bytes, the
attributes and the provenance. For a model folder: each component's class, config and parameter
count, and the training summary. Text for humans; `--json` prints the same as one JSON object.
"""

import json

HELP = "show what a store, model folder or export holds (arrays, chunking, provenance, config)"


def add_arguments(parser):
    parser.add_argument("path", help="a store (results/scenes/<scene>/<stage>.zarr), model folder (results/models/<name>) or export folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def main(args):
    from uniscene.inspect import describe, format_text

    description = describe(args.path)
    print(json.dumps(description, indent=1, sort_keys=True, default=str) if args.json else format_text(description))
