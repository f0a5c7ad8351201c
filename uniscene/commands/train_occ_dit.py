"""`uniscene train-occ-dit`: train the layout-conditioned occupancy DiT on the trained VAE's latents.

Writes results/models/occ_dit/: the whole OccGenPipeline (`save_pretrained`: vae/, transformer/,
scheduler/ and model_index.json), with history.jsonl and training.json beside it. The work
folder `<out>.checkpoint/` holds the checkpoint while it trains; a rerun with the same settings
and inputs resumes there.
"""

import time
from pathlib import Path

import numpy as np

from uniscene.config import resolve_device
from uniscene.errors import UserError
from uniscene.grid import OccGrid
from uniscene.store import config_hash, fingerprint, open_store

STAGE = "train_occ_dit"
HELP = "train the layout-conditioned occupancy DiT on the VAE's latents"


def add_arguments(parser):
    parser.add_argument("--vae", required=True, help="the trained occupancy VAE (results/models/occ_vae)")
    parser.add_argument("--occupancy", nargs="+", required=True, help="occ_label.zarr of each training scene")
    parser.add_argument("--layout", nargs="+", required=True, help="layout.zarr of each training scene, in the same order")
    parser.add_argument("--out", required=True, help="model folder to write (results/models/occ_dit)")


def read_scene(occupancy_path, layout_path, grid: OccGrid):
    """(semantics [T, X, Y, Z], layout [T, L, X, Y]) lazy arrays of one scene, checked to share frames and grid."""
    occupancy = open_store(occupancy_path, "occ_label")
    layout = open_store(layout_path, "layout")
    grid.check_store(occupancy, occupancy_path)
    grid.check_store(layout, layout_path)
    if not np.array_equal(occupancy["timestamp_us"].values, layout["timestamp_us"].values):
        raise UserError(f"stores {occupancy_path} and {layout_path} hold different frames: rebuild them from the same frames.zarr")
    return occupancy["semantics"], layout["layout"]


def main(args, config):
    import torch

    from uniscene.models.occ_dit.network import MODEL_CONFIGS, OccDiT
    from uniscene.models.occ_dit.pipeline import OccGenPipeline, sampler_scheduler, training_scheduler
    from uniscene.models.occ_dit.settings import OccDiTTraining
    from uniscene.models.occ_dit.train import ClipDataset, encode_scene, latent_statistics, make_loss_fn
    from uniscene.models.occ_vae.pretrained import load_vae
    from uniscene.training import Trainer, TrainingConfig, seed_everything

    if len(args.occupancy) != len(args.layout):
        raise UserError(f"--occupancy names {len(args.occupancy)} stores and --layout {len(args.layout)}: give one layout per scene")
    settings = OccDiTTraining.from_config(config)
    if settings.model not in MODEL_CONFIGS:
        raise UserError(f"config key occ_dit.model is '{settings.model}': choose one of {sorted(MODEL_CONFIGS)}")
    grid, device, seed = OccGrid.from_config(config), resolve_device(config), int(config["seed"])
    vae = load_vae(args.vae, grid.shape, device)
    out = Path(args.out)
    start = time.perf_counter()

    # 1. the network, sized to the VAE's latent frames
    seed_everything(seed)
    channels, height, width = vae.latent_shape()
    patch = MODEL_CONFIGS[settings.model]["patch_size"]
    if height % patch or width % patch:
        step = vae.config.downsample_factor * patch
        raise UserError(f"config keys grid.*: the grid's {grid.shape[0]} x {grid.shape[1]} cells give the VAE's latent frames "
                        f"{height} x {width} cells, which the '{settings.model}' DiT's {patch} x {patch} patches do not tile: "
                        f"make grid x and y cell counts multiples of {step} (or use another occ_vae.downsample_factor)")
    network = OccDiT(in_channels=channels, sample_size=(height, width), num_frames=settings.clip_frames,
                     context_frames=settings.context_frames, **MODEL_CONFIGS[settings.model])

    # 2. data: latents and pooled layouts of every training scene, encoded once
    scenes = [encode_scene(vae, network, *read_scene(o, l, grid), device) for o, l in zip(args.occupancy, args.layout)]
    mean, std = latent_statistics(scenes)
    network.register_to_config(latent_mean=tuple(mean.tolist()), latent_std=tuple(std.tolist()))
    dataset = ClipDataset(scenes, settings.clip_frames, mean, std)
    encode_seconds = time.perf_counter() - start
    print(f"train-occ-dit: {len(dataset)} clips of {settings.clip_frames} frames from {len(scenes)} scenes, "
          f"latents {channels} x {height} x {width}, encoded on {device} in {encode_seconds:.1f} s")

    # 3. training on the shared loop
    scheduler = training_scheduler(settings.prediction_type)
    generator = torch.Generator().manual_seed(seed)
    inputs = [args.vae, *args.occupancy, *args.layout]
    run_hash = config_hash({"settings": settings.as_dict(), "grid": config["grid"], "seed": seed,
                            "inputs": {p: fingerprint(p) for p in inputs}})
    training = TrainingConfig(batch_size=settings.batch_size, learning_rate=settings.learning_rate, steps=settings.steps,
                              ema_decay=settings.ema_decay, seed=seed, log_every=max(1, settings.steps // 20),
                              checkpoint_every=max(1, settings.steps // 4))
    trainer = Trainer(network, dataset, make_loss_fn(scheduler, settings, generator), training,
                      work_dir=out.parent / f"{out.name}.checkpoint", run_hash=run_hash, device=device, generator=generator,
                      description="train-occ-dit")
    history = trainer.fit()

    # 4. the pipeline: VAE + trained network (EMA weights) + the reference sampler on the training schedule
    def save_pipeline(model, folder):
        pipeline = OccGenPipeline(vae=vae, transformer=model, scheduler=sampler_scheduler(scheduler.config, "ddim"))
        pipeline.save_pretrained(folder)

    seconds = time.perf_counter() - start
    trainer.save_final(out, save_model=save_pipeline, info={
        "num_clips": len(dataset), "config": config, "inputs": {p: fingerprint(p) for p in inputs},
        "encode_seconds": round(encode_seconds, 2), "total_seconds": round(seconds, 2), "device": device,
        "parameters": sum(p.numel() for p in network.parameters()),
    })
    print(f"train-occ-dit: wrote {out} ({settings.model}, {settings.steps} steps) in {seconds:.1f} s; "
          f"last {history[-1] if history else '-'}")

