"""`uniscene scenes`: the scenes that the config selects (dataset.scenes), one per line.

`--split train|val` lists one split (dataset.val_scenes); the Snakemake targets
results/scenes/<scene>/... exist for exactly these scenes.
"""

from uniscene.data.scenes import selected_scenes, train_scenes, val_scenes

HELP = "list the scenes that the config selects (and their train/val split)"
STAGE = "scenes"


def add_arguments(parser):
    parser.add_argument("--split", choices=("all", "train", "val"), default="all", help="list only one split")


def main(args, config):
    scenes = {"all": selected_scenes, "train": train_scenes, "val": val_scenes}[args.split](config)
    held_out = set(val_scenes(config))
    for scene in scenes:
        print(f"{scene}\t{'val' if scene in held_out else 'train'}")
