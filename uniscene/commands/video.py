"""`uniscene video`: six-camera video of one scene generated from its rendered maps (docs/stores.md, video.zarr) and its MP4.

Reads the trained MultiViewVideoPipeline, a render store (the label chain's render.zarr or a
generated chain's gen/render.zarr), the layout whose boxes condition it, and the cameras of the
scene's frames.zarr (poses only). By default it reads no camera image: the real first images are
read only with the first-frame option (`--first-frame` or video.first_frame), which the store
records. Writes video.zarr clip by clip and, with `--mp4`, the six views tiled in the nuScenes
arrangement (uniscene/viz/video.py).
"""

import time
from contextlib import nullcontext

import numpy as np
import xarray as xr

from uniscene.config import resolve_device
from uniscene.errors import UserError
from uniscene.sensors import CAMERA_NAMES
from uniscene.store import StoreWriter, open_store

STAGE = "video"
HELP = "generate the six-camera video of one scene from its rendered maps"


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="the trained pipeline folder (results/models/video)")
    parser.add_argument("--frames", required=True, help="the scene's frames.zarr (camera poses; images only with --first-frame)")
    parser.add_argument("--render", required=True, help="render.zarr to generate from (label chain, or a generated chain's)")
    parser.add_argument("--layout", required=True, help="the layout.zarr whose boxes condition the video (the chain's own)")
    parser.add_argument("--out", required=True, help="video.zarr to write")
    parser.add_argument("--mp4", help="MP4 of the six views tiled, to write")
    parser.add_argument("--frames-range", dest="frame_range", help="frame range START:STOP (half-open) to generate; default all")
    parser.add_argument("--sampler", help="override video.sampler (ddim | dpmsolver++ | euler)")
    parser.add_argument("--steps", type=int, help="override video.inference_steps")
    parser.add_argument("--guidance", type=float, help="override video.guidance_scale")
    parser.add_argument("--first-frame", action="store_true", help="condition on the scene's real first images (reads them)")


def load_pipeline(path, device: str):
    """The trained MultiViewVideoPipeline at `path` on `device`."""
    from pathlib import Path

    from uniscene.models.video.pipeline import MultiViewVideoPipeline

    if not (Path(path) / "model_index.json").is_file():
        raise UserError(f"{path} holds no trained video model (no model_index.json): run `snakemake {path}` or point --model at one")
    pipeline = MultiViewVideoPipeline.from_pretrained(path, low_cpu_mem_usage=False)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


def main(args, config):
    import torch

    from uniscene.data.images import read_images
    from uniscene.layout.edit import frame_range
    from uniscene.models.video.pipeline import SAMPLERS, sampler_scheduler
    from uniscene.models.video.scenes import read_scene
    from uniscene.models.video.settings import VideoGeneration
    from uniscene.viz.video import Mp4Writer

    settings = VideoGeneration.from_config(config)
    sampler = args.sampler or settings.sampler
    steps = args.steps or settings.inference_steps
    guidance = settings.guidance_scale if args.guidance is None else args.guidance
    first_frame = args.first_frame or settings.first_frame
    if sampler not in SAMPLERS:
        raise UserError(f"sampler '{sampler}' (video.sampler or --sampler) is unknown: choose one of {sorted(SAMPLERS)}")
    if steps < 1:
        raise UserError(f"--steps {steps} must be >= 1")
    device, seed = resolve_device(config), int(config["seed"])

    # 1. inputs: the model, the maps, cameras and boxes (no image unless the first-frame option)
    pipeline = load_pipeline(args.model, device)
    pipeline.scheduler = sampler_scheduler(pipeline.scheduler.config, sampler)
    adapter = pipeline.adapter.config
    size_hw = tuple(adapter.image_size)
    conditions, frames_store = read_scene(args.frames, args.render, args.layout, size_hw, adapter.max_boxes)
    render = open_store(args.render, "render")
    frames = frame_range(args.frame_range, len(conditions))
    conditions = conditions.select(frames)
    first_frame_latents = None
    if first_frame:
        paths = frames_store["cam_image_path"].values[frames.start]
        images = read_images(frames_store.attrs["dataroot"], paths, size_hw)  # [V, H, W, 3]
        first_frame_latents = pipeline.encode(torch.from_numpy(images))

    # 2. generate clip by clip into the store (and the MP4)
    scene = render.attrs.get("scene", frames_store.attrs.get("scene", "scene"))
    num_frames, views = len(conditions), len(CAMERA_NAMES)
    timestamp_us = frames_store["timestamp_us"].values[frames]
    template = xr.Dataset(
        {
            "rgb": (("frame", "cam", "h", "w", "channel"), np.zeros((0, views, *size_hw, 3), np.uint8)),
            "intrinsics": (("frame", "cam", "k_row", "k_col"), np.zeros((0, views, 3, 3))),
            "timestamp_us": (("frame",), np.zeros(0, np.int64)),
        },
        attrs={
            "scene": scene, "source": render.attrs.get("source", "label"), "camera_names": list(CAMERA_NAMES),
            "cross_view": bool(adapter.cross_view), "first_frame": bool(first_frame), "sampler": sampler, "inference_steps": steps,
            "guidance_scale": guidance, "seed": seed, "clip_frames": adapter.num_frames, "context_frames": adapter.context_frames,
            "frames": f"{frames.start}:{frames.stop}", "device": device,
        },
    )
    subset = {**config, "generation": {"sampler": sampler, "inference_steps": steps, "guidance_scale": guidance,
                                       "first_frame": first_frame, "frames": f"{frames.start}:{frames.stop}"}}
    inputs = [args.model, args.frames, args.render, args.layout]
    start = time.perf_counter()
    clips = 0
    mp4_writer = Mp4Writer(args.mp4) if args.mp4 else nullcontext()
    with StoreWriter(args.out, template, stage="video", config_subset=subset, inputs=inputs, seed=seed, num_frames=num_frames) as writer, \
            mp4_writer as mp4:  # the MP4 is finished (or removed) before the store is renamed into place (or removed)
        for clip in pipeline.clips(conditions, num_inference_steps=steps, guidance_scale=guidance,
                                   generator=torch.Generator().manual_seed(seed), first_frame_latents=first_frame_latents):
            writer.append({"rgb": clip.rgb, "intrinsics": conditions.intrinsics[clip.frames], "timestamp_us": timestamp_us[clip.frames]})
            if mp4 is not None:
                mp4.write(clip.rgb)
            clips += 1
        seconds = time.perf_counter() - start
        writer.attrs.update({"generate_seconds": round(seconds, 3), "seconds_per_clip": round(seconds / max(clips, 1), 4)})
    print(f"video {scene}: {num_frames} frames x {views} cameras at {size_hw[0]} x {size_hw[1]} in {clips} clips with {sampler} x "
          f"{steps} steps, guidance {guidance}, cross_view {adapter.cross_view}, first_frame {first_frame}, on {device} in "
          f"{seconds:.1f} s ({seconds / max(clips, 1):.2f} s per clip)")
