"""nuScenes tables and map-expansion files of the synthetic dataset.

Records follow the nuScenes v1.0 schema (with nuScenes-lidarseg's category `index`) and the
map-expansion 1.3 schema, as nuscenes-devkit 1.2.0 reads them. Tokens are 32 hex digits
hashed from the seed and the record's names, so the same config writes the same bytes.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import shapely
from PIL import Image

from uniscene.sensors import CAMERA_NAMES, LIDAR_NAME
from uniscene.classes import LIDARSEG_CLASS_NAMES

TABLE_NAMES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
               "scene", "sample", "sample_data", "sample_annotation", "map")
ATTRIBUTE_NAMES = ("vehicle.moving", "vehicle.stopped", "vehicle.parked", "cycle.with_rider", "cycle.without_rider",
                   "pedestrian.sitting_lying_down", "pedestrian.standing", "pedestrian.moving")
VISIBILITY_LEVELS = (("1", "v0-40", "visibility of whole object is between 0 and 40%"),
                     ("2", "v40-60", "visibility of whole object is between 40 and 60%"),
                     ("3", "v60-80", "visibility of whole object is between 60 and 80%"),
                     ("4", "v80-100", "visibility of whole object is between 80 and 100%"))
MAP_DIMS_M = {  # the canvas of each real map (width, height), as the devkit knows them
    "singapore-onenorth": (1585.6, 2025.0),
    "singapore-hollandvillage": (2808.3, 2922.9),
    "singapore-queenstown": (3228.6, 3687.1),
    "boston-seaport": (2979.5, 2118.1),
}
MAP_PNG_RESOLUTION_M = 1.0


def make_token(*parts) -> str:
    return hashlib.md5("/".join(str(p) for p in parts).encode()).hexdigest()


def static_tables() -> dict:
    """category (32 lidarseg classes with `index`), attribute, visibility and sensor tables."""
    category = [{"token": make_token("category", name), "name": name, "description": f"synthetic {name}", "index": i}
                for i, name in enumerate(LIDARSEG_CLASS_NAMES)]
    attribute = [{"token": make_token("attribute", name), "name": name, "description": name} for name in ATTRIBUTE_NAMES]
    visibility = [{"token": token, "level": level, "description": text} for token, level, text in VISIBILITY_LEVELS]
    sensor = [{"token": make_token("sensor", name), "channel": name, "modality": "camera"} for name in CAMERA_NAMES]
    sensor.append({"token": make_token("sensor", LIDAR_NAME), "channel": LIDAR_NAME, "modality": "lidar"})
    return {"category": category, "attribute": attribute, "visibility": visibility, "sensor": sensor}


def visibility_token(fraction: float) -> str:
    return "1" if fraction < 0.4 else "2" if fraction < 0.6 else "3" if fraction < 0.8 else "4"


def write_tables(table_root: Path, tables: dict) -> None:
    table_root.mkdir(parents=True, exist_ok=True)
    for name, records in tables.items():
        (table_root / f"{name}.json").write_text(json.dumps(records, indent=0) + "\n")


def _f(values) -> list:
    return [float(v) for v in values]


# ---------------------------------------------------------------------------------------------
# map expansion


class _MapBuilder:
    def __init__(self, location: str):
        self.location = location
        self.json = {
            "version": "1.3",
            "canvas_edge": list(MAP_DIMS_M[location]),
            "node": [], "line": [], "polygon": [],
            "drivable_area": [], "road_segment": [], "road_block": [], "lane": [], "ped_crossing": [],
            "walkway": [], "stop_line": [], "carpark_area": [], "road_divider": [], "lane_divider": [],
            "traffic_light": [], "lane_connector": [], "arcline_path_3": {}, "connectivity": {},
        }
        self.counts = {}

    def token(self, kind: str) -> str:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return make_token("map", self.location, kind, self.counts[kind])

    def node(self, x, y) -> str:
        token = self.token("node")
        self.json["node"].append({"token": token, "x": round(float(x), 4), "y": round(float(y), 4)})
        return token

    def polygon(self, geometry) -> list:
        """Polygon records of a shapely (Multi)Polygon or a rectangle tuple; returns their tokens."""
        if isinstance(geometry, tuple):
            geometry = shapely.geometry.box(*geometry)
        parts = list(geometry.geoms) if hasattr(geometry, "geoms") else [geometry]
        tokens = []
        for part in parts:
            if part.is_empty or part.area <= 0:
                continue
            part = shapely.geometry.polygon.orient(part)
            exterior = [self.node(x, y) for x, y in list(part.exterior.coords)[:-1]]
            holes = [{"node_tokens": [self.node(x, y) for x, y in list(ring.coords)[:-1]]} for ring in part.interiors]
            token = self.token("polygon")
            self.json["polygon"].append({"token": token, "exterior_node_tokens": exterior, "holes": holes})
            tokens.append(token)
        return tokens

    def line(self, points) -> tuple:
        nodes = [self.node(x, y) for x, y in points]
        token = self.token("line")
        self.json["line"].append({"token": token, "node_tokens": nodes})
        return token, nodes

    def add_town(self, town) -> None:
        shapes = town.shapes
        j = self.json
        drivable_token = self.token("drivable_area")
        j["drivable_area"].append({"token": drivable_token, "polygon_tokens": self.polygon(shapes.drivable)})
        for rect, is_intersection in shapes.road_segments:
            (polygon,) = self.polygon(rect)
            j["road_segment"].append({"token": self.token("road_segment"), "polygon_token": polygon,
                                      "is_intersection": bool(is_intersection), "drivable_area_token": drivable_token})
        for rect in shapes.road_blocks:
            (polygon,) = self.polygon(rect)
            j["road_block"].append({"token": self.token("road_block"), "polygon_token": polygon,
                                    "from_edge_line_token": None, "to_edge_line_token": None, "road_segment_token": None})
        for rect, (x, y, yaw), length in shapes.lanes:
            (polygon,) = self.polygon(rect)
            token = self.token("lane")
            j["lane"].append({"token": token, "polygon_token": polygon, "lane_type": "CAR",
                              "from_edge_line_token": None, "to_edge_line_token": None,
                              "left_lane_divider_segments": [], "right_lane_divider_segments": []})
            end = (x + length * np.cos(yaw), y + length * np.sin(yaw), yaw)
            j["arcline_path_3"][token] = [{"start_pose": _f((x, y, yaw)), "end_pose": _f(end), "shape": "LSR",
                                           "radius": 999.999, "segment_length": [0.0, float(length), 0.0]}]
            j["connectivity"][token] = {"incoming": [], "outgoing": []}
        for rect in shapes.ped_crossings:
            (polygon,) = self.polygon(rect)
            j["ped_crossing"].append({"token": self.token("ped_crossing"), "polygon_token": polygon, "road_segment_token": None})
        for polygon in self.polygon(shapes.walkway):
            j["walkway"].append({"token": self.token("walkway"), "polygon_token": polygon})
        for rect in shapes.stop_lines:
            (polygon,) = self.polygon(rect)
            j["stop_line"].append({"token": self.token("stop_line"), "polygon_token": polygon, "stop_line_type": "STOP_SIGN",
                                   "ped_crossing_tokens": [], "traffic_light_tokens": [], "road_block_token": None})
        for rect, orientation in shapes.carparks:
            (polygon,) = self.polygon(rect)
            j["carpark_area"].append({"token": self.token("carpark_area"), "polygon_token": polygon,
                                      "orientation": float(orientation), "road_block_token": None})
        for a, b in shapes.road_dividers:
            line, _ = self.line([a, b])
            j["road_divider"].append({"token": self.token("road_divider"), "line_token": line, "road_segment_token": None})
        for a, b in shapes.lane_dividers:
            line, nodes = self.line([a, b])
            j["lane_divider"].append({"token": self.token("lane_divider"), "line_token": line,
                                      "lane_divider_segments": [{"node_token": n, "segment_type": "DOUBLE_DASHED_WHITE"}
                                                                for n in nodes]})


def write_map(dataroot: Path, location: str, towns: list, log_tokens: list) -> dict:
    """Write maps/expansion/<location>.json and a small semantic-prior png; return the `map` record.

    The png holds the drivable area at MAP_PNG_RESOLUTION_M per pixel (the devkit's `map.mask`
    assumes 0.1 m: use the expansion JSON, not the png, for geometry).
    """
    builder = _MapBuilder(location)
    for town in towns:
        builder.add_town(town)
    expansion = dataroot / "maps" / "expansion"
    expansion.mkdir(parents=True, exist_ok=True)
    (expansion / f"{location}.json").write_text(json.dumps(builder.json, separators=(",", ":")) + "\n")

    width_m, height_m = MAP_DIMS_M[location]
    w, h = int(np.ceil(width_m / MAP_PNG_RESOLUTION_M)), int(np.ceil(height_m / MAP_PNG_RESOLUTION_M))
    mask = np.zeros((h, w), np.uint8)
    for town in towns:
        x0, y0, x1, y1 = town.bounds
        xs = np.arange(max(int(x0), 0), min(int(np.ceil(x1)), w))
        ys = np.arange(max(int(y0), 0), min(int(np.ceil(y1)), h))
        if len(xs) == 0 or len(ys) == 0:
            continue
        gx, gy = np.meshgrid(xs + 0.5, ys + 0.5)
        from uniscene.synth.town import DRIVEABLE

        drivable = town.ground_class(gx, gy) == DRIVEABLE
        mask[h - 1 - ys[:, None], xs[None, :]] = np.where(drivable, 255, mask[h - 1 - ys[:, None], xs[None, :]])
    token = make_token("map", location)
    filename = f"maps/{token}.png"
    Image.fromarray(mask).save(dataroot / filename, optimize=False)
    return {"token": token, "log_tokens": list(log_tokens), "category": "semantic_prior", "filename": filename}
