"""`uniscene eval-occ-vae`: score a trained occupancy VAE's reconstructions (results/metrics/occ_vae.json).

Scores occupancy stores (`--occupancy`: the held-out scenes' occ_label.zarr, or any occupancy
store) and/or an Occ3D folder (`--occ3d DIR [--scenes ...]`: gts/<scene>/<sample>/labels.npz,
every scene folder by default), each source apart: mIoU over the 17 classes inside mask_camera
(Occ3D's metric), geometric IoU, per-class IoU, the compression ratio and the encode + decode
time per frame (uniscene/metrics/occ_vae.py).
"""

import json
import time

from uniscene.config import resolve_device
from uniscene.errors import UserError
from uniscene.grid import OccGrid
from uniscene.store import write_json_atomic

STAGE = "eval_occ_vae"
HELP = "score a trained occupancy VAE on occupancy stores or an Occ3D folder"


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="the trained VAE's folder (results/models/occ_vae)")
    parser.add_argument("--occupancy", nargs="+", metavar="STORE", help="occupancy stores to reconstruct (the held-out scenes' occ_label.zarr)")
    parser.add_argument("--occ3d", help="Occ3D folder holding gts/<scene>/<sample>/labels.npz")
    parser.add_argument("--scenes", nargs="+", help="the Occ3D scenes to score (default: every scene folder of --occ3d)")
    parser.add_argument("--out", required=True, help="JSON file to write (results/metrics/occ_vae.json)")


def main(args, config):
    from uniscene.metrics.occ_vae import model_summary, score_sequences
    from uniscene.models.occ_vae.pretrained import load_vae
    from uniscene.models.occ_vae.settings import OccVAEScoring
    from uniscene.models.occ_vae.sources import occ3d_sequences, store_sequences

    if not args.occupancy and not args.occ3d:
        raise UserError("name what to score: --occupancy STORE ... and/or --occ3d DIR")
    if args.scenes and not args.occ3d:
        raise UserError("--scenes picks scenes of --occ3d: add --occ3d DIR")
    scoring = OccVAEScoring.from_config(config)
    grid = OccGrid.from_config(config)
    device = resolve_device(config)
    start = time.perf_counter()
    vae = load_vae(args.model, grid.shape, device)
    sources = {}
    if args.occupancy:
        sources["occupancy"] = store_sequences(args.occupancy, grid)
    if args.occ3d:
        sources["occ3d"] = occ3d_sequences(args.occ3d, args.scenes, config, grid)
    payload = {
        "stage": "occ_vae", "model": str(args.model), **model_summary(vae), "clip_frames": scoring.clip_frames,
        "goal": "paper model at 4 x 50 x 50 (compression 64): miou >= 92.5, iou_geometric >= 87.0; at 512: miou >= 75",
        "sources": {name: score_sequences(vae, sequences, scoring.clip_frames, scoring.eval_batch, autocast=device == "cuda")
                    for name, sequences in sources.items()},
    }
    payload["evaluation_seconds"] = round(time.perf_counter() - start, 3)
    write_json_atomic(args.out, payload)
    summary = {name: {k: result[k] for k in ("frames", "miou", "iou_geometric", "encode_decode_ms_per_frame")}
               for name, result in payload["sources"].items()}
    print(f"eval-occ-vae: compression {payload['compression_ratio']:g}: {json.dumps(summary)}")
