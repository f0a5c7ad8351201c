"""The static world of one synthetic scene: a grid town of roads, sidewalks and blocks.

A town is `n` x `n` blocks between `n + 1` roads along x and `n + 1` roads along y, all
axis-aligned in the map frame. Roads carry 1 or 2 lanes per direction (right-hand traffic);
1-lane roads have a parking lane on each side. Sidewalks border every road; ped crossings
lie on every road arm next to each intersection, in line with the crossing road's sidewalks.
Blocks are built-up lots (buildings), parks (terrain, trees), car parks or plazas (flat.other).

Everything flat is a rectangle painted, in order, into a ground class raster (0.1 m); the map
layers are built from the same rectangles, so the map and the ground truth agree.
Solids are yaw-only oriented boxes (see `BoxSet`).
"""

from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely.geometry import box as shapely_box

from uniscene.classes import LIDARSEG_CLASS_ID

LANE_WIDTH_M = 3.5
PARKING_WIDTH_M = 2.5
SIDEWALK_WIDTH_M = 3.0
CROSSING_WIDTH_M = 3.0
STOP_LINE_WIDTH_M = 0.4
RASTER_RESOLUTION_M = 0.1
BORDER_M = 30.0  # terrain and buildings around the outer roads

# ground classes: lidarseg class ids (the occupancy class follows through classes.LIDARSEG_TO_OCC)
DRIVEABLE = LIDARSEG_CLASS_ID["flat.driveable_surface"]
SIDEWALK = LIDARSEG_CLASS_ID["flat.sidewalk"]
TERRAIN = LIDARSEG_CLASS_ID["flat.terrain"]
OTHER_FLAT = LIDARSEG_CLASS_ID["flat.other"]
MANMADE = LIDARSEG_CLASS_ID["static.manmade"]
VEGETATION = LIDARSEG_CLASS_ID["static.vegetation"]

# road markings painted on the ground (colour only; the class stays the ground's)
MARK_NONE, MARK_WHITE, MARK_YELLOW = 0, 1, 2


@dataclass
class BoxSet:
    """Yaw-only oriented boxes, world frame (z up, boxes stand on z >= 0).

    center: [M, 3] metres; half: [M, 3] half extents along the box's own x (heading), y, z;
    yaw: [M] radians about +z; lidarseg: [M] lidarseg class (0..31).
    """

    center: np.ndarray
    half: np.ndarray
    yaw: np.ndarray
    lidarseg: np.ndarray

    @classmethod
    def empty(cls):
        return cls(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros(0, np.uint8))

    def __len__(self):
        return len(self.yaw)


@dataclass
class Road:
    axis: int  # 0: runs along x (y = coord), 1: runs along y (x = coord)
    coord: float  # world coordinate of the centre line
    lanes_per_direction: int

    @property
    def parking(self) -> bool:
        return self.lanes_per_direction == 1

    @property
    def half_width(self) -> float:
        """Kerb to centre line (travel and parking lanes)."""
        return self.lanes_per_direction * LANE_WIDTH_M + (PARKING_WIDTH_M if self.parking else 0.0)

    def lane_offset(self, lane: int) -> float:
        """Offset to the right of the direction of travel of lane `lane` (0 = next to the centre line)."""
        return (lane + 0.5) * LANE_WIDTH_M


@dataclass
class MapShapes:
    """Map-expansion geometry of a town, world frame. Rectangles are (x0, y0, x1, y1)."""

    drivable: object = None  # shapely geometry
    walkway: object = None
    road_segments: list = field(default_factory=list)  # (rect, is_intersection)
    road_blocks: list = field(default_factory=list)  # rect
    lanes: list = field(default_factory=list)  # (rect, start_pose (x, y, yaw), length)
    ped_crossings: list = field(default_factory=list)
    stop_lines: list = field(default_factory=list)
    carparks: list = field(default_factory=list)  # (rect, orientation)
    road_dividers: list = field(default_factory=list)  # ((x0, y0), (x1, y1))
    lane_dividers: list = field(default_factory=list)


@dataclass
class Town:
    """The static world. `raster[j, i]` is the ground lidarseg class at world
    (raster_origin + ((i, j) + 0.5) * RASTER_RESOLUTION_M); outside it the ground is terrain."""

    origin: np.ndarray  # [2] world xy of node (0, 0)
    num_blocks: int
    pitch_m: float
    roads: list  # [Road], the n + 1 along x then the n + 1 along y
    raster: np.ndarray  # [Hr, Wr] uint8 lidarseg class
    marking: np.ndarray  # [Hr, Wr] uint8 MARK_*
    raster_origin: np.ndarray  # [2]
    static: BoxSet  # buildings, trees, poles, walls (no instances)
    shapes: MapShapes
    block_kinds: np.ndarray  # [n, n] str
    parking_slots: list  # (x, y, yaw) where a car may park
    sidewalk_spots: list  # (x, y, yaw) on the outer sidewalk edge (parked bicycles, standing people)
    works_zones: list  # (x, y, yaw, length) stretches of parking lane closed by barriers and cones

    @property
    def bounds(self) -> np.ndarray:
        """(x0, y0, x1, y1) of the raster."""
        h, w = self.raster.shape
        return np.array([*self.raster_origin, self.raster_origin[0] + w * RASTER_RESOLUTION_M,
                         self.raster_origin[1] + h * RASTER_RESOLUTION_M])

    def node_xy(self, i: int, j: int) -> np.ndarray:
        return np.array([self.roads[self.num_blocks + 1 + i].coord, self.roads[j].coord])

    def road_x(self, j: int) -> Road:  # the j-th road along x (y = const)
        return self.roads[j]

    def road_y(self, i: int) -> Road:  # the i-th road along y (x = const)
        return self.roads[self.num_blocks + 1 + i]

    def ground_class(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Lidarseg ground class under world points: x, y [...] -> [...] uint8."""
        i = np.floor((np.asarray(x) - self.raster_origin[0]) / RASTER_RESOLUTION_M).astype(np.int64)
        j = np.floor((np.asarray(y) - self.raster_origin[1]) / RASTER_RESOLUTION_M).astype(np.int64)
        h, w = self.raster.shape
        inside = (i >= 0) & (i < w) & (j >= 0) & (j < h)
        out = np.full(np.shape(i), TERRAIN, np.uint8)
        out[inside] = self.raster[j[inside], i[inside]]
        return out

    def ground_marking(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        i = np.floor((np.asarray(x) - self.raster_origin[0]) / RASTER_RESOLUTION_M).astype(np.int64)
        j = np.floor((np.asarray(y) - self.raster_origin[1]) / RASTER_RESOLUTION_M).astype(np.int64)
        h, w = self.marking.shape
        inside = (i >= 0) & (i < w) & (j >= 0) & (j < h)
        out = np.zeros(np.shape(i), np.uint8)
        out[inside] = self.marking[j[inside], i[inside]]
        return out


class _Painter:
    """Paints axis-aligned rectangles (world metres) into the rasters."""

    def __init__(self, x0, y0, x1, y1):
        self.origin = np.array([x0, y0])
        w = int(round((x1 - x0) / RASTER_RESOLUTION_M))
        h = int(round((y1 - y0) / RASTER_RESOLUTION_M))
        self.raster = np.full((h, w), TERRAIN, np.uint8)
        self.marking = np.zeros((h, w), np.uint8)

    def _slices(self, rect):
        x0, y0, x1, y1 = rect
        # a pixel belongs to the rectangle when its centre does
        i0 = int(np.ceil((x0 - self.origin[0]) / RASTER_RESOLUTION_M - 0.5))
        i1 = int(np.ceil((x1 - self.origin[0]) / RASTER_RESOLUTION_M - 0.5))
        j0 = int(np.ceil((y0 - self.origin[1]) / RASTER_RESOLUTION_M - 0.5))
        j1 = int(np.ceil((y1 - self.origin[1]) / RASTER_RESOLUTION_M - 0.5))
        h, w = self.raster.shape
        return slice(max(j0, 0), max(min(j1, h), 0)), slice(max(i0, 0), max(min(i1, w), 0))

    def fill(self, rect, value):
        self.raster[self._slices(rect)] = value

    def mark(self, rect, value):
        self.marking[self._slices(rect)] = value


def _rect(cx, cy, half_x, half_y):
    return (cx - half_x, cy - half_y, cx + half_x, cy + half_y)


def _along(road: Road, s0: float, s1: float, d0: float, d1: float):
    """Rectangle from s0 to s1 along `road` and from d0 to d1 across it (left of +axis positive)."""
    if road.axis == 0:
        return (min(s0, s1), road.coord + min(d0, d1), max(s0, s1), road.coord + max(d0, d1))
    # across +y the left is -x
    return (road.coord - max(d0, d1), min(s0, s1), road.coord - min(d0, d1), max(s0, s1))


class _Boxes:
    def __init__(self):
        self.rows = []

    def add(self, cx, cy, z0, lx, ly, lz, yaw, lidarseg):
        self.rows.append((cx, cy, z0 + lz / 2, lx / 2, ly / 2, lz / 2, yaw, lidarseg))

    def build(self) -> BoxSet:
        if not self.rows:
            return BoxSet.empty()
        a = np.array(self.rows, dtype=np.float64)
        return BoxSet(a[:, 0:3].copy(), a[:, 3:6].copy(), a[:, 6].copy(), a[:, 7].astype(np.uint8))


def build_town(rng: np.random.Generator, origin_xy, num_blocks: int = 4, pitch_m: float = 70.0) -> Town:
    """A random town whose node (0, 0) lies at `origin_xy` (world metres)."""
    n = int(num_blocks)
    ox, oy = float(origin_xy[0]), float(origin_xy[1])
    roads = [Road(0, oy + j * pitch_m, int(rng.choice([1, 2], p=[0.55, 0.45]))) for j in range(n + 1)]
    roads += [Road(1, ox + i * pitch_m, int(rng.choice([1, 2], p=[0.55, 0.45]))) for i in range(n + 1)]
    along_x, along_y = roads[: n + 1], roads[n + 1:]
    max_hw = max(r.half_width for r in roads) + SIDEWALK_WIDTH_M
    x_lo, x_hi = ox - max_hw - BORDER_M, ox + n * pitch_m + max_hw + BORDER_M
    y_lo, y_hi = oy - max_hw - BORDER_M, oy + n * pitch_m + max_hw + BORDER_M
    painter = _Painter(x_lo, y_lo, x_hi, y_hi)
    boxes = _Boxes()
    shapes = MapShapes()

    # 1. Blocks: their interiors (between the sidewalks).
    kinds = rng.choice(["buildings", "buildings", "buildings", "park", "carpark", "plaza"], size=(n, n))
    parking_slots, sidewalk_spots, works_zones = [], [], []
    drivable_rects, carpark_rects, islands = [], [], []
    for bi in range(n):
        for bj in range(n):
            x0 = along_y[bi].coord + along_y[bi].half_width + SIDEWALK_WIDTH_M
            x1 = along_y[bi + 1].coord - along_y[bi + 1].half_width - SIDEWALK_WIDTH_M
            y0 = along_x[bj].coord + along_x[bj].half_width + SIDEWALK_WIDTH_M
            y1 = along_x[bj + 1].coord - along_x[bj + 1].half_width - SIDEWALK_WIDTH_M
            _build_block(rng, str(kinds[bi, bj]), (x0, y0, x1, y1), painter, boxes, shapes, parking_slots, carpark_rects)
    # the border: buildings and trees beyond the outer sidewalks
    _build_border(rng, (x_lo, y_lo, x_hi, y_hi), (ox - max_hw, oy - max_hw, ox + n * pitch_m + max_hw, oy + n * pitch_m + max_hw), boxes)

    # 2. Sidewalks, then roads over them (intersections are where roads overlap).
    for road in roads:
        cross = along_y if road.axis == 0 else along_x
        s0 = cross[0].coord - cross[0].half_width - SIDEWALK_WIDTH_M
        s1 = cross[n].coord + cross[n].half_width + SIDEWALK_WIDTH_M
        hw = road.half_width
        painter.fill(_along(road, s0, s1, -hw - SIDEWALK_WIDTH_M, hw + SIDEWALK_WIDTH_M), SIDEWALK)
    road_rects = []
    for road in roads:
        cross = along_y if road.axis == 0 else along_x
        s0, s1 = cross[0].coord - cross[0].half_width, cross[n].coord + cross[n].half_width
        rect = _along(road, s0, s1, -road.half_width, road.half_width)
        road_rects.append(rect)
        drivable_rects.append(rect)
    for rect in road_rects:
        painter.fill(rect, DRIVEABLE)

    # 3. Road arms between intersections: segments, blocks, lanes, dividers, crossings, stop lines, islands.
    for road in roads:
        cross = along_y if road.axis == 0 else along_x
        hw = road.half_width
        for k in range(n + 1):  # intersections
            c = cross[k]
            rect = _along(road, c.coord - c.half_width, c.coord + c.half_width, -hw, hw)
            if road.axis == 0:
                shapes.road_segments.append((rect, True))
        for k in range(n):  # arms between node k and k + 1
            a = cross[k].coord + cross[k].half_width
            b = cross[k + 1].coord - cross[k + 1].half_width
            shapes.road_segments.append((_along(road, a, b, -hw, hw), False))
            travel = road.lanes_per_direction * LANE_WIDTH_M
            yaw_pos = 0.0 if road.axis == 0 else np.pi / 2  # heading of travel towards +axis
            # right-hand traffic: towards +axis on the right (negative left offset), towards -axis on the left
            shapes.road_blocks.append(_along(road, a, b, -travel, 0.0))
            shapes.road_blocks.append(_along(road, a, b, 0.0, travel))
            for lane in range(road.lanes_per_direction):
                off = road.lane_offset(lane)
                for sign, yaw, start in ((-1, yaw_pos, a), (1, yaw_pos + np.pi, b)):
                    rect = _along(road, a, b, sign * (off - LANE_WIDTH_M / 2), sign * (off + LANE_WIDTH_M / 2))
                    sx, sy = _point_on(road, start, sign * off)
                    shapes.lanes.append((rect, (sx, sy, float(np.arctan2(np.sin(yaw), np.cos(yaw)))), b - a))
            # centre line (double yellow) and lane dividers (dashed white)
            shapes.road_dividers.append((_point_on(road, a, 0.0), _point_on(road, b, 0.0)))
            painter.mark(_along(road, a + CROSSING_WIDTH_M, b - CROSSING_WIDTH_M, -0.25, -0.1), MARK_YELLOW)
            painter.mark(_along(road, a + CROSSING_WIDTH_M, b - CROSSING_WIDTH_M, 0.1, 0.25), MARK_YELLOW)
            if road.lanes_per_direction == 2:
                for d in (-LANE_WIDTH_M, LANE_WIDTH_M):
                    shapes.lane_dividers.append((_point_on(road, a, d), _point_on(road, b, d)))
                    for s in np.arange(a + CROSSING_WIDTH_M + 2.0, b - CROSSING_WIDTH_M - 3.0, 9.0):
                        painter.mark(_along(road, s, s + 3.0, d - 0.075, d + 0.075), MARK_WHITE)
            else:  # parking lane edge lines
                for d in (-LANE_WIDTH_M, LANE_WIDTH_M):
                    painter.mark(_along(road, a + CROSSING_WIDTH_M, b - CROSSING_WIDTH_M, d - 0.06, d + 0.06), MARK_WHITE)
            # crossings at both ends, stop lines on the lanes entering the intersection
            for end, inward in ((a, 1.0), (b, -1.0)):
                cw = _along(road, end, end + inward * CROSSING_WIDTH_M, -hw, hw)
                shapes.ped_crossings.append(cw)
                for d in np.arange(-hw + 0.3, hw - 0.3, 1.0):
                    painter.mark(_along(road, end + inward * 0.2, end + inward * (CROSSING_WIDTH_M - 0.2), d, d + 0.5), MARK_WHITE)
                s_line = end + inward * (CROSSING_WIDTH_M + 0.5)
                lanes_side = 1.0 if inward > 0 else -1.0  # lanes entering the intersection: left of +axis at the a end
                stop = _along(road, s_line, s_line + inward * STOP_LINE_WIDTH_M, 0.0, lanes_side * travel)
                shapes.stop_lines.append(stop)
                painter.mark(stop, MARK_WHITE)
            # parking lanes: kerb islands (flat.other) next to the crossings, slots, works zones
            if road.parking:
                for side in (-1.0, 1.0):
                    lo, hi = side * LANE_WIDTH_M, side * hw
                    for end, inward in ((a, 1.0), (b, -1.0)):
                        island = _along(road, end + inward * CROSSING_WIDTH_M, end + inward * (CROSSING_WIDTH_M + 4.0), lo, hi)
                        islands.append(island)
                    yaw = yaw_pos if side < 0 else yaw_pos + np.pi
                    first, last = a + CROSSING_WIDTH_M + 4.0, b - CROSSING_WIDTH_M - 4.0
                    if rng.random() < 0.12:  # a works zone closes part of this parking lane
                        length = float(rng.uniform(10, 18))
                        s = float(rng.uniform(first, last - length))
                        works_zones.append((*_point_on(road, s + length / 2, side * (LANE_WIDTH_M + PARKING_WIDTH_M / 2)), yaw, length))
                        first_block, last_block = s - 1.0, s + length + 1.0
                    else:
                        first_block = last_block = -np.inf
                    for s in np.arange(first + 3.25, last - 3.25, 6.5):
                        if first_block - 3.25 < s < last_block + 3.25:
                            continue
                        x, y = _point_on(road, s, side * (LANE_WIDTH_M + PARKING_WIDTH_M / 2))
                        parking_slots.append((x, y, float(yaw)))
            # sidewalk furniture: trees and street lights; spots for bicycles and standing people
            for side in (-1.0, 1.0):
                s = a + 4.0 + float(rng.uniform(0, 4))
                while s < b - 4.0:
                    x, y = _point_on(road, s, side * (hw + SIDEWALK_WIDTH_M - 0.6))
                    if rng.random() < 0.55:
                        _tree(rng, boxes, x, y, small=True)
                    elif rng.random() < 0.5:
                        sidewalk_spots.append((x, y, (0.0 if road.axis == 0 else np.pi / 2) + (np.pi if side > 0 else 0.0)))
                    s += float(rng.uniform(7, 13))
                for s in np.arange(a + 6.0 + rng.uniform(0, 5), b - 3.0, 24.0):
                    x, y = _point_on(road, s, side * (hw + 0.4))
                    boxes.add(x, y, 0.0, 0.22, 0.22, float(rng.uniform(5.5, 7.5)), 0.0, MANMADE)
    for island in islands:
        painter.fill(island, OTHER_FLAT)

    # 4. Map geometry from the same rectangles as the raster.
    drivable = shapely.union_all([shapely_box(*r) for r in drivable_rects + carpark_rects])
    if islands:
        drivable = drivable.difference(shapely.union_all([shapely_box(*r) for r in islands]))
    shapes.drivable = drivable
    sidewalk_rects = []
    for road in roads:
        cross = along_y if road.axis == 0 else along_x
        s0 = cross[0].coord - cross[0].half_width - SIDEWALK_WIDTH_M
        s1 = cross[n].coord + cross[n].half_width + SIDEWALK_WIDTH_M
        sidewalk_rects.append(_along(road, s0, s1, -road.half_width - SIDEWALK_WIDTH_M, road.half_width + SIDEWALK_WIDTH_M))
    shapes.walkway = shapely.union_all([shapely_box(*r) for r in sidewalk_rects]).difference(
        shapely.union_all([shapely_box(*r) for r in road_rects]))
    return Town(
        origin=np.array([ox, oy]), num_blocks=n, pitch_m=pitch_m, roads=roads, raster=painter.raster,
        marking=painter.marking, raster_origin=painter.origin, static=boxes.build(), shapes=shapes,
        block_kinds=kinds, parking_slots=parking_slots, sidewalk_spots=sidewalk_spots, works_zones=works_zones,
    )


def _point_on(road: Road, s: float, d: float):
    """World xy at `s` along `road` and `d` to the left of its +axis direction."""
    if road.axis == 0:
        return (float(s), float(road.coord + d))
    return (float(road.coord - d), float(s))


def _tree(rng, boxes: _Boxes, x, y, small=False):
    trunk_h = float(rng.uniform(1.8, 2.8))
    crown = float(rng.uniform(2.0, 3.0) if small else rng.uniform(3.0, 5.5))
    crown_h = float(rng.uniform(2.0, 3.5) if small else rng.uniform(3.0, 6.0))
    yaw = float(rng.uniform(0, np.pi / 2))
    boxes.add(x, y, 0.0, 0.35, 0.35, trunk_h + 0.3, yaw, VEGETATION)
    boxes.add(x, y, trunk_h, crown, crown, crown_h, yaw, VEGETATION)
    if not small and rng.random() < 0.5:  # a second, smaller crown tier
        boxes.add(x, y, trunk_h + crown_h, crown * 0.6, crown * 0.6, crown_h * 0.5, yaw + 0.4, VEGETATION)


def _build_block(rng, kind, rect, painter: _Painter, boxes: _Boxes, shapes: MapShapes, parking_slots, carpark_rects):
    x0, y0, x1, y1 = rect
    if kind == "plaza":
        painter.fill(rect, OTHER_FLAT)
        for _ in range(int(rng.integers(3, 8))):
            _tree(rng, boxes, rng.uniform(x0 + 3, x1 - 3), rng.uniform(y0 + 3, y1 - 3))
        for _ in range(int(rng.integers(2, 6))):  # kiosks, benches, sculptures
            boxes.add(rng.uniform(x0 + 4, x1 - 4), rng.uniform(y0 + 4, y1 - 4), 0.0, rng.uniform(1, 4),
                      rng.uniform(1, 4), rng.uniform(0.8, 3.5), rng.uniform(0, np.pi), MANMADE)
        return
    if kind == "park":
        for _ in range(int(rng.integers(10, 22))):
            _tree(rng, boxes, rng.uniform(x0 + 2, x1 - 2), rng.uniform(y0 + 2, y1 - 2))
        for _ in range(int(rng.integers(4, 10))):  # bushes
            boxes.add(rng.uniform(x0 + 1, x1 - 1), rng.uniform(y0 + 1, y1 - 1), 0.0, rng.uniform(1, 3),
                      rng.uniform(1, 3), rng.uniform(0.6, 1.5), rng.uniform(0, np.pi), VEGETATION)
        path_y = rng.uniform(y0 + 8, y1 - 8)  # a paved path across the park
        painter.fill((x0, path_y - 1.5, x1, path_y + 1.5), OTHER_FLAT)
        return
    if kind == "carpark":
        margin = 2.0
        cp = (x0 + margin, y0 + margin, x1 - margin, y1 - margin * 4)
        painter.fill(cp, DRIVEABLE)
        carpark_rects.append(cp)
        shapes.carparks.append((cp, 0.0))
        # rows of slots facing +-y with aisles between them
        y = cp[1] + 2.6
        while y + 7.6 <= cp[3]:  # a pair of rows back to back, then a 7 m aisle
            for row_y in (y, y + 5.0):
                for x in np.arange(cp[0] + 1.5, cp[2] - 1.5, 2.7):
                    parking_slots.append((float(x), float(row_y), np.pi / 2 if rng.random() < 0.5 else -np.pi / 2))
            y += 17.0
        # a low wall on the far side
        boxes.add((x0 + x1) / 2, y1 - 1.0, 0.0, x1 - x0 - 2.0, 0.3, 1.2, 0.0, MANMADE)
        return
    # built-up lots: 1-3 x 1-2 buildings with terrain setbacks and some trees
    nx, ny = int(rng.integers(1, 4)), int(rng.integers(1, 3))
    xs = np.linspace(x0, x1, nx + 1)
    ys = np.linspace(y0, y1, ny + 1)
    for i in range(nx):
        for j in range(ny):
            lx0, lx1, ly0, ly1 = xs[i], xs[i + 1], ys[j], ys[j + 1]
            setback = rng.uniform(1.5, 4.0, size=4)
            bx0, bx1 = lx0 + setback[0], lx1 - setback[1]
            by0, by1 = ly0 + setback[2], ly1 - setback[3]
            if bx1 - bx0 < 4 or by1 - by0 < 4:
                continue
            height = float(rng.uniform(6, 28))
            boxes.add((bx0 + bx1) / 2, (by0 + by1) / 2, 0.0, bx1 - bx0, by1 - by0, height, 0.0, MANMADE)
            if rng.random() < 0.35:  # a tower on top
                f = rng.uniform(0.4, 0.7)
                boxes.add((bx0 + bx1) / 2, (by0 + by1) / 2, height, (bx1 - bx0) * f, (by1 - by0) * f,
                          float(rng.uniform(4, 15)), 0.0, MANMADE)
            if rng.random() < 0.5:  # a tree in the front yard
                _tree(rng, boxes, rng.uniform(lx0 + 1, lx1 - 1), ly0 + setback[2] / 2 if setback[2] > 2.5 else ly1 - setback[3] / 2, small=True)
            if rng.random() < 0.3:  # a paved forecourt
                painter.fill((bx0, ly0, bx1, by0), OTHER_FLAT)


def _build_border(rng, outer, inner, boxes: _Boxes):
    """Buildings and trees in the band between the outer sidewalks and the raster edge."""
    ox0, oy0, ox1, oy1 = outer
    ix0, iy0, ix1, iy1 = inner
    band = [(ox0, oy0, ox1, iy0), (ox0, iy1, ox1, oy1), (ox0, iy0, ix0, iy1), (ix1, iy0, ox1, iy1)]
    for bx0, by0, bx1, by1 in band:
        horizontal = (bx1 - bx0) > (by1 - by0)
        length = (bx1 - bx0) if horizontal else (by1 - by0)
        s = 0.0
        while s < length - 6:
            size = float(rng.uniform(10, 30))
            depth = float(rng.uniform(8, 18))
            s_end = min(s + size, length)
            if rng.random() < 0.8:
                gap_near = float(rng.uniform(4, 8))
                if horizontal:
                    near_y = by1 - gap_near if by0 < iy0 else by0 + gap_near
                    cy = near_y - depth / 2 if by0 < iy0 else near_y + depth / 2
                    boxes.add(bx0 + (s + s_end) / 2, cy, 0.0, s_end - s - 2, depth, rng.uniform(8, 30), 0.0, MANMADE)
                else:
                    near_x = bx1 - gap_near if bx0 < ix0 else bx0 + gap_near
                    cx = near_x - depth / 2 if bx0 < ix0 else near_x + depth / 2
                    boxes.add(cx, by0 + (s + s_end) / 2, 0.0, depth, s_end - s - 2, rng.uniform(8, 30), 0.0, MANMADE)
            else:
                px = bx0 + (s + s_end) / 2 if horizontal else (bx0 + bx1) / 2
                py = (by0 + by1) / 2 if horizontal else by0 + (s + s_end) / 2
                _tree(rng, boxes, px, py)
            s = s_end + float(rng.uniform(2, 6))
