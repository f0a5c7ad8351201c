"""Vectorised geometry kernels of the synthetic world: rays against yaw-only boxes, boxes into voxels.

Each fast kernel has a slow, obvious reference (`*_reference`) that the tests compare it with.

Letters: N rays, M boxes, P candidate (ray, box) or (box, voxel) pairs, X Y Z grid.
"""

import numpy as np

from uniscene.grid import OccGrid

_EPS = 1e-9


def _ragged_arange(counts: np.ndarray):
    """For counts [K] -> (owner [sum], position within owner [sum])."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    owner = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    within = np.arange(total, dtype=np.int64) - np.repeat(starts, counts)
    return owner, within


AZIMUTH_BINS = 360
ELEVATION_BINS = 120


def _box_bins(ref, spread, center, half, yaw, max_range):
    """Direction bins that each box may be seen in from rays starting within `spread` of `ref`.

    Returns boxes [M'] (indices of the boxes within max_range), az_lo, az_count, el_lo, el_count [M']
    and near [M'] (the grown box's distance from ref, 0 inside).
    """
    grown = half + spread
    offset = center - ref
    boxes = np.nonzero(np.linalg.norm(offset, axis=1) - np.linalg.norm(grown, axis=1) < max_range)[0]
    offset, grown, yaw_b = offset[boxes], grown[boxes], yaw[boxes]
    c, s = np.cos(yaw_b), np.sin(yaw_b)
    # ref in each box's frame, its horizontal distance to the footprint (0 inside) and to the farthest corner
    local = np.stack([-(c * offset[:, 0] + s * offset[:, 1]), -(-s * offset[:, 0] + c * offset[:, 1])], 1)
    gap = np.maximum(np.abs(local) - grown[:, :2], 0.0)
    d_min = np.hypot(gap[:, 0], gap[:, 1])
    d_max = np.hypot(np.abs(local[:, 0]) + grown[:, 0], np.abs(local[:, 1]) + grown[:, 1])
    inside = d_min <= 0.0
    n_az, n_el = AZIMUTH_BINS, ELEVATION_BINS
    az_scale, el_scale = n_az / (2 * np.pi), n_el / np.pi
    # azimuth: corners relative to the centre's azimuth (a footprint that excludes ref spans < pi)
    signs = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=np.float64)
    corner_local = signs[None] * grown[:, None, :2]  # [M, 4, 2]
    corner = np.stack([c[:, None] * corner_local[..., 0] - s[:, None] * corner_local[..., 1],
                       s[:, None] * corner_local[..., 0] + c[:, None] * corner_local[..., 1]], -1) + offset[:, None, :2]
    azimuth_c = np.arctan2(offset[:, 1], offset[:, 0])
    rel = np.arctan2(corner[..., 1], corner[..., 0]) - azimuth_c[:, None]
    rel = (rel + np.pi) % (2 * np.pi) - np.pi
    az_lo = np.floor((azimuth_c + rel.min(1) + np.pi) * az_scale).astype(np.int64)
    az_hi = np.floor((azimuth_c + rel.max(1) + np.pi) * az_scale).astype(np.int64)
    az_count = np.where(inside, n_az, np.minimum(az_hi - az_lo + 1, n_az))
    az_lo = np.where(inside, 0, az_lo)
    # elevation: bounded by the box's z range over its horizontal distance range
    z0 = offset[:, 2] - grown[:, 2]
    z1 = offset[:, 2] + grown[:, 2]
    near = np.maximum(d_min, 1e-9)
    el_min = np.where(z0 < 0, np.arctan2(z0, near), np.arctan2(z0, d_max))
    el_max = np.where(z1 > 0, np.arctan2(z1, near), np.arctan2(z1, d_max))
    el_lo = np.clip(np.floor((el_min + np.pi / 2) * el_scale).astype(np.int64), 0, n_el - 1)
    el_hi = np.clip(np.floor((el_max + np.pi / 2) * el_scale).astype(np.int64), 0, n_el - 1)
    distance = np.hypot(d_min, np.maximum(np.maximum(z0, -z1), 0.0))
    return boxes, az_lo, az_count, el_lo, el_hi - el_lo + 1, distance


def _ray_bins(directions):
    """Direction bin of each ray [N] (azimuth-major)."""
    n_az, n_el = AZIMUTH_BINS, ELEVATION_BINS
    az = np.floor((np.arctan2(directions[:, 1], directions[:, 0]) + np.pi) * (n_az / (2 * np.pi))).astype(np.int64)
    el = np.floor((np.arcsin(np.clip(directions[:, 2], -1, 1)) + np.pi / 2) * (n_el / np.pi)).astype(np.int64)
    return np.clip(az, 0, n_az - 1) * n_el + np.clip(el, 0, n_el - 1)


def _expand_pairs(ray_bin, bins):
    """(ray, box) pairs of rays [N'] with bins `ray_bin` [N'] and boxes with bin ranges `bins`
    (az_lo, az_count, el_lo, el_count, each [M']). Returns positions into the two inputs."""
    az_lo, az_count, el_lo, el_count = bins
    n_az, n_el = AZIMUTH_BINS, ELEVATION_BINS
    order = np.argsort(ray_bin, kind="stable")
    per_bin = np.bincount(ray_bin, minlength=n_az * n_el)
    bin_start = np.cumsum(per_bin) - per_bin
    box_of, k = _ragged_arange(az_count * el_count)  # (box, bin) pairs
    ec = el_count[box_of]
    cells = ((az_lo[box_of] + k // ec) % n_az) * n_el + el_lo[box_of] + k % ec
    rays_in = per_bin[cells]
    keep = rays_in > 0
    box_of, cells, rays_in = box_of[keep], cells[keep], rays_in[keep]
    pair_of, j = _ragged_arange(rays_in)
    return order[bin_start[cells][pair_of] + j], box_of[pair_of]


def candidate_pairs(origins, directions, center, half, yaw, max_range, ray_subset=None):
    """(ray, box) pairs that may intersect, culled by distance and by direction.

    origins, directions: [N, 3]; center, half: [M, 3]; yaw: [M] (yaw-only boxes); max_range: scalar;
    ray_subset: [N'] indices of the rays to consider (default all).
    Returns pair_ray [P], pair_box [P] (int64). Rays are binned by the azimuth and elevation of
    their direction. Each box, grown by the spread of the ray origins around their mean `ref`,
    covers the bins between the azimuths of its corners and between the elevations bounded by
    its height and nearest and farthest horizontal distance from `ref` (all azimuths when `ref`
    is inside its footprint). A ray from o hits p only if ref + (p - o) lies in the grown box, so
    no intersecting pair is dropped.
    """
    rays = np.arange(len(origins)) if ray_subset is None else np.asarray(ray_subset, dtype=np.int64)
    if len(rays) == 0 or len(center) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ref = origins[rays].mean(0)
    spread = float(np.sqrt(((origins[rays] - ref) ** 2).sum(1)).max()) + 1e-6
    boxes, *bins, _ = _box_bins(ref, spread, center, half, yaw, max_range)
    pair_ray, pair_box = _expand_pairs(_ray_bins(directions[rays]), bins)
    return rays[pair_ray], boxes[pair_box]


def slab_test(origins, directions, center, half, yaw):
    """Entry distance and entry-face normal of rays against yaw-only boxes, one box per ray.

    All [P, ...]: origins, directions, center, half [P, 3], yaw [P].
    Returns t [P] (inf where the ray misses or starts inside), normal [P, 3] (world frame).
    """
    c, s = np.cos(yaw), np.sin(yaw)
    rel = origins - center
    o = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1], rel[:, 2]], 1)
    d = np.stack([c * directions[:, 0] + s * directions[:, 1], -s * directions[:, 0] + c * directions[:, 1],
                  directions[:, 2]], 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t1 = (-half - o) * inv
        t2 = (half - o) * inv
    t_min = np.fmin(t1, t2)
    t_max = np.fmax(t1, t2)
    t_min = np.where(np.isnan(t_min), -np.inf, t_min)
    t_max = np.where(np.isnan(t_max), np.inf, t_max)
    axis = np.argmax(t_min, axis=1)
    rows = np.arange(len(axis))
    t_near = t_min[rows, axis]
    t_far = t_max.min(1)
    hit = (t_near <= t_far) & (t_near > _EPS)
    t = np.where(hit, t_near, np.inf)
    sign = -np.sign(d[rows, axis])
    normal = np.zeros_like(o)
    # the entry face's normal, rotated back to the world: x and y faces turn with the yaw
    is_x, is_y = axis == 0, axis == 1
    normal[:, 0] = np.where(is_x, c * sign, np.where(is_y, -s * sign, 0.0))
    normal[:, 1] = np.where(is_x, s * sign, np.where(is_y, c * sign, 0.0))
    normal[:, 2] = np.where(axis == 2, sign, 0.0)
    return t, normal


DISTANCE_BANDS_M = (0.0, 10.0, 30.0, 90.0)


def first_box_hits(origins, directions, center, half, yaw, max_range, t_limit=None, ray_group=None):
    """First box hit by each ray, nearer than `t_limit` (e.g. the ground) and `max_range`.

    origins, directions: [N, 3]; center, half: [M, 3]; yaw: [M]; max_range: scalar metres;
    t_limit: [N] or None; ray_group: [N] int (e.g. the camera of each ray) or None: rays of one
    group are culled together (best when a group shares one origin).
    Returns t [N] (inf: no box hit nearer), box [N] int64 (-1: none), normal [N, 3].
    Per group, boxes are processed in bands of distance from the group's mean origin, near first;
    a band only tests the rays whose nearest hit so far lies beyond the band's start.
    """
    n = len(origins)
    t_out = np.full(n, np.inf)
    box_out = np.full(n, -1, np.int64)
    normal_out = np.zeros((n, 3))
    if n == 0 or len(center) == 0:
        return t_out, box_out, normal_out
    limit = np.full(n, float(max_range)) if t_limit is None else np.minimum(np.asarray(t_limit, dtype=np.float64), max_range)
    groups = [np.arange(n)] if ray_group is None else [np.nonzero(ray_group == g)[0] for g in np.unique(ray_group)]
    bands = np.asarray(DISTANCE_BANDS_M)
    for rays in groups:
        ref = origins[rays].mean(0)
        spread = float(np.sqrt(((origins[rays] - ref) ** 2).sum(1)).max()) + 1e-6
        boxes, az_lo, az_count, el_lo, el_count, distance = _box_bins(ref, spread, center, half, yaw, max_range)
        ray_bin = _ray_bins(directions[rays])
        band_of = np.searchsorted(bands, distance, side="right") - 1
        for band, band_near in enumerate(bands):
            in_band = np.nonzero(band_of == band)[0]
            if len(in_band) == 0:
                continue
            open_rays = np.nonzero(np.minimum(t_out[rays], limit[rays]) > band_near)[0]
            if len(open_rays) == 0:
                break
            pos_ray, pos_box = _expand_pairs(ray_bin[open_rays], (az_lo[in_band], az_count[in_band], el_lo[in_band],
                                                                   el_count[in_band]))
            if len(pos_ray) == 0:
                continue
            pair_ray = rays[open_rays[pos_ray]]
            pair_box = boxes[in_band[pos_box]]
            t, normal = slab_test(origins[pair_ray], directions[pair_ray], center[pair_box], half[pair_box], yaw[pair_box])
            hit = t < np.minimum(t_out, limit)[pair_ray]
            pair_ray, pair_box, t, normal = pair_ray[hit], pair_box[hit], t[hit], normal[hit]
            if len(t) == 0:
                continue
            # nearest per ray: sort by (ray, t) and keep each ray's first
            order = np.lexsort((t, pair_ray))
            pair_ray, pair_box, t, normal = pair_ray[order], pair_box[order], t[order], normal[order]
            first = np.ones(len(pair_ray), bool)
            first[1:] = pair_ray[1:] != pair_ray[:-1]
            r = pair_ray[first]
            t_out[r] = t[first]
            box_out[r] = pair_box[first]
            normal_out[r] = normal[first]
    return t_out, box_out, normal_out


def first_box_hits_reference(origins, directions, center, half, yaw, max_range):
    """Slow reference of `first_box_hits`: every ray against every box, one box at a time."""
    n = len(origins)
    t_out = np.full(n, np.inf)
    box_out = np.full(n, -1, np.int64)
    for k in range(len(center)):
        t, _ = slab_test(origins, directions, np.broadcast_to(center[k], (n, 3)), np.broadcast_to(half[k], (n, 3)),
                         np.full(n, yaw[k]))
        better = (t < t_out) & (t < max_range)
        t_out[better] = t[better]
        box_out[better] = k
    return t_out, box_out


def box_voxel_pairs(grid: OccGrid, center, half, yaw):
    """(box, voxel) pairs where a yaw-only box overlaps a voxel with positive volume.

    center, half: [M, 3] in the grid's frame; yaw: [M]. Returns pair_box [P], flat voxel index [P]
    (C order over grid.shape). Exact: separating-axis test of the box's footprint against the voxel's
    square (axes x, y and the box's two axes) and of the z intervals.
    """
    size = grid.voxel_size_m
    lower = grid.lower_m
    shape = np.asarray(grid.shape)
    c, s = np.abs(np.cos(yaw)), np.abs(np.sin(yaw))
    extent = np.stack([c * half[:, 0] + s * half[:, 1], s * half[:, 0] + c * half[:, 1], half[:, 2]], 1)
    i0 = np.clip(np.floor((center - extent - lower) / size).astype(np.int64), 0, None)
    i1 = np.minimum(np.floor((center + extent - lower) / size).astype(np.int64), shape - 1)
    counts3 = np.maximum(i1 - i0 + 1, 0)
    counts = counts3.prod(1)
    box_of, k = _ragged_arange(counts)
    if len(box_of) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ny, nz = counts3[box_of, 1], counts3[box_of, 2]
    iz = k % nz
    iy = (k // nz) % ny
    ix = k // (nz * ny)
    ijk = np.stack([ix, iy, iz], 1) + i0[box_of]
    voxel_center = lower + (ijk + 0.5) * size
    d = voxel_center - center[box_of]
    h = size / 2
    tol = 1e-7
    cb, sb = np.cos(yaw[box_of]), np.sin(yaw[box_of])
    ext = extent[box_of]
    hb = half[box_of]
    along = np.abs(d[:, 0] * cb + d[:, 1] * sb)
    across = np.abs(-d[:, 0] * sb + d[:, 1] * cb)
    proj = h * (np.abs(cb) + np.abs(sb))
    ok = (
        (np.abs(d[:, 0]) < h + ext[:, 0] - tol)
        & (np.abs(d[:, 1]) < h + ext[:, 1] - tol)
        & (np.abs(d[:, 2]) < h + ext[:, 2] - tol)
        & (along < hb[:, 0] + proj - tol)
        & (across < hb[:, 1] + proj - tol)
    )
    flat = (ijk[:, 0] * shape[1] + ijk[:, 1]) * shape[2] + ijk[:, 2]
    return box_of[ok], flat[ok]


def box_voxel_pairs_reference(grid: OccGrid, center, half, yaw):
    """Slow reference of `box_voxel_pairs`: shapely polygon overlap area for every voxel column."""
    from shapely.geometry import Polygon, box as shapely_box

    size = grid.voxel_size_m
    shape = grid.shape
    centers = grid.voxel_centers().astype(np.float64)
    boxes, flats = [], []
    for b in range(len(center)):
        c, s = np.cos(yaw[b]), np.sin(yaw[b])
        corners = [(center[b, 0] + c * x - s * y, center[b, 1] + s * x + c * y)
                   for x, y in ((-half[b, 0], -half[b, 1]), (half[b, 0], -half[b, 1]), (half[b, 0], half[b, 1]),
                                (-half[b, 0], half[b, 1]))]
        footprint = Polygon(corners)
        for i in range(shape[0]):
            for j in range(shape[1]):
                cx, cy = centers[i, j, 0, :2]
                cell = shapely_box(cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)
                if footprint.intersection(cell).area <= 1e-9:
                    continue
                for k in range(shape[2]):
                    cz = centers[i, j, k, 2]
                    if min(cz + size / 2, center[b, 2] + half[b, 2]) - max(cz - size / 2, center[b, 2] - half[b, 2]) > 1e-9:
                        boxes.append(b)
                        flats.append((i * shape[1] + j) * shape[2] + k)
    return np.array(boxes, np.int64), np.array(flats, np.int64)
