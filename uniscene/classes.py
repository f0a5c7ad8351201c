"""Class tables: the 17 occupancy classes, nuScenes-lidarseg's 32 classes, detection classes.

Every other module takes class ids, names and colours from here.
"""

import numpy as np

# Occ3D / nuScenes-lidarseg 17 classes (0..16) plus free (17).
OCC_CLASS_NAMES = (
    "others",
    "barrier",
    "bicycle",
    "bus",
    "car",
    "construction_vehicle",
    "motorcycle",
    "pedestrian",
    "traffic_cone",
    "trailer",
    "truck",
    "driveable_surface",
    "other_flat",
    "sidewalk",
    "terrain",
    "manmade",
    "vegetation",
)
NUM_OCC_CLASSES = len(OCC_CLASS_NAMES)  # 17
FREE = 17
OCC_CLASS_ID = {name: i for i, name in enumerate(OCC_CLASS_NAMES)}
# Things: the classes of objects with boxes (1..10); the rest (0, 11..16) is stuff.
THING_CLASSES = tuple(range(OCC_CLASS_ID["barrier"], OCC_CLASS_ID["truck"] + 1))
# The ground: flat classes that form the height field under everything else.
GROUND_CLASSES = tuple(OCC_CLASS_ID[name] for name in ("driveable_surface", "other_flat", "sidewalk", "terrain"))
# Things that move. Their points outside every box (an object before its first or after its
# last annotation) would leave a trail through the static scene, so occ_label drops them.
MOVABLE_CLASSES = tuple(OCC_CLASS_ID[name] for name in (
    "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian", "trailer", "truck"))
# People, two-wheelers and cones: thin parts (a frame, legs, a cone's post) in a narrow box, carved on finer cells
# (occ_label.object_fine_cell_m) and tested against one LiDAR column (occupancy/carve.py).
SLENDER_CLASSES = tuple(OCC_CLASS_ID[name] for name in ("bicycle", "motorcycle", "pedestrian", "traffic_cone"))
# Things that stay where they are (barriers, cones): outside their boxes they are kept as static scene.
FIXED_THING_CLASSES = tuple(c for c in THING_CLASSES if c not in MOVABLE_CLASSES)

# Display colours (RGB, uint8) of classes 0..17, as the Occ3D visualisations use them.
OCC_COLORS = np.array(
    [
        (0, 0, 0),  # others
        (255, 120, 50),  # barrier
        (255, 192, 203),  # bicycle
        (255, 255, 0),  # bus
        (0, 150, 245),  # car
        (0, 255, 255),  # construction_vehicle
        (200, 180, 0),  # motorcycle
        (255, 0, 0),  # pedestrian
        (255, 240, 150),  # traffic_cone
        (135, 60, 0),  # trailer
        (160, 32, 240),  # truck
        (255, 0, 255),  # driveable_surface
        (139, 137, 137),  # other_flat
        (75, 0, 75),  # sidewalk
        (150, 240, 80),  # terrain
        (230, 230, 250),  # manmade
        (0, 175, 0),  # vegetation
        (255, 255, 255),  # free
    ],
    dtype=np.uint8,
)

# nuScenes-lidarseg's 32 classes, in the order of its category.json `index`.
LIDARSEG_CLASS_NAMES = (
    "noise",
    "animal",
    "human.pedestrian.adult",
    "human.pedestrian.child",
    "human.pedestrian.construction_worker",
    "human.pedestrian.personal_mobility",
    "human.pedestrian.police_officer",
    "human.pedestrian.stroller",
    "human.pedestrian.wheelchair",
    "movable_object.barrier",
    "movable_object.debris",
    "movable_object.pushable_pullable",
    "movable_object.trafficcone",
    "static_object.bicycle_rack",
    "vehicle.bicycle",
    "vehicle.bus.bendy",
    "vehicle.bus.rigid",
    "vehicle.car",
    "vehicle.construction",
    "vehicle.emergency.ambulance",
    "vehicle.emergency.police",
    "vehicle.motorcycle",
    "vehicle.trailer",
    "vehicle.truck",
    "flat.driveable_surface",
    "flat.other",
    "flat.sidewalk",
    "flat.terrain",
    "static.manmade",
    "static.other",
    "static.vegetation",
    "vehicle.ego",
)
LIDARSEG_CLASS_ID = {name: i for i, name in enumerate(LIDARSEG_CLASS_NAMES)}

# The nuScenes-lidarseg challenge mapping of the 32 classes onto the 17 (0 = others/ignored).
_LIDARSEG_TO_OCC_BY_NAME = {
    "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian",
    "human.pedestrian.police_officer": "pedestrian",
    "movable_object.barrier": "barrier",
    "movable_object.trafficcone": "traffic_cone",
    "vehicle.bicycle": "bicycle",
    "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus",
    "vehicle.car": "car",
    "vehicle.construction": "construction_vehicle",
    "vehicle.motorcycle": "motorcycle",
    "vehicle.trailer": "trailer",
    "vehicle.truck": "truck",
    "flat.driveable_surface": "driveable_surface",
    "flat.other": "other_flat",
    "flat.sidewalk": "sidewalk",
    "flat.terrain": "terrain",
    "static.manmade": "manmade",
    "static.vegetation": "vegetation",
}
LIDARSEG_TO_OCC = np.array(
    [OCC_CLASS_ID[_LIDARSEG_TO_OCC_BY_NAME.get(name, "others")] for name in LIDARSEG_CLASS_NAMES],
    dtype=np.uint8,
)  # [32] -> 0..16

# The 10 nuScenes detection classes; also the order of the object channels of the BEV layout.
DETECTION_CLASS_NAMES = (
    "car",
    "truck",
    "construction_vehicle",
    "bus",
    "trailer",
    "barrier",
    "motorcycle",
    "bicycle",
    "pedestrian",
    "traffic_cone",
)
DETECTION_CLASS_ID = {name: i for i, name in enumerate(DETECTION_CLASS_NAMES)}
# The nuScenes category an exporter names for a detection class when nothing more is known (a box added by
# `uniscene layout-edit`, or re-classed): the class's commonest category.
DETECTION_CLASS_CATEGORY = {
    "car": "vehicle.car", "truck": "vehicle.truck", "construction_vehicle": "vehicle.construction", "bus": "vehicle.bus.rigid",
    "trailer": "vehicle.trailer", "barrier": "movable_object.barrier", "motorcycle": "vehicle.motorcycle",
    "bicycle": "vehicle.bicycle", "pedestrian": "human.pedestrian.adult", "traffic_cone": "movable_object.trafficcone",
}


def detection_class_of(category_name: str) -> int:
    """Detection class id (0..9) of a nuScenes category name, or -1 when it has none.

    Follows nuscenes.eval.detection.utils.category_to_detection_name.
    """
    occ_name = _LIDARSEG_TO_OCC_BY_NAME.get(category_name)
    if occ_name in DETECTION_CLASS_ID:
        return DETECTION_CLASS_ID[occ_name]
    return -1


def occ_class_of(category_name: str) -> int:
    """Occupancy class id (0..16) of a nuScenes category name (lidarseg mapping)."""
    return int(LIDARSEG_TO_OCC[LIDARSEG_CLASS_ID[category_name]]) if category_name in LIDARSEG_CLASS_ID else 0


# BEV layout channels: 8 map layers then the 10 detection classes.
MAP_LAYER_NAMES = (
    "drivable_area",
    "ped_crossing",
    "walkway",
    "stop_line",
    "carpark_area",
    "road_divider",
    "lane_divider",
    "road_block",
)
LAYOUT_CHANNEL_NAMES = MAP_LAYER_NAMES + DETECTION_CLASS_NAMES  # 18

# Render classes: the 17 occupancy classes, then road markings that the layout paints on the
# ground so that they reach the images. Pixels where nothing is hit get RENDER_BACKGROUND.
RENDER_CLASS_NAMES = OCC_CLASS_NAMES + ("ped_crossing", "road_divider", "lane_divider")
NUM_RENDER_CLASSES = len(RENDER_CLASS_NAMES)  # 20
RENDER_BACKGROUND = 255
RENDER_COLORS = np.concatenate(
    [OCC_COLORS[:NUM_OCC_CLASSES], np.array([(255, 255, 255), (255, 215, 0), (250, 250, 210)], np.uint8)]
)
