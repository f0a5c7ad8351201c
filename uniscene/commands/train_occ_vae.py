"""`uniscene train-occ-vae`: train the occupancy VAE on the training scenes' occupancy.

Reads occupancy stores (`--occupancy`: occ_label.zarr of each training scene) and/or an Occ3D
folder (`--occ3d`, default occ_vae.occ3d_root: gts/<scene>/<sample>/labels.npz), as
occ_vae.source says, clip by clip. Writes results/models/occ_vae/ (save_pretrained: config.json
with the compression ratio and latent scale, safetensors; history.jsonl, the loss history;
training.json). Checkpoints go to `<out>.checkpoint/`; a rerun with the same settings and data
resumes there.
"""

import time
from pathlib import Path

from uniscene.config import resolve_device
from uniscene.errors import UserError
from uniscene.grid import OccGrid
from uniscene.models.occ_vae.settings import OccVAESettings
from uniscene.store import config_hash

STAGE = "train_occ_vae"
HELP = "train the occupancy VAE on label occupancy (or Occ3D's)"


def add_arguments(parser):
    parser.add_argument("--occupancy", nargs="+", metavar="STORE", help="occ_label.zarr of each training scene (occ_vae.source labels or both)")
    parser.add_argument("--occ3d", help="Occ3D folder holding gts/ (occ_vae.source occ3d or both; default occ_vae.occ3d_root)")
    parser.add_argument("--scenes", nargs="+", help="the Occ3D scenes to train on (default: every scene folder of --occ3d)")
    parser.add_argument("--out", required=True, help="model folder to write (results/models/occ_vae)")


def training_sequences(args, config: dict, settings: OccVAESettings, grid: OccGrid) -> list:
    """The sequences that occ_vae.source names, from the arguments; one message where an argument is missing or unread."""
    from uniscene.models.occ_vae.sources import occ3d_sequences, store_sequences

    labels, occ3d = settings.source in ("labels", "both"), settings.source in ("occ3d", "both")
    if labels and not args.occupancy:
        raise UserError(f"occ_vae.source is {settings.source}: name the training scenes' occ_label.zarr stores with --occupancy")
    if not labels and args.occupancy:
        raise UserError("occ_vae.source is occ3d: --occupancy is not read; drop it or set occ_vae.source: both")
    if not occ3d and (args.occ3d or args.scenes):
        raise UserError("occ_vae.source is labels: --occ3d and --scenes are not read; set occ_vae.source: occ3d or both")
    sequences = store_sequences(args.occupancy, grid) if labels else []
    if occ3d:
        sequences += occ3d_sequences(args.occ3d or settings.occ3d_root, args.scenes, config, grid)
    return sequences


def main(args, config):
    from uniscene.models.occ_vae.network import OccVAE
    from uniscene.models.occ_vae.train import train_vae
    from uniscene.training import seed_everything

    settings = OccVAESettings.from_config(config)
    grid = OccGrid.from_config(config)
    device, seed = resolve_device(config), int(config["seed"])
    start = time.perf_counter()
    sequences = training_sequences(args, config, settings, grid)
    if not any(s.num_frames >= settings.clip_frames for s in sequences):
        raise UserError(f"no training scene has occ_vae.clip_frames ({settings.clip_frames}) frames: lower it or add longer scenes")
    seed_everything(seed)
    try:
        vae = OccVAE(**settings.model_config(grid.shape))
    except ValueError as error:
        raise UserError(f"config section occ_vae gives an impossible network: {error}") from None
    inputs = {f"{s.kind}:{s.name}": s.fingerprint() for s in sequences}
    out = Path(args.out)
    print(f"train-occ-vae: {sum(s.num_frames for s in sequences)} frames of {len(sequences)} scenes, {settings.model} model "
          f"(latent {vae.latent_shape()}, compression {vae.config.compression_ratio:g}) on {device}")
    trainer, weights = train_vae(vae, sequences, settings, seed=seed, device=device, work_dir=out.parent / f"{out.name}.checkpoint",
                                 run_hash=config_hash({"config": config, "inputs": inputs}))
    final = trainer.final_model()
    trainer.save_final(out, info={
        "config": config, "inputs": inputs, "scenes": [s.name for s in sequences], "frames": sum(s.num_frames for s in sequences),
        "clips": len(trainer.dataset), "class_weights": [round(float(w), 5) for w in weights],
        "compression_ratio": float(final.config.compression_ratio), "latent_shape_per_frame": list(final.latent_shape()),
        "scaling_factor": float(final.config.scaling_factor), "device": device,
        "total_seconds": round(time.perf_counter() - start, 2),
    })
    last = trainer.history[-1]["losses"] if trainer.history else {}
    print(f"train-occ-vae: wrote {out} in {time.perf_counter() - start:.1f} s; last losses {last}")
