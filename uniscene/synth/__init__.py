"""The embedded synthetic dataset: a procedural town written as a real nuScenes-format dataset.

Modules, in the order the data flows:
    town.py            the static world: roads, lanes, sidewalks, blocks, buildings, trees; map shapes
    agents.py          the ego route and the annotated instances (parked, moving, static) with their parts
    world.py           `build_scene(config, index) -> SyntheticScene`: poses, boxes and `raycast` at any time
    kernels.py         vectorised rays-against-boxes and boxes-into-voxels, with slow references
    sensors.py         LIDAR_TOP beam pattern and the six cameras (nuScenes mounts and intrinsics)
    capture.py         instantaneous LiDAR sweeps and camera images
    truth.py           per-frame occupancy, camera visibility mask and boxes (the truth stores)
    nuscenes_writer.py nuScenes tables, map expansion JSON and map png
    generate.py        `generate_dataset(config, out)`: the whole dataroot, atomically

Conventions: the world frame is the map frame of the scene's location (flat ground z = 0, no
pitch or roll); scene i uses location LOCATIONS[i % 4] and its own 500 m region of that map.
"""

from uniscene.synth.world import LOCATIONS, SyntheticScene, build_scene, scene_location, scene_name

__all__ = ["LOCATIONS", "SyntheticScene", "build_scene", "scene_location", "scene_name"]
