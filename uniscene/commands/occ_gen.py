"""`uniscene occ-gen`: semantic occupancy of one scene generated from its layout (docs/stores.md, occ_gen.zarr).

Reads the scene's layout.zarr (or an edited one from `uniscene layout-edit`) and the trained
OccGenPipeline, and writes occ_gen.zarr with the same arrays as occ_label.zarr. By default it
reads nothing else of the scene: the label occupancy is opened only for the reference's leak
options (`--leak-noise-prior`, `--leak-meta`, or occ_dit.leak_* in the config), which need
`--labels`.
"""

import time

import numpy as np
import xarray as xr

from uniscene.config import resolve_device
from uniscene.errors import UserError
from uniscene.grid import OccGrid
from uniscene.store import StoreWriter, open_store

STAGE = "occ_gen"
HELP = "generate the semantic occupancy of one scene from its layout"
MASK_MEANING = "all true: generated occupancy has no sensor, every voxel counts as observed"


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="the trained pipeline folder (results/models/occ_dit)")
    parser.add_argument("--layout", required=True, help="the scene's layout.zarr, or an edited one")
    parser.add_argument("--out", required=True, help="occ_gen.zarr to write")
    parser.add_argument("--frames", help="frame range START:STOP (half-open) to generate; default all")
    parser.add_argument("--sampler", help="override occ_dit.sampler (ddim | dpmsolver++ | euler)")
    parser.add_argument("--steps", type=int, help="override occ_dit.inference_steps")
    parser.add_argument("--guidance", type=float, help="override occ_dit.guidance_scale")
    parser.add_argument("--leak-noise-prior", action="store_true", help="start from the label latents plus noise (reads --labels)")
    parser.add_argument("--leak-meta", action="store_true", help="condition on the labels' meta vector (reads --labels)")
    parser.add_argument("--labels", help="the scene's occ_label.zarr: read only by the leak options")
    parser.add_argument("--preview", help="PNG preview of a few generated frames, seen from above")


def load_pipeline(path, grid: OccGrid, device: str):
    """The trained OccGenPipeline at `path` on `device`, checked against the config's grid."""
    from pathlib import Path

    from uniscene.models.occ_dit.pipeline import OccGenPipeline

    if not (Path(path) / "model_index.json").is_file():
        raise UserError(f"{path} holds no trained occupancy generator (no model_index.json): run `snakemake {path}` or point --model at one")
    pipeline = OccGenPipeline.from_pretrained(path, low_cpu_mem_usage=False)
    if tuple(pipeline.vae.config.grid_shape) != grid.shape:
        raise UserError(f"the generator at {path} was trained for the grid {tuple(pipeline.vae.config.grid_shape)}, config key grid "
                        f"gives {grid.shape}: retrain it with this grid")
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


def main(args, config):
    import torch

    from uniscene.layout.edit import frame_range
    from uniscene.models.occ_dit.pipeline import SAMPLERS, occupancy_meta, sampler_scheduler
    from uniscene.models.occ_dit.settings import OccGenSettings
    from uniscene.viz.bev import preview_frames, save_occupancy_preview

    settings = OccGenSettings.from_config(config)
    sampler = args.sampler or settings.sampler
    steps = args.steps or settings.inference_steps
    guidance = settings.guidance_scale if args.guidance is None else args.guidance
    leak_noise_prior = args.leak_noise_prior or settings.leak_noise_prior
    leak_meta = args.leak_meta or settings.leak_meta
    if sampler not in SAMPLERS:
        raise UserError(f"sampler '{sampler}' (occ_dit.sampler or --sampler) is unknown: choose one of {sorted(SAMPLERS)}")
    if (leak_noise_prior or leak_meta) and not args.labels:
        raise UserError("the leak options read the scene's label occupancy: pass --labels results/scenes/<scene>/occ_label.zarr "
                        "(or turn occ_dit.leak_noise_prior / occ_dit.leak_meta off)")
    grid, device, seed = OccGrid.from_config(config), resolve_device(config), int(config["seed"])

    # 1. inputs: the layout (nothing else of the scene by default)
    layout_store = open_store(args.layout, "layout")
    frames = frame_range(args.frames, layout_store.sizes["frame"])
    grid.check_store(layout_store, args.layout)
    layout = layout_store.isel(frame=frames)
    pipeline = load_pipeline(args.model, grid, device)
    if settings.compile != "off":
        pipeline.transformer = torch.compile(pipeline.transformer, mode=settings.compile)
    pipeline.scheduler = sampler_scheduler(pipeline.scheduler.config, sampler)
    meta = noise_prior = None
    if leak_noise_prior or leak_meta:
        labels = open_store(args.labels, "occ_label")
        grid.check_store(labels, args.labels)
        labels = labels.isel(frame=frames)
        if not np.array_equal(labels["timestamp_us"].values, layout["timestamp_us"].values):
            raise UserError(f"store {args.labels} holds other frames than {args.layout}: pass the same scene's label store")
        semantics = labels["semantics"].values
        meta = occupancy_meta(semantics) if leak_meta else None
        if leak_noise_prior:
            noise_prior = pipeline.encode(torch.from_numpy(semantics))

    # 2. generate clip by clip, each clip's frames handed to the store's writer threads while the next is sampled
    scene = layout_store.attrs.get("scene", "scene")
    num_frames = len(layout["timestamp_us"])
    dims = ("frame", "x", "y", "z")
    nothing = np.zeros((0, *grid.shape), np.uint8)
    template = xr.Dataset(
        {
            "semantics": (dims, nothing),
            "mask_lidar": (dims, nothing.astype(bool)),
            "mask_camera": (dims, nothing.astype(bool)),
            "clip": (("frame",), np.zeros(0, np.int64)),
            "timestamp_us": (("frame",), layout["timestamp_us"].values[:0]),
        },
        attrs={
            "scene": scene, **grid.to_attrs(), "masks": MASK_MEANING,
            "frames": f"{frames.start}:{frames.stop}", "sampler": sampler, "inference_steps": steps, "guidance_scale": guidance,
            "clip_frames": pipeline.transformer.config.num_frames, "seed": seed, "leak_noise_prior": leak_noise_prior,
            "leak_meta": leak_meta, "layout_edits": list(layout_store.attrs.get("edits", [])), "device": device,
        },
    )
    subset = {**config, "generation": {"sampler": sampler, "inference_steps": steps, "guidance_scale": guidance,  # after the overrides
                                       "leak_noise_prior": leak_noise_prior, "leak_meta": leak_meta,
                                       "frames": f"{frames.start}:{frames.stop}"}}
    inputs = [args.model, args.layout] + ([args.labels] if leak_noise_prior or leak_meta else [])
    previewed = preview_frames(num_frames, 4) if args.preview else []
    preview = {}
    timestamp_us = layout["timestamp_us"].values
    with StoreWriter(args.out, template, stage=STAGE, config_subset=subset, inputs=inputs, seed=seed, frame_chunk=8,
                     num_frames=num_frames) as writer:
        start = time.perf_counter()
        pipeline.set_progress_bar_config(desc=f"occ_gen {scene}", unit="clip", disable=False)
        clips = pipeline.clips(layout["layout"].values, num_inference_steps=steps, guidance_scale=guidance,
                               generator=torch.Generator().manual_seed(seed), meta=meta, noise_prior=noise_prior,
                               noise_prior_weight=settings.noise_prior_weight)
        count = 0  # clips generated
        for clip in clips:
            count += 1
            observed = np.ones(clip.semantics.shape, bool)  # no sensor: every voxel counts as observed
            writer.append({"semantics": clip.semantics, "mask_lidar": observed, "mask_camera": observed,
                           "clip": np.full(len(clip.semantics), clip.index, np.int64), "timestamp_us": timestamp_us[clip.frames]})
            preview.update({t: clip.semantics[t - clip.frames.start] for t in previewed if clip.frames.start <= t < clip.frames.stop})
        seconds = time.perf_counter() - start
        writer.attrs.update(generate_seconds=round(seconds, 3), seconds_per_clip=round(seconds / count, 4))
    print(f"occ_gen {scene}: {num_frames} frames in {count} clips with {sampler} x {steps} steps, guidance {guidance}, on {device} "
          f"in {seconds:.1f} s ({seconds / count:.2f} s per clip, the store's writes overlapped)")

    # 3. preview
    if args.preview:
        shown = np.stack([preview[t] for t in previewed])
        save_occupancy_preview(args.preview, shown, np.ones(shown.shape, bool), grid, range(len(previewed)),
                               [f"{scene} generated frame {frames.start + t}" for t in previewed])
