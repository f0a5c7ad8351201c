"""`uniscene train-occ-eval-ae`: train the evaluation-only occupancy autoencoder on the training scenes' labels.

Reads the label occupancy of the training scenes (`--occupancy`: their occ_label.zarr; the rule
never names a held-out scene's) frame by frame. Writes results/models/occ_eval_ae/
(save_pretrained: config.json + safetensors; history.jsonl, the loss history; training.json
with the settings, the scenes and frames read, and the reconstruction scores on up to
SCORED_FRAMES training frames beside the best constant prediction). Its feature vector is the
ruler of F3D and MMD in results/metrics/occ_gen.json. `<out>.checkpoint/` holds the checkpoint
until the model is in place; a rerun with the same settings and data resumes there.
"""

import time
from pathlib import Path

import numpy as np

from uniscene.config import resolve_device
from uniscene.errors import UserError
from uniscene.grid import OccGrid
from uniscene.store import config_hash

STAGE = "train_occ_eval_ae"
HELP = "train the evaluation-only occupancy autoencoder (the F3D / MMD features) on the training scenes' label occupancy"
SCORED_FRAMES = 16  # training frames (spread evenly) whose reconstruction goes into training.json


def add_arguments(parser):
    parser.add_argument("--occupancy", nargs="+", required=True, metavar="STORE",
                        help="occ_label.zarr of each training scene (never a held-out scene's: the figures compare those)")
    parser.add_argument("--out", required=True, help="model folder to write (results/models/occ_eval_ae)")


def main(args, config):
    from uniscene.models.occ_eval_ae.network import MODEL_CONFIGS, OccEvalAE
    from uniscene.models.occ_eval_ae.settings import OccEvalAESettings
    from uniscene.models.occ_eval_ae.train import FrameDataset, eval_ae_trainer, reconstruction_scores
    from uniscene.training import seed_everything

    settings = OccEvalAESettings.from_config(config)
    grid = OccGrid.from_config(config)
    device, seed = resolve_device(config), settings.seed
    start = time.perf_counter()
    data = FrameDataset(args.occupancy, grid, settings.frame_stride)
    if len(data) < settings.batch_size:
        raise UserError(f"the training scenes hold {len(data)} frames at occ_eval_ae.frame_stride {settings.frame_stride}, fewer than "
                        f"occ_eval_ae.batch_size ({settings.batch_size}): lower one of the two")
    seed_everything(seed)
    try:
        model = OccEvalAE(grid_shape=grid.shape, **MODEL_CONFIGS[settings.model])
    except ValueError as error:
        raise UserError(f"config section occ_eval_ae gives an impossible network for the grid {grid.shape}: {error}") from None
    inputs = data.fingerprints()
    out = Path(args.out)
    print(f"train-occ-eval-ae: {len(data)} frames of {len(data.paths)} scenes, {settings.model} model "
          f"({sum(p.numel() for p in model.parameters())} weights, {model.config.feature_dim} features) on {device}")
    trainer, weights = eval_ae_trainer(model, data, steps=settings.steps, batch_size=settings.batch_size,
                                       learning_rate=settings.learning_rate, seed=seed, device=device,
                                       work_dir=out.parent / f"{out.name}.checkpoint",
                                       run_hash=config_hash({"config": config, "inputs": inputs}))
    train_start = time.perf_counter()
    trainer.fit()
    train_seconds = time.perf_counter() - train_start
    final = trainer.final_model()
    picks = np.unique(np.linspace(0, len(data) - 1, min(SCORED_FRAMES, len(data))).round().astype(int))
    scores = reconstruction_scores(final, np.stack([data.read(int(i)) for i in picks]))
    trainer.save_final(out, info={
        "settings": settings.as_dict(), "config": config, "inputs": inputs, "scenes": data.scenes, "frames": len(data),
        "class_weights": [round(float(w), 5) for w in weights], "num_parameters": sum(p.numel() for p in final.parameters()),
        "reconstruction_on_training_frames": scores, "device": device, "train_seconds": round(train_seconds, 2),
        "total_seconds": round(time.perf_counter() - start, 2),
    })
    print(f"train-occ-eval-ae: wrote {out} in {time.perf_counter() - start:.1f} s ({train_seconds:.1f} s training); "
          f"reconstruction of {scores['frames']} training frames: accuracy {scores['accuracy']} (constant {scores['constant_accuracy']}), "
          f"mIoU {scores['miou']} (constant {scores['constant_miou']})")
