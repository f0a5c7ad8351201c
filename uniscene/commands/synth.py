"""`uniscene synth --out DATAROOT`: write the embedded synthetic dataset (nuScenes format) and its truth.

The dataroot gets `<version>/` tables, samples/, sweeps/, lidarseg/, maps/ and truth/<scene>.zarr.
"""

import time

from uniscene.synth.generate import generate_dataset

HELP = "write the embedded synthetic dataset (nuScenes format) and its ground truth"


def add_arguments(parser):
    parser.add_argument("--out", default=None, help="dataroot folder to write (default: the config's dataset.dataroot)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: synth.workers, 0 = one per core)")


def main(args, config):
    out = args.out or config.get("dataset", {}).get("dataroot", "data/synthetic")
    start = time.perf_counter()
    path = generate_dataset(config, out, workers=args.workers)
    print(f"uniscene synth: wrote {path} in {time.perf_counter() - start:.1f} s")
