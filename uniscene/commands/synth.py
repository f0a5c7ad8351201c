"""`uniscene synth --out DATAROOT`: write the embedded synthetic dataset (nuScenes format) and its truth.

The dataroot gets `<version>/` tables, samples/, sweeps/, lidarseg/, maps/ and truth/<scene>.zarr.
"""

import time

from uniscene.synth.generate import generate_dataset

HELP = "write the embedded synthetic dataset (nuScenes format) and its ground truth"
STAGE = "synth"


def add_arguments(parser):
    parser.add_argument("--out", required=True, help="dataroot folder to write (the config's dataset.dataroot)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: synth.workers, 0 = one per core)")


def main(args, config):
    start = time.perf_counter()
    path = generate_dataset(config, args.out, workers=args.workers)
    print(f"uniscene synth: wrote {path} in {time.perf_counter() - start:.1f} s")
