"""`uniscene <stage>`: one subcommand per pipeline stage; the Snakemake rules call these.

Each subcommand lives in `uniscene/commands/<name>.py`, which defines `HELP`, `STAGE` (its
row of uniscene/stage_config.py's table; or `config_stage(args)` where the arguments pick it),
`add_arguments(parser)` and `main(args, config)`. `main` gets only its stage's config keys,
defaults filled in. Modules are imported only when their subcommand runs, so `uniscene --help`
stays fast.
"""

import argparse
import importlib
import sys

from uniscene import __version__
from uniscene.errors import UserError

COMMANDS = {
    "synth": "write the embedded synthetic dataset (nuScenes format) and its ground truth",
    "frames": "12 Hz frames of one scene: poses, cameras, LiDAR, interpolated boxes",
    "occ-label": "semantic occupancy labels of one scene from aggregated LiDAR",
    "layout": "BEV layouts of one scene (map layers and object footprints)",
    "layout-edit": "edit a layout store: drop, add, move or re-class objects",
    "train-occ-vae": "train the occupancy VAE on label occupancy (or Occ3D's)",
    "eval-occ-vae": "score a trained occupancy VAE on occupancy stores or an Occ3D folder",
    "train-occ-dit": "train the layout-conditioned occupancy DiT on the occupancy VAE's latents",
    "occ-gen": "generate the semantic occupancy of one scene from its layout",
    "train-video": "train the multi-view video model on the training scenes' images and label renders",
    "video": "generate the six-camera video of one scene from its rendered maps",
    "render": "render occupancy into per-camera semantic and depth maps",
    "train-lidar": "train the LiDAR generator on label occupancy",
    "lidar": "generate LiDAR sweeps of one scene from occupancy",
    "train-segmenter": "train the video metrics' segmentation network on the synthetic dataset's true images and classes",
    "train-occ-eval-ae": "train the evaluation-only occupancy autoencoder (the F3D / MMD features) on the training scenes' label occupancy",
    "metrics": "score a stage against the synthetic ground truth",
    "export": "export stores as a nuScenes version, Occ3D labels or mmdet3d info files",
    "inspect": "show what a store, model folder or export holds (arrays, chunking, provenance, config)",
    "report": "draw the report's figures: occupancy 3D views, LiDAR beside the recorded sweep, training curves, metrics, stage times",
    "scenes": "list the scenes that the config selects (and their train/val split)",
    "install-profile": "install a Snakemake profile (slurm, local) by name in your Snakemake config folder",
}

NO_CONFIG = {"install-profile", "inspect"}  # commands that read no workflow config (they run from any folder)


OUTPUT_ARGUMENTS = ("out", "preview")  # and every export*: checked writable before a command computes


def _module(name: str):
    return importlib.import_module(f"uniscene.commands.{name.replace('-', '_')}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uniscene", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"uniscene {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<stage>")
    for name, help_text in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name not in NO_CONFIG:
            sub_parser.add_argument(
                "--config", default="config.yaml",
                help="config YAML/JSON file, or inline YAML/JSON; keys it leaves out take the schema's defaults",
            )
        if name == command:
            _module(name).add_arguments(sub_parser)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from uniscene.store import check_writable, read_error

    try:
        for path in output_paths(args):  # before any compute: a bad --out costs nothing
            check_writable(path)
        if args.command in NO_CONFIG:
            _module(args.command).main(args)
            return 0
        from uniscene.config import load_config, resolve_device
        from uniscene.stage_config import stage_config

        from uniscene.training.distributed import torchrun_process_group

        module = _module(args.command)
        stage = module.config_stage(args) if hasattr(module, "config_stage") else module.STAGE
        config = stage_config(load_config(args.config), stage)
        with torchrun_process_group(resolve_device(config) if "device" in config else "cpu"):  # several processes under torchrun
            module.main(args, config)
    except UserError as error:
        return _fail(args.command, error)
    except Exception as error:  # a corrupt chunk surfaces wherever a stage reads lazily: one line naming store and variable
        user_error = read_error(error, stores=[v for v in vars(args).values() if isinstance(v, str)])
        if user_error is None:
            raise
        return _fail(args.command, user_error)
    return 0


def output_paths(args) -> list:
    """The paths a command will write: every --out, --preview and --export* argument given."""
    return [value for name, value in vars(args).items()
            if isinstance(value, str) and value and (name in OUTPUT_ARGUMENTS or name.startswith("export"))]


def _fail(command: str, error: UserError) -> int:
    print(f"uniscene {command}: error: {error}", file=sys.stderr)
    return UserError.exit_code


if __name__ == "__main__":
    sys.exit(main())
