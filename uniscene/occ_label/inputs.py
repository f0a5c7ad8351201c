"""Read what occ_label needs of one scene: its frames.zarr, and where its LIDAR_TOP sweep and lidarseg files are.

Paths in the store are relative to its `dataroot` attribute. The sweeps are read later, a chunk at
a time as the aggregation asks for them (sweeps.SweepFiles); their sizes are checked here.
Sweeps without lidarseg (the 20 Hz sweeps between keyframes) get semantics.UNLABELLED. A scene
with no lidarseg at all stops with a message, unless `occ_label.allow_missing_lidarseg` is set (static voxels are then 'others').
With `occ_label.map_areas`, the map expansion of the scene's location is read too (map_areas.py).
"""

from pathlib import Path

from uniscene.boxes import Boxes
from uniscene.errors import UserError
from uniscene.grid import OccGrid
from uniscene.occ_label.label import LabelOptions, SceneArrays
from uniscene.occ_label.map_areas import MapAreas
from uniscene.occ_label.sweeps import SweepFiles
from uniscene.store import open_store


def load_scene(frames_path, options: LabelOptions, grid: OccGrid) -> SceneArrays:
    """What `options` asks for: lidarseg may be missing with `allow_missing_lidarseg`; with `map_areas`, the map's
    areas over every frame's reach of `grid`."""
    frames = open_store(frames_path, stage="frames")
    dataroot = Path(frames.attrs["dataroot"])
    sweep_paths = frames["sweep_path"].values
    lidarseg_paths = frames["sweep_lidarseg_path"].values
    if not any(lidarseg_paths) and not options.allow_missing_lidarseg:
        raise UserError(
            f"scene {frames.attrs.get('scene')} ({frames_path}) has no lidarseg labels under {dataroot}: install "
            "nuScenes-lidarseg (lidarseg/<version>/ and lidarseg.json) into the dataroot and rerun `uniscene frames`, "
            "or set occ_label.allow_missing_lidarseg: true to label static voxels 'others'"
        )
    return SceneArrays(
        sweeps=SweepFiles(dataroot, sweep_paths, lidarseg_paths),
        sweep_timestamp_us=frames["sweep_timestamp_us"].values,
        ego_from_lidar=frames["ego_from_lidar"].values,
        world_from_sweep_ego=frames["world_from_sweep_ego"].values,
        sweep_boxes=Boxes.from_dataset(frames, "sweep_box_"),
        frame_timestamp_us=frames["timestamp_us"].values,
        world_from_ego=frames["world_from_ego"].values,
        frame_boxes=Boxes.from_dataset(frames, "box_"),
        box_occ_class=frames["box_occ_class"].values,
        cam_intrinsics=frames["cam_intrinsics"].values,
        ego_from_cam=frames["ego_from_cam"].values,
        cam_image_size=frames["cam_image_size"].values,
        name=str(frames.attrs.get("scene", "")),
        map_areas=_map_areas(frames, frames_path, grid) if options.map_areas else None,
    )


def _map_areas(frames, frames_path, grid: OccGrid) -> MapAreas:
    location = frames.attrs.get("location")
    if not location:
        raise UserError(f"frames store {frames_path} has no 'location' attribute (the scene's map): rerun `uniscene frames`, "
                        "or set occ_label.map_areas: false")
    try:
        return MapAreas.load(frames.attrs["dataroot"], location, frames["world_from_ego"].values, grid)
    except UserError as error:
        raise UserError(f"{error}; or set occ_label.map_areas: false to spread ground classes without the map") from error
