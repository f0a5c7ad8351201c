"""`uniscene train-video`: train the multi-view video model on the training scenes' camera images and label renders.

Writes results/models/video/: the whole MultiViewVideoPipeline (`save_pretrained`: vae/, unet/,
adapter/, scheduler/ and model_index.json), with history.jsonl (the UNet's), vae_history.jsonl
(the autoencoder's, when trained here) and training.json beside it. With `video.pretrained`, the
UNet (and the autoencoder, where the folder has vae/) start from a local diffusers folder, e.g.
a Stable Video Diffusion checkpoint; nothing is fetched from a hub. The work folder
`<out>.checkpoint/` holds the checkpoints while it trains; a rerun with the same settings and
inputs resumes there.
"""

import json
import time
from pathlib import Path

import numpy as np

from uniscene.config import resolve_device
from uniscene.errors import UserError
from uniscene.store import config_hash, fingerprint

STAGE = "train_video"
HELP = "train the multi-view video model on the training scenes' camera images and label renders"
VAE_BATCH = 8  # image crops per autoencoder step
VAE_CROP = 48  # their side, pixels (a multiple of the autoencoder's downsampling; images smaller than it are taken whole)


def add_arguments(parser):
    parser.add_argument("--frames", nargs="+", required=True, help="frames.zarr of each training scene (cameras, true images)")
    parser.add_argument("--render", nargs="+", required=True, help="render.zarr of each training scene, in the same order")
    parser.add_argument("--layout", nargs="+", required=True, help="layout.zarr of each training scene (boxes), in the same order")
    parser.add_argument("--out", required=True, help="model folder to write (results/models/video)")
    parser.add_argument("--no-cross-view", action="store_true", help="build no cross-view attention (overrides video.cross_view)")



class SceneImages:
    """The true camera images of one scene, [T V] images read (and resized) one at a time: [H, W, 3] uint8."""

    def __init__(self, frames, size_hw):
        self.paths = frames["cam_image_path"].values.reshape(-1)
        self.dataroot, self.size_hw = frames.attrs["dataroot"], size_hw

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        from uniscene.data.images import read_images

        return read_images(self.dataroot, [self.paths[i]], self.size_hw)[0]


class ManyImages:
    """Several SceneImages as one sequence."""

    def __init__(self, parts: list):
        self.parts, self.offsets = parts, np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> np.ndarray:
        part = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return self.parts[part][i - self.offsets[part]]


def load_pretrained(folder):
    """(unet, vae or None) from a local diffusers folder holding unet/ (a UNetSpatioTemporalConditionModel) and maybe vae/."""
    from diffusers import AutoencoderKL, AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel

    folder = Path(folder)
    if not (folder / "unet" / "config.json").is_file():
        raise UserError(f"config key video.pretrained: {folder} holds no unet/config.json: point it at a local diffusers folder "
                        "(e.g. a Stable Video Diffusion checkpoint) with unet/ and vae/, or set it to null")
    kind = json.loads((folder / "unet" / "config.json").read_text()).get("_class_name")
    if kind != "UNetSpatioTemporalConditionModel":
        raise UserError(f"config key video.pretrained: {folder}/unet is a {kind}, the video model needs a "
                        "UNetSpatioTemporalConditionModel (Stable Video Diffusion's)")
    unet = UNetSpatioTemporalConditionModel.from_pretrained(folder / "unet", low_cpu_mem_usage=False)
    vae = None
    if (folder / "vae" / "config.json").is_file():
        kind = json.loads((folder / "vae" / "config.json").read_text()).get("_class_name")
        classes = {"AutoencoderKL": AutoencoderKL, "AutoencoderKLTemporalDecoder": AutoencoderKLTemporalDecoder}
        if kind not in classes:
            raise UserError(f"config key video.pretrained: {folder}/vae is a {kind}; the video model reads {sorted(classes)}")
        vae = classes[kind].from_pretrained(folder / "vae", low_cpu_mem_usage=False)
        if unet.config.in_channels != 2 * vae.config.latent_channels or unet.config.out_channels != vae.config.latent_channels:
            raise UserError(f"config key video.pretrained: {folder}/unet takes {unet.config.in_channels} and gives "
                            f"{unet.config.out_channels} channels; with vae/'s {vae.config.latent_channels} latent channels it must "
                            f"take {2 * vae.config.latent_channels} (noisy + context latents) and give {vae.config.latent_channels}")
    return unet, vae


def main(args, config):
    import torch

    from uniscene.models.video.network import (MODEL_CONFIGS, MultiViewVideoModel, autoencoder, build_adapter, spatio_temporal_unet,
                                               unet_downsampling)
    from uniscene.models.video.pipeline import MultiViewVideoPipeline, sampler_scheduler, training_scheduler
    from uniscene.models.video.scenes import read_scene
    from uniscene.models.video.settings import VideoTraining
    from uniscene.models.video.train import ClipDataset, ImageDataset, autoencoder_loss, latent_scale, make_loss_fn
    from uniscene.training import Trainer, TrainingConfig, seed_everything

    if not len(args.frames) == len(args.render) == len(args.layout):
        raise UserError(f"--frames, --render and --layout name {len(args.frames)}, {len(args.render)} and {len(args.layout)} stores: "
                        "give one of each per training scene, in the same order")
    settings = VideoTraining.from_config(config)
    if args.no_cross_view:
        settings = VideoTraining(**{**settings.as_dict(), "cross_view": False})
    if settings.model not in MODEL_CONFIGS:
        raise UserError(f"config key video.model is '{settings.model}': choose one of {sorted(MODEL_CONFIGS)}")
    device, seed = resolve_device(config), int(config["seed"])
    size_hw = tuple(int(v) for v in settings.image_size)
    out = Path(args.out)
    work = out.parent / f"{out.name}.checkpoint"
    start = time.perf_counter()

    # 1. the networks: from the pretrained folder where given, else fresh
    seed_everything(seed)
    unet = vae = None
    if settings.pretrained:
        unet, vae = load_pretrained(settings.pretrained)
    vae_trained_here = vae is None
    vae = autoencoder(settings.model) if vae is None else vae
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    unet = spatio_temporal_unet(settings.model, vae.config.latent_channels, settings.clip_frames) if unet is None else unet
    step = factor * 2 ** unet_downsampling(unet)
    if size_hw[0] % step or size_hw[1] % step:
        raise UserError(f"config key video.image_size {list(size_hw)} must divide by {step} (the autoencoder's {factor}x and the "
                        f"UNet's {2 ** unet_downsampling(unet)}x downsampling): e.g. {[size_hw[0] // step * step or step, size_hw[1] // step * step or step]}")
    adapter = build_adapter(unet, settings.model, settings.cross_view, size_hw, factor, settings.clip_frames,
                            settings.context_frames, settings.max_boxes)

    # 2. data: every training scene's conditions, its images read as they are needed
    scenes = [read_scene(f, r, l, size_hw, settings.max_boxes) for f, r, l in zip(args.frames, args.render, args.layout)]
    images = [SceneImages(frames, size_hw) for _, frames in scenes]
    inputs = [*args.frames, *args.render, *args.layout] + ([settings.pretrained] if settings.pretrained else [])
    fingerprints = {p: fingerprint(p) for p in inputs}
    training_keys = {"settings": settings.as_dict(), "seed": seed, "inputs": fingerprints}
    make_config = lambda steps, batch: TrainingConfig(batch_size=batch, learning_rate=settings.learning_rate, steps=steps,
                                                      ema_decay=0.0, seed=seed, log_every=max(1, steps // 20),
                                                      checkpoint_every=max(1, steps // 4))

    # 3. the autoencoder, trained from scratch unless pretrained
    vae_history = []
    if vae_trained_here:
        vae_trainer = Trainer(vae, ImageDataset(ManyImages(images), crop=VAE_CROP // factor * factor), autoencoder_loss, make_config(settings.vae_steps, VAE_BATCH),
                              work_dir=work / "vae", run_hash=config_hash({"vae": training_keys}), device=device,
                              description="train-video (autoencoder)")
        vae_history = vae_trainer.fit()
        vae = vae_trainer.final_model()
    vae = vae.to(device).eval().requires_grad_(False)
    vae_seconds = time.perf_counter() - start

    # 4. every training image encoded once; the latent scale from their statistics (a fresh autoencoder's only)
    pipeline = MultiViewVideoPipeline(vae=vae, unet=unet, adapter=adapter, scheduler=sampler_scheduler(training_scheduler().config, "ddim"))
    if vae_trained_here:
        vae.register_to_config(scaling_factor=1.0, shift_factor=0.0)  # encode() gives the raw latents, scaled below
    raw = []
    for scene_images, (conditions, _) in zip(images, scenes):
        frames = np.stack([scene_images[i] for i in range(len(scene_images))])  # [T V, H, W, 3]
        encoded = pipeline.encode(torch.from_numpy(frames))  # [T V, C, h, w]
        raw.append(encoded.view(len(conditions), -1, *encoded.shape[1:]))  # [T, V, C, h, w]
    if vae_trained_here:
        scale, shift = latent_scale(torch.cat([r.flatten(0, 1) for r in raw]))
        vae.register_to_config(scaling_factor=scale, shift_factor=shift)
        latents = [((r - shift) * scale).half().cpu() for r in raw]
    else:
        latents = [r.half().cpu() for r in raw]
    dataset = ClipDataset(latents, [c for c, _ in scenes], settings.clip_frames)
    encode_seconds = time.perf_counter() - start - vae_seconds
    print(f"train-video: {len(dataset)} clips of {settings.clip_frames} frames x {adapter.config.num_views} cameras from "
          f"{len(scenes)} scenes at {size_hw[0]} x {size_hw[1]}, latents {tuple(latents[0].shape[2:])}; autoencoder "
          f"{'trained' if vae_trained_here else 'pretrained'} ({vae_seconds:.1f} s), images encoded in {encode_seconds:.1f} s")

    # 5. the UNet and adapter on the shared loop
    scheduler = training_scheduler()
    generator = torch.Generator().manual_seed(seed)
    model = MultiViewVideoModel(unet, adapter)
    trainer = Trainer(model, dataset, make_loss_fn(scheduler, settings, generator), make_config(settings.steps, settings.batch_size),
                      work_dir=work, run_hash=config_hash({"unet": training_keys, "cross_view": settings.cross_view}), device=device,
                      generator=generator, description="train-video")
    history = trainer.fit()

    # 6. the pipeline: autoencoder + trained UNet and adapter + the DDIM sampler on the training schedule
    def save_pipeline(trained, folder):
        MultiViewVideoPipeline(vae=vae, unet=trained.unet, adapter=trained.adapter,
                               scheduler=sampler_scheduler(scheduler.config, "ddim")).save_pretrained(folder)
        if vae_history:
            (folder / "vae_history.jsonl").write_text("".join(json.dumps(record) + "\n" for record in vae_history))

    seconds = time.perf_counter() - start
    parameters = {name: sum(p.numel() for p in part.parameters()) for name, part in (("vae", vae), ("unet", unet), ("adapter", adapter))}
    trainer.save_final(out, save_model=save_pipeline, info={
        "num_clips": len(dataset), "config": config, "inputs": fingerprints, "cross_view": settings.cross_view,
        "pretrained": settings.pretrained, "vae_trained": vae_trained_here, "vae_history": vae_history,
        "vae_seconds": round(vae_seconds, 2), "encode_seconds": round(encode_seconds, 2), "total_seconds": round(seconds, 2),
        "device": device, "parameters": parameters,
    })
    print(f"train-video: wrote {out} ({settings.model}, cross_view {settings.cross_view}, {settings.steps} steps, "
          f"{parameters['unet'] + parameters['adapter']:,} UNet + adapter parameters) in {seconds:.1f} s; "
          f"last {history[-1] if history else '-'}")
