"""`uniscene layout`: the BEV layout of every frame of one scene (docs/stores.md, layout.zarr)."""

import time

import numpy as np

from uniscene.classes import LAYOUT_CHANNEL_NAMES
from uniscene.config import resolve_device
from uniscene.grid import OccGrid
from uniscene.errors import UserError
from uniscene.data.maps import expansion_path, load_map, rasterise_map, scene_region_m
from uniscene.layout.raster import LayoutSettings, layout_dataset, rasterise_layout
from uniscene.viz.bev import preview_frames, save_layout_preview
from uniscene.store import StoreWriter, open_store

HELP = "BEV layouts of one scene (map layers and object footprints)"
STAGE = "layout"
FRAME_CHUNK = 8  # frames per chunk of layout.zarr
STREAM_FRAMES = 64  # frames rasterised, then handed to the store's threads, at a time


def add_arguments(parser):
    parser.add_argument("--frames", required=True, help="the scene's frames.zarr")
    parser.add_argument("--out", required=True, help="layout.zarr to write")
    parser.add_argument("--preview", help="PNG preview of a few frames to write (colour-coded channels, ego marked)")


def main(args, config):
    grid = OccGrid.from_config(config)
    settings = LayoutSettings.from_config(config)
    device = resolve_device(config)
    frames = open_store(args.frames, stage="frames")
    dataroot, scene = frames.attrs["dataroot"], frames.attrs["scene"]
    map_name = frames.attrs.get("location")  # the log's map location, read by the frames stage with nuscenes-devkit
    if not map_name:
        raise UserError(f"frames store {args.frames} has no 'location' attribute (the scene's map): rerun `uniscene frames`")
    nusc_map = load_map(dataroot, map_name)

    start = time.perf_counter()
    world_from_ego = frames["world_from_ego"].values  # [T, 4, 4]
    raster = rasterise_map(nusc_map, scene_region_m(world_from_ego, grid, settings.map_margin_m), settings.map_resolution_m)
    map_seconds = time.perf_counter() - start

    # Frames are rasterised a batch at a time, each batch written by the store's threads while the next is made.
    timestamp_us = frames["timestamp_us"].values
    boxes = {name: frames[name].values for name in ("box_center", "box_size", "box_rotation", "box_valid")}  # [T, B, ...]
    box_class = frames["box_class"].values  # [B]
    num_frames = len(timestamp_us)
    channels = len(LAYOUT_CHANNEL_NAMES)

    def dataset(frames_slice: slice, layout):
        return layout_dataset(layout, timestamp_us[frames_slice], world_from_ego[frames_slice], grid=grid, box_class=box_class,
                              box_instance_token=frames["box_instance_token"].values,
                              attrs={"scene": scene, "map_name": map_name, "dataroot": dataroot, "box_rule": settings.box_rule},
                              **{name: values[frames_slice] for name, values in boxes.items()})

    template = dataset(slice(0, 0), np.zeros((0, channels) + grid.shape[:2], bool))
    frame_vars = [name for name, var in template.data_vars.items() if "frame" in var.dims]
    shown = preview_frames(num_frames, settings.preview_frames) if args.preview else []
    previews = {}
    with StoreWriter(args.out, template, stage=STAGE, config_subset=config, inputs=[args.frames, expansion_path(dataroot, map_name)],
                     frame_chunk=FRAME_CHUNK, num_frames=num_frames) as writer:
        for first in range(0, num_frames, STREAM_FRAMES):
            part = slice(first, min(first + STREAM_FRAMES, num_frames))
            layout = rasterise_layout(raster, world_from_ego[part], grid=grid, settings=settings, device=device, box_class=box_class,
                                      **{name: values[part] for name, values in boxes.items()})  # [t, C, X, Y]
            previews.update({i: layout[i - first] for i in shown if part.start <= i < part.stop})
            writer.append(dataset(part, layout)[frame_vars])
        total_seconds = time.perf_counter() - start
        writer.attrs["timing"] = {"device": device, "map_raster_s": round(map_seconds, 3),
                                  "frames_per_s": round(num_frames / (total_seconds - map_seconds), 1)}
    print(f"layout {scene}: {num_frames} frames on {device}; map {map_name} {raster.masks.shape[1:]} px rasterised "
          f"in {map_seconds:.2f} s, all frames in {total_seconds:.2f} s")
    if args.preview:
        titles = [f"{scene} frame {i} (t={(timestamp_us[i] - timestamp_us[0]) / 1e6:.1f} s)" for i in shown]
        save_layout_preview(args.preview, np.stack([previews[i] for i in shown]), grid, range(len(shown)), titles)
