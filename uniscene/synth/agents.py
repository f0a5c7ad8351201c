"""Everything with an identity in the synthetic world: the ego car and the annotated instances.

Moving agents drive (or walk) routes along the town's lanes (sidewalks): straight through
intersections, or turning on circular arcs tangent to both lanes, slowing down for the turn.
Every trajectory is tabulated on a fine time grid (`DT_S`) and interpolated linearly, so
poses at any time are cheap and vectorised over instances.

Letters: I instances, K time-grid samples, Q parts.
"""

from dataclasses import dataclass

import numpy as np

from uniscene.classes import LIDARSEG_CLASS_ID
from uniscene.synth.town import LANE_WIDTH_M, SIDEWALK_WIDTH_M, Town

DT_S = 0.02
PART_INSET_M = 0.02
DIRECTIONS = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])  # +x, +y, -x, -y

# nuScenes category -> mean size (w, l, h) metres
SIZES_WLH = {
    "vehicle.car": (1.95, 4.6, 1.73),
    "vehicle.truck": (2.5, 6.9, 2.85),
    "vehicle.bus.rigid": (2.95, 11.2, 3.45),
    "vehicle.construction": (2.8, 6.4, 3.2),
    "vehicle.trailer": (2.9, 10.0, 3.6),
    "vehicle.motorcycle": (0.77, 2.1, 1.47),
    "vehicle.bicycle": (0.6, 1.7, 1.28),
    "human.pedestrian.adult": (0.67, 0.73, 1.77),
    "human.pedestrian.child": (0.5, 0.52, 1.3),
    "movable_object.barrier": (2.5, 0.5, 0.98),
    "movable_object.trafficcone": (0.41, 0.41, 1.0),
}


def _right(v):
    return np.array([v[1], -v[0]])


@dataclass
class Path:
    """A dense polyline: xy [K, 2], unwrapped yaw [K], arc length s [K], |curvature| [K]."""

    xy: np.ndarray
    yaw: np.ndarray
    s: np.ndarray
    curvature: np.ndarray


class _PathBuilder:
    STEP_M = 0.1

    def __init__(self, start):
        self.cur = np.asarray(start, dtype=np.float64)
        self.xy, self.yaw, self.curv = [], [], []

    def line(self, end):
        end = np.asarray(end, dtype=np.float64)
        delta = end - self.cur
        length = float(np.hypot(*delta))
        if length < 1e-6:
            return
        k = max(int(np.ceil(length / self.STEP_M)), 1)
        f = np.arange(k) / k
        self.xy.append(self.cur + f[:, None] * delta)
        self.yaw.append(np.full(k, np.arctan2(delta[1], delta[0])))
        self.curv.append(np.zeros(k))
        self.cur = end

    def arc(self, center, radius, turn_sign, quarter=np.pi / 2):
        """A turn of `quarter` radians, left (turn_sign 1) or right (-1), around `center`."""
        a0 = np.arctan2(self.cur[1] - center[1], self.cur[0] - center[0])
        k = max(int(np.ceil(radius * quarter / self.STEP_M)), 2)
        a = a0 + turn_sign * quarter * np.arange(k) / k
        self.xy.append(center + radius * np.stack([np.cos(a), np.sin(a)], 1))
        self.yaw.append(a + turn_sign * np.pi / 2)
        self.curv.append(np.full(k, 1.0 / radius))
        a_end = a0 + turn_sign * quarter
        self.cur = center + radius * np.array([np.cos(a_end), np.sin(a_end)])

    def build(self) -> Path:
        xy = np.concatenate(self.xy + [self.cur[None]])
        yaw = np.concatenate(self.yaw + [self.yaw[-1][-1:]])
        yaw = np.unwrap(yaw)
        curv = np.concatenate(self.curv + [np.zeros(1)])
        s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(xy, axis=0).T))])
        return Path(xy, yaw, s, curv)


def _node_ok(town: Town, node):
    return 0 <= node[0] <= town.num_blocks and 0 <= node[1] <= town.num_blocks


def _road_of(town: Town, node, direction):
    """The road that a move from `node` in `direction` (0..3) follows."""
    return town.road_x(node[1]) if direction % 2 == 0 else town.road_y(node[0])


def _half_extent(town: Town, node, direction):
    """Half size of the intersection at `node` along `direction`: the crossing road's half width."""
    return town.road_y(node[0]).half_width if direction % 2 == 0 else town.road_x(node[1]).half_width


def plan_route(rng, town: Town, node, direction, offset_fn, length_m, turn_radius=None, p_straight=0.5,
               start_fraction=0.5):
    """A route of at least `length_m` metres starting on the arm from `node` towards `direction`.

    offset_fn(road, turn) -> lateral offset to the right of travel, for turn in
    ("start", "straight", "left", "right"); returns None when that turn is not allowed from the lane.
    turn_radius: fixed arc radius (pedestrians) or None (the largest arc that fits the intersection).
    Returns (Path, s_start) where s_start is where the agent stands at time 0.
    """
    node = np.array(node)
    d = DIRECTIONS[direction]
    offset = offset_fn(_road_of(town, node, direction), "start", None)
    c0 = town.node_xy(*node)
    nxt = node + d.astype(int)
    arm_lo = _half_extent(town, node, direction)
    arm_hi = np.hypot(*(town.node_xy(*nxt) - c0)) - _half_extent(town, nxt, direction)
    s_start_arm = arm_lo + start_fraction * (arm_hi - arm_lo)
    start = c0 + offset * _right(d)
    builder = _PathBuilder(start)
    s_start = s_start_arm
    for _ in range(200):
        nxt = node + d.astype(int)
        c = town.node_xy(*nxt)
        options = []
        for turn, new_dir in (("straight", direction), ("left", (direction + 1) % 4), ("right", (direction + 3) % 4)):
            if not _node_ok(town, nxt + DIRECTIONS[new_dir].astype(int)):
                continue
            new_offset = offset_fn(_road_of(town, nxt, new_dir), turn, offset)
            if new_offset is None:
                continue
            options.append((turn, new_dir, new_offset))
        if not options:  # dead end for this lane: any turn that stays in town
            for turn, new_dir in (("left", (direction + 1) % 4), ("right", (direction + 3) % 4), ("straight", direction)):
                if _node_ok(town, nxt + DIRECTIONS[new_dir].astype(int)):
                    options.append((turn, new_dir, offset_fn(_road_of(town, nxt, new_dir), "any", offset)))
                    break
        weights = np.array([p_straight if o[0] == "straight" else (1 - p_straight) / 2 for o in options])
        turn, new_dir, new_offset = options[int(rng.choice(len(options), p=weights / weights.sum()))]
        d_out = DIRECTIONS[new_dir]
        if turn == "straight":
            new_offset = offset if new_offset is None else new_offset
            # straight on, possibly moving sideways if the lane offset changes
            builder.line(c + offset * _right(d))
            if abs(new_offset - offset) > 1e-6:
                builder.line(c + new_offset * _right(d))
        else:
            q = c + offset * _right(d) + new_offset * _right(d_out)
            h_in = _half_extent(town, nxt, direction)
            h_out = _half_extent(town, nxt, new_dir)
            along_in = float(np.dot(q - c, d))
            along_out = float(np.dot(q - c, d_out))
            r = min(along_in + h_in, h_out - along_out)
            if turn_radius is not None:
                r = min(r, turn_radius) if r > 0.5 else turn_radius
            r = max(r, 0.5)
            builder.line(q - d * r)
            sign = 1.0 if turn == "left" else -1.0
            center = q - d * r + sign * np.array([-d[1], d[0]]) * r
            builder.arc(center, r, sign)
        node, direction, d, offset = nxt, new_dir, d_out, new_offset
        path_len = sum(len(x) for x in builder.xy) * _PathBuilder.STEP_M
        if path_len > s_start + length_m + 20.0:
            break
    builder.line(builder.cur + d * 30.0)  # run-out
    path = builder.build()
    return path, s_start


def time_parameterise(path: Path, s_start, speed_max, lateral_accel, times_s):
    """Positions xy [K, 2], yaw [K] and speed [K] at `times_s` [K] along `path` from `s_start`."""
    if speed_max <= 0:
        i = int(np.searchsorted(path.s, s_start))
        k = len(times_s)
        return np.repeat(path.xy[i][None], k, 0), np.full(k, path.yaw[i]), np.zeros(k)
    v = np.minimum(speed_max, np.sqrt(lateral_accel / np.maximum(path.curvature, 1e-6)))
    # brake ahead of turns and accelerate after them: a windowed minimum, then a moving average
    window = max(int(speed_max * 1.5 / _PathBuilder.STEP_M), 1)
    padded = np.concatenate([v, np.full(window, v[-1])])
    from numpy.lib.stride_tricks import sliding_window_view

    v = sliding_window_view(padded, window + 1)[: len(v)].min(1)
    kernel = np.ones(window) / window
    v = np.convolve(np.concatenate([np.full(window, v[0]), v, np.full(window, v[-1])]), kernel, mode="same")[window:-window]
    v = np.maximum(v, 0.5)
    ds = np.diff(path.s)
    t_of_s = np.concatenate([[0.0], np.cumsum(ds / (0.5 * (v[1:] + v[:-1])))])
    t_of_s -= np.interp(s_start, path.s, t_of_s)
    s = np.interp(times_s, t_of_s, path.s)
    xy = np.stack([np.interp(s, path.s, path.xy[:, 0]), np.interp(s, path.s, path.xy[:, 1])], 1)
    yaw = np.interp(s, path.s, path.yaw)
    speed = np.interp(s, path.s, v)
    return xy, yaw, speed


# ---------------------------------------------------------------------------------------------
# instances


@dataclass
class Instances:
    """Annotated instances of one scene, tabulated on the time grid `times_s` [K].

    category: I nuScenes category names; size_wlh: [I, 3]; xy: [I, K, 2]; yaw: [I, K] (unwrapped);
    speed: [I, K] m/s; mobility: I of "parked" (vehicles that never move), "moving" (may stop),
    "static" (barriers, cones, parked bicycles, standing people);
    parts: (owner [Q], center [Q, 3] in the instance frame, half [Q, 3], lidarseg [Q]).
    """

    category: list
    size_wlh: np.ndarray
    xy: np.ndarray
    yaw: np.ndarray
    speed: np.ndarray
    mobility: list
    part_owner: np.ndarray
    part_center: np.ndarray
    part_half: np.ndarray
    part_lidarseg: np.ndarray

    def __len__(self):
        return len(self.category)


def instance_parts(category: str, w: float, l: float, h: float):  # noqa: E741
    """Solid parts of an instance, in its frame (x forward, z up from the ground): list of (center [3], half [3])."""
    parts = []

    def add(x0, x1, y0, y1, z0, z1):
        parts.append(((np.array([(x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2])),
                      np.array([(x1 - x0) / 2, (y1 - y0) / 2, (z1 - z0) / 2])))

    hl, hw = l / 2, w / 2
    if category == "vehicle.car":
        add(-hl, hl, -hw, hw, 0.22, 0.58 * h)  # body
        add(-0.38 * l, 0.18 * l, -0.44 * w, 0.44 * w, 0.58 * h, h)  # cabin
        for x in (-0.3 * l, 0.3 * l):  # wheels
            add(x - 0.33, x + 0.33, -hw, -hw + 0.25, 0.0, 0.22)
            add(x - 0.33, x + 0.33, hw - 0.25, hw, 0.0, 0.22)
    elif category in ("vehicle.truck", "vehicle.construction"):
        add(-hl, hl, -0.4 * w, 0.4 * w, 0.35, 1.1)  # chassis
        add(0.25 * l, hl, -hw, hw, 0.5, 0.85 * h)  # cab
        add(-hl, 0.22 * l, -hw, hw, 1.1, h)  # cargo box / machinery
        for x in (-0.35 * l, 0.35 * l):
            add(x - 0.5, x + 0.5, -hw, hw, 0.0, 0.35)
    elif category == "vehicle.trailer":
        add(-hl, hl, -hw, hw, 1.0, h)
        add(-hl + 0.5, -hl + 3.0, -hw, hw, 0.0, 1.0)  # axles
    elif category == "vehicle.bus.rigid":
        add(-hl, hl, -hw, hw, 0.35, h)
        for x in (-0.3 * l, 0.3 * l):
            add(x - 0.5, x + 0.5, -hw, hw, 0.0, 0.35)
    elif category in ("vehicle.bicycle", "vehicle.motorcycle"):
        frame_w = 0.12 if category == "vehicle.bicycle" else 0.35
        add(-hl, hl, -frame_w / 2, frame_w / 2, 0.0, 0.95 if category == "vehicle.bicycle" else 1.0)
        if h > 1.2:  # with rider
            add(-0.3 * l, 0.05 * l, -hw, hw, 0.95 if category == "vehicle.bicycle" else 1.0, h - 0.25)
            add(-0.2 * l, -0.05 * l, -0.12, 0.12, h - 0.25, h)  # head
    elif category.startswith("human.pedestrian"):
        add(-0.12, 0.12, -0.45 * w, 0.45 * w, 0.0, 0.48 * h)  # legs
        add(-hl * 0.6, hl * 0.6, -hw, hw, 0.48 * h, 0.86 * h)  # torso and arms
        add(-0.11, 0.11, -0.11, 0.11, 0.86 * h, h)  # head
    elif category == "movable_object.trafficcone":
        add(-hl, hl, -hw, hw, 0.0, 0.06)
        add(-0.13, 0.13, -0.13, 0.13, 0.06, h)
    elif category == "movable_object.barrier":
        add(-hl, hl, -hw, hw, 0.0, h)
    else:
        add(-hl, hl, -hw, hw, 0.0, h)
    return parts


class _InstanceTable:
    def __init__(self, times_s):
        self.times = times_s
        self.rows = []

    def add(self, rng, category, xy, yaw, speed, mobility, height=None):
        w, l, h = SIZES_WLH[category]
        scale = rng.uniform(0.92, 1.08, size=3)
        w, l, h = w * scale[0], l * scale[1], h * scale[2]
        if height is not None:
            h = height
        k = len(self.times)
        xy = np.broadcast_to(np.asarray(xy, dtype=np.float64), (k, 2)).copy()
        yaw = np.broadcast_to(np.asarray(yaw, dtype=np.float64), (k,)).copy()
        speed = np.broadcast_to(np.asarray(speed, dtype=np.float64), (k,)).copy()
        self.rows.append((category, np.array([w, l, h]), xy, yaw, speed, mobility))
        return len(self.rows) - 1


def _overlaps(xy_a, yaw_a, size_a, xy_b, yaw_b, size_b, margin=0.3):
    """Which of C moving rectangles ever overlap one other moving rectangle (2D separating axes).

    xy_a [C, K, 2], yaw_a [C, K], size_a [C, 3] (w, l, h); xy_b [K, 2], yaw_b [K], size_b [3].
    Returns [C] bool.
    """
    ua = np.stack([np.cos(yaw_a), np.sin(yaw_a)], -1)  # [C, K, 2]
    va = np.stack([-ua[..., 1], ua[..., 0]], -1)
    ub = np.broadcast_to(np.stack([np.cos(yaw_b), np.sin(yaw_b)], -1), ua.shape)
    vb = np.stack([-ub[..., 1], ub[..., 0]], -1)
    la, wa = size_a[:, None, 1] / 2 + margin, size_a[:, None, 0] / 2 + margin  # [C, 1]
    lb, wb = size_b[1] / 2 + margin, size_b[0] / 2 + margin
    d = xy_b[None] - xy_a
    separated = np.zeros(d.shape[:2], dtype=bool)
    for axis in (ua, va, ub, vb):
        ra = la * np.abs((ua * axis).sum(-1)) + wa * np.abs((va * axis).sum(-1))
        rb = lb * np.abs((ub * axis).sum(-1)) + wb * np.abs((vb * axis).sum(-1))
        separated |= np.abs((d * axis).sum(-1)) > ra + rb
    return (~separated).any(1)


def build_ego(rng, town: Town, times_s):
    """The ego route: xy [K, 2], yaw [K], speed [K] on `times_s`."""
    n = town.num_blocks
    node = (int(rng.integers(1, n)), int(rng.integers(1, n)))
    direction = int(rng.integers(0, 4))
    speed = float(rng.uniform(6.0, 9.5))

    def offset_fn(road, turn, previous):
        lanes = road.lanes_per_direction
        if turn == "start":
            return road.lane_offset(lanes - 1)
        return road.lane_offset(lanes - 1)  # the ego keeps to the rightmost lane

    duration = float(times_s[-1])
    path, s0 = plan_route(rng, town, node, direction, offset_fn, speed * duration + 30.0, p_straight=0.4,
                          start_fraction=float(rng.uniform(0.1, 0.5)))
    return time_parameterise(path, s0, speed, 2.2, times_s)


def _vehicle_offset_fn(rng):
    def offset_fn(road, turn, previous):
        lanes = road.lanes_per_direction
        if turn == "start":
            return road.lane_offset(int(rng.integers(0, lanes)))
        if previous is None:
            return road.lane_offset(lanes - 1)
        lane = int(round(previous / LANE_WIDTH_M - 0.5))
        if turn == "straight":
            return road.lane_offset(min(lane, lanes - 1))
        if turn == "left":
            return road.lane_offset(0) if lane == 0 else None
        if turn == "right":
            return road.lane_offset(lanes - 1) if lane >= lanes - 1 or lanes == 1 else None
        return road.lane_offset(min(lane, lanes - 1))
    return offset_fn


def _cycle_offset_fn(road, turn, previous):
    lanes = road.lanes_per_direction
    return road.lane_offset(lanes - 1) + 0.9  # the right edge of the rightmost lane


def _walk_offset_fn(side, jitter):
    def offset_fn(road, turn, previous):
        return side * (road.half_width + SIDEWALK_WIDTH_M / 2 + jitter)
    return offset_fn


def build_instances(rng, town: Town, times_s, density: float, ego_xy, ego_yaw) -> Instances:
    """Parked and moving vehicles, cyclists, pedestrians, barriers and cones around the ego route."""
    table = _InstanceTable(times_s)
    ego_size = np.array([1.95, 4.6, 1.73])
    ego_center = ego_xy + 1.4 * np.stack([np.cos(ego_yaw), np.sin(ego_yaw)], -1)  # rear axle -> box centre
    sub = slice(None, None, 5)  # collision checks at 10 Hz
    ks = len(times_s[sub])
    acc_xy = np.zeros((0, ks, 2))
    acc_yaw = np.zeros((0, ks))
    acc_size = np.zeros((0, 3))

    def clear(xy, yaw, size, margin):
        xy, yaw = xy[sub], yaw[sub]
        if _overlaps(ego_center[sub][None], ego_yaw[sub][None], ego_size[None], xy, yaw, size, margin=margin)[0]:
            return False
        if len(acc_xy):
            near = np.nonzero(np.abs(acc_xy - xy[None]).max(-1).min(-1) < 15.0)[0]
            if len(near) and _overlaps(acc_xy[near], acc_yaw[near], acc_size[near], xy, yaw, size, margin=margin * 0.5).any():
                return False
        return True

    def try_add(category, xy, yaw, speed, mobility, margin=0.4, height=None):
        k = len(times_s)
        xy_k = np.broadcast_to(np.asarray(xy, dtype=np.float64), (k, 2))
        yaw_k = np.broadcast_to(np.asarray(yaw, dtype=np.float64), (k,))
        size = np.array(SIZES_WLH[category]) * 1.08
        if height is not None:
            size[2] = height
        if not clear(xy_k, yaw_k, size, margin):
            return False
        table.add(rng, category, xy, yaw, speed, mobility, height=height)
        nonlocal acc_xy, acc_yaw, acc_size
        acc_xy = np.concatenate([acc_xy, xy_k[sub][None]])
        acc_yaw = np.concatenate([acc_yaw, yaw_k[sub][None]])
        acc_size = np.concatenate([acc_size, size[None]])
        return True

    # 1. works zones: barriers along the closed parking lane, cones at both ends
    for x, y, yaw, length in town.works_zones:
        fwd = np.array([np.cos(yaw), np.sin(yaw)])
        side = np.array([-fwd[1], fwd[0]])
        for s in np.arange(-length / 2 + 1.3, length / 2 - 1.2, 2.6):
            p = np.array([x, y]) + fwd * s + side * 0.9
            try_add("movable_object.barrier", p, yaw + np.pi / 2, 0.0, "static", margin=0.0)
        for end in (-1, 1):
            for k in range(3):
                p = np.array([x, y]) + fwd * end * (length / 2 + 0.8 + 1.2 * k) + side * (0.9 - 0.5 * k)
                try_add("movable_object.trafficcone", p, 0.0, 0.0, "static", margin=0.0)
        if rng.random() < 0.5:
            try_add("vehicle.construction", np.array([x, y]) - side * 0.2, yaw, 0.0, "parked", margin=0.0)

    # 2. parked vehicles
    p_park = min(0.65 * density, 0.95)
    for x, y, yaw in town.parking_slots:
        if rng.random() >= p_park:
            continue
        category = rng.choice(["vehicle.car"] * 12 + ["vehicle.truck", "vehicle.trailer", "vehicle.motorcycle"])
        if category == "vehicle.trailer" and rng.random() < 0.7:
            category = "vehicle.car"
        jitter = rng.normal(0, 0.08, size=2)
        try_add(str(category), np.array([x, y]) + jitter, yaw + rng.normal(0, 0.02), 0.0, "parked", margin=0.05)

    # 3. things on the sidewalks: parked bicycles, standing people
    for x, y, yaw in town.sidewalk_spots:
        r = rng.random()
        if r < 0.35 * density:
            try_add("vehicle.bicycle", (x, y), yaw + rng.normal(0, 0.1), 0.0, "static", margin=0.0, height=1.05)
        elif r < 0.6 * density:
            category = "human.pedestrian.adult" if rng.random() < 0.85 else "human.pedestrian.child"
            try_add(category, (x, y), rng.uniform(-np.pi, np.pi), 0.0, "static", margin=0.05)

    # 4. moving vehicles and cyclists on the lanes, most of them starting near the ego's route
    n = town.num_blocks
    duration = float(times_s[-1])
    nodes = np.array([(i, j) for i in range(n + 1) for j in range(n + 1)])
    node_xy = np.array([town.node_xy(i, j) for i, j in nodes])
    near_ego = nodes[np.min(np.linalg.norm(node_xy[:, None] - ego_xy[None, ::25], axis=-1), axis=1) < 110.0]

    def start_node():
        if len(near_ego) and rng.random() < 0.75:
            return tuple(int(v) for v in near_ego[int(rng.integers(0, len(near_ego)))])
        return (int(rng.integers(0, n + 1)), int(rng.integers(0, n + 1)))

    for _ in range(int(round(36 * density))):
        r = rng.random()
        category = ("vehicle.car" if r < 0.72 else "vehicle.truck" if r < 0.82 else "vehicle.bus.rigid" if r < 0.88
                    else "vehicle.motorcycle" if r < 0.94 else "vehicle.bicycle")
        for _attempt in range(3):  # another start, route and speed when the first would collide
            node = start_node()
            direction = int(rng.integers(0, 4))
            if not _node_ok(town, np.array(node) + DIRECTIONS[direction].astype(int)):
                continue
            if category == "vehicle.bicycle":
                speed, offset_fn = float(rng.uniform(3.0, 5.5)), _cycle_offset_fn
            else:
                speed, offset_fn = float(rng.uniform(4.0, 11.0)), _vehicle_offset_fn(rng)
                if rng.random() < 0.08:
                    speed = 0.0  # stopped in its lane
            path, s0 = plan_route(rng, town, node, direction, offset_fn, max(speed, 1.0) * duration + 30.0,
                                  start_fraction=float(rng.uniform(0.05, 0.95)))
            xy, yaw, v = time_parameterise(path, s0, speed, 2.5, times_s)
            if try_add(category, xy, yaw, v, "moving", margin=0.5, height=1.75 if category == "vehicle.bicycle" else None):
                break

    # 5. walking pedestrians
    for _ in range(int(round(40 * density))):
        node = start_node()
        direction = int(rng.integers(0, 4))
        if not _node_ok(town, np.array(node) + DIRECTIONS[direction].astype(int)):
            continue
        side = 1.0 if rng.random() < 0.5 else -1.0
        offset_fn = _walk_offset_fn(side, float(rng.uniform(-0.6, 0.6)))
        speed = float(rng.uniform(0.9, 1.7))
        path, s0 = plan_route(rng, town, node, direction, offset_fn, speed * duration + 10.0, turn_radius=1.0,
                              p_straight=0.6, start_fraction=float(rng.uniform(0.05, 0.95)))
        xy, yaw, v = time_parameterise(path, s0, speed, 1.0, times_s)
        category = "human.pedestrian.adult" if rng.random() < 0.9 else "human.pedestrian.child"
        try_add(category, xy, yaw, v, "moving", margin=0.15)

    return _finish(table)


def _finish(table: _InstanceTable) -> Instances:
    category, size, xy, yaw, speed, mobility = zip(*table.rows) if table.rows else ([], [], [], [], [], [])
    owners, centers, halves, classes = [], [], [], []
    for i, (cat, wlh) in enumerate(zip(category, size)):
        # parts stay PART_INSET_M inside the annotation box, so its points are inside it beyond rounding
        w, l, h = wlh  # noqa: E741
        for center, half in instance_parts(cat, w - 2 * PART_INSET_M, l - 2 * PART_INSET_M, h - PART_INSET_M):
            owners.append(i)
            centers.append(center)
            halves.append(half)
            classes.append(LIDARSEG_CLASS_ID[cat])
    k = len(table.times)
    return Instances(
        category=list(category),
        size_wlh=np.array(size).reshape(-1, 3),
        xy=np.array(xy).reshape(-1, k, 2),
        yaw=np.array(yaw).reshape(-1, k),
        speed=np.array(speed).reshape(-1, k),
        mobility=list(mobility),
        part_owner=np.array(owners, np.int64),
        part_center=np.array(centers).reshape(-1, 3),
        part_half=np.array(halves).reshape(-1, 3),
        part_lidarseg=np.array(classes, np.uint8),
    )

