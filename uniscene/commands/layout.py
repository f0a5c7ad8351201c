"""`uniscene layout`: the BEV layout of every frame of one scene (docs/stores.md, layout.zarr)."""

import time


from uniscene.config import resolve_device
from uniscene.grid import OccGrid
from uniscene.errors import UserError
from uniscene.data.maps import expansion_path, load_map, rasterise_map, scene_region_m
from uniscene.layout.raster import LayoutSettings, layout_dataset, rasterise_layout
from uniscene.viz.bev import preview_frames, save_layout_preview
from uniscene.store import open_store, write_store

HELP = "BEV layouts of one scene (map layers and object footprints)"
STAGE = "layout"


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
    boxes = {name: frames[name].values for name in ("box_center", "box_size", "box_rotation", "box_valid", "box_class")}
    layout = rasterise_layout(raster, world_from_ego, grid=grid, settings=settings, device=device, **boxes)  # [T, C, X, Y]
    total_seconds = time.perf_counter() - start
    print(f"layout {scene}: {layout.shape[0]} frames on {device}; map {map_name} {raster.masks.shape[1:]} px rasterised "
          f"in {map_seconds:.2f} s, all frames in {total_seconds:.2f} s")

    timestamp_us = frames["timestamp_us"].values
    dataset = layout_dataset(layout, timestamp_us, world_from_ego, grid=grid, box_instance_token=frames["box_instance_token"].values,
                             attrs={"scene": scene, "map_name": map_name, "dataroot": dataroot, "box_rule": settings.box_rule,
                                    "timing": {"device": device, "map_raster_s": round(map_seconds, 3),
                                               "frames_per_s": round(layout.shape[0] / (total_seconds - map_seconds), 1)}}, **boxes)
    if args.preview:
        indices = preview_frames(len(timestamp_us), settings.preview_frames)
        titles = [f"{scene} frame {i} (t={(timestamp_us[i] - timestamp_us[0]) / 1e6:.1f} s)" for i in indices]
        save_layout_preview(args.preview, layout, grid, indices, titles)
    write_store(args.out, dataset, stage="layout", config_subset=config,
                inputs=[args.frames, expansion_path(dataroot, map_name)], frame_chunk=8)
