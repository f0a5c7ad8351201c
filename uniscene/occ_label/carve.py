"""Object shapes by space carving in each box's frame: the tight annotation box, less the space the LiDAR saw through.

Annotation boxes are tight around their objects, so an object is the part of its box that the LiDAR
never saw through. Each sweep is a range image (rows: the rings, by elevation; columns: azimuth
bins); a cell of a box is carved when, seen from that sweep's sensor, it lies in front of what the
two rings around its direction returned in its azimuth column: the space over a bonnet, under a
trailer or between a cyclist's legs. Where both rings hit the object, its surface runs between the
two returns; otherwise the nearer return counts, which keeps the cells between two rings where one
ring hit the object (its edge may lie anywhere between them). A cell is carved only when all eight
of its corners lie in front of the returns: the truth (positive-volume overlap) counts a voxel that
a surface reaches into by any amount, and a ray that grazes a roof passes through the upper half of
the cells the roof reaches into. Every second demo frame: mIoU 85.72 -> 85.88 against the centre
with a margin of half a cell diagonal along the ray (car 84.4 -> 85.1, barrier 86.2 -> 88.4). Every
sweep carves in the box frame of its own time, so a moving car is carved from all the angles it was
seen at; sides that no sweep saw stay solid (the cameras, mounted beside the LiDAR, rarely see them
either). A cell that holds a point of the object is never carved.

Three refinements of that test (`RangeImages.free_range`). Across azimuth, the edge of an object
wider than a column may lie anywhere between two columns, as between two rings: its cells use the
two columns around their direction, interpolated where all four returns lie on the object, else
the nearest of the four. Within one column of 0.33 deg, an oblique face 60 m away changes depth by
up to 0.3 m, so a single column's return carved a trailer's rear face between the rings. People,
two-wheelers and cones keep their own column: their parts are thinner than a column. Two rings do
not interpolate under an overhang, where the lower return lies more than OVERHANG_M beyond the
upper one: the lower ring passed under a trailer's body to its axle. Every second demo frame
(benchmarks/RESULTS.md): mIoU 88.46 -> 88.95 with the columns (car 89.5 -> 90.4, trailer 91.7 ->
95.0, cone 77.0 -> 79.5); the four returns for every class gave 88.03 (bicycle 88.7 -> 80.8); the
interpolation alone, the own column's test elsewhere, 88.42. And a ring whose ray passes through the
middle of a cell (within RAY_THROUGH_CELL of its centre, in elevation) says alone whether the cell
is free, whatever the ring below or above it hit: between two rings, the nearer return keeps the
space over a motorcycle's frame that the ring above passed through, and the concave corner between
a truck's cab and its cargo box that the upper ring crossed to hit the box. Every second demo frame:
mIoU 89.55 -> 90.61 (truck 86.9 -> 94.8, motorcycle 70.2 -> 74.9, car 91.3 -> 92.5, trailer 94.2
-> 95.1). A ray within half a cell of the centre gave 90.06 (car 86.8: a ray that grazes a roof
passes through the upper half of the cells the roof reaches into), 0.35 cells 90.49, 0.15 cells
90.31; the ray of one firing, through the cell in azimuth too, instead of the ring across the
columns, 89.83 (truck 88.0).

The columns are centred on the sweep's firings (`range_images`): a spinning LiDAR fires at regular
azimuths from a phase of its own each sweep, and a return then lies at its column's centre, as the
interpolation across columns assumes. Binned from azimuth zero, the demo's firings fell on column
edges, and one in five into its neighbour's column, which it shared. Every second demo frame:
mIoU 89.24 -> 89.44 (motorcycle 67.7 -> 70.2, bicycle 89.8 -> 90.8, car 91.6 -> 91.3).

Every object gets two shape priors for what no sweep saw, such as the far side of a bicycle parked
beside the road or the space over the bonnet of a car 40 m away that the rings pass above and
below: they are left-right symmetric, so a cell is carved when its mirror image across the box's
long axis was, and a cell of the floor slice is solid when its mirror image was hit (the far
wheels, under the body) (`mirror`); and they look alike within a class, so a cell that no sweep saw
through and no return fell into is carved when at least `prior_free` of the class's cells at the
same place in the box (box-normalised coordinates, over the scene's instances) were. Measured on
every second demo frame: mIoU 82.5 without, 83.4 with both (bicycle 76.0 -> 82.5, car 80.1 ->
84.4), then for vehicles and people only: barriers and cones lost a little from either. With the
corner test above they gain (with a third-of-a-voxel static cells: mIoU 86.86 -> 86.97, barrier
88.4 -> 89.1, cone 74.4 -> 75.3), so every class gets both. With the corner test, prior_free 0.15
gave 86.10 against 85.88 at 0.3, 85.93 at 0.05 and 85.52 at 0.5 (car 85.5, 85.1, 83.7, 81.7;
motorcycle 68.2 at 0.15, 65.9 at 0.3): the space over a rider's handlebars is carved in one
motorcycle of a scene, seen from the side, and stays solid in those seen only from behind. Weighing
carved against hit cells instead of against all of the class's cells gave 85.85. The same prior
fills the floor slice of instances seen from far away: a floor cell is solid when at least
`prior_hit` of its class's cells at the same place were hit (a car's wheels, seen in the cars near
the road). Every second demo frame: mIoU 87.37 -> 87.55 at 0.1 (car 85.9 -> 86.4, barrier 89.1 ->
90.2, cone 75.3 -> 75.8); 87.51 at 0.05, 87.54 at 0.2.

The result is a set of points in the box frame: for each boundary cell of the solid, the corners of
a cube 0.6 of the cell's size around its centre, and the centres of interior cells, at least one
per half voxel, so that voxels inside the object are marked too. Towards a carved neighbour, a cell
that holds returns ends at them instead (`_solid_points`): a bonnet's top 3 cm into a cell no
longer reaches 8 cm into it, across a voxel layer's boundary. With the overhang rule, every second
demo frame: 88.95 -> 89.24 (car 90.4 -> 91.6, truck 85.9 -> 86.9, bicycle 88.7 -> 89.8). The
boundary cubes mark a voxel that the solid reaches into by more than a fifth of a cell (2 cm at the
default 0.1 m), and keep the cells' quantisation from spilling a whole cell into the next voxel
layer. Measured on the demo scenes: the full cell's corners gave mIoU 79.2, cubes of 0.6 gave 81.0,
cubes of 0.3 gave 77.5 (thin barriers lost their voxels).

People, two-wheelers and cones (classes.SLENDER_CLASSES) carve on cells of half the size: a
bicycle's frame is 12 cm wide, a cone's post stands 7 cm inside its box. Every second demo frame:
mIoU 85.20 -> 85.72 (bicycle 82.5 -> 88.5, pedestrian 78.3 -> 79.8, motorcycle 65.1 -> 65.4);
with cones, 89.44 -> 89.55 (cone 78.6 -> 80.4; their own column instead of two, with the ray test,
80.2 -> 80.7). Half-size cells for every class gave 83.04 against 83.42: the larger vehicles lost
(car 84.4 -> 82.8, trailer 90.7 -> 85.1).

Letters: S sweeps, B box slots, G rings, A azimuth bins, N points, C cells.
"""

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from uniscene.boxes import Boxes
from uniscene.geometry import invert_transform
from uniscene.occ_label import sparse
from uniscene.occ_label.aggregate import STATIC, whole_ranges

_CORNERS = torch.tensor([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
BOUNDARY_CUBE = 0.6  # edge of the cube, in cells, whose corners stand for a boundary cell (module docstring)
OVERHANG_M = 0.2  # two rings' returns on an object interpolate unless the lower lies this much beyond the upper
RAY_THROUGH_CELL = 0.25  # a ring's ray this many cells or less from a cell's centre (in elevation) passes through its middle
PAIRS_PER_BATCH = 4_000_000  # (sweep, cell) pairs carved at once on the CPU: about 0.3 GB of transforms, 1-2 GB in all
PAIRS_PER_BATCH_GPU = 16_000_000  # and on a GPU, where each batch costs a few hundred kernel launches and a dozen syncs


def pairs_per_batch(device) -> int:
    return PAIRS_PER_BATCH if torch.device(device).type == "cpu" else PAIRS_PER_BATCH_GPU
_FACES = torch.tensor([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])


@dataclass
class ObjectShapes:
    """Points of every object slot's solid, in its box frame: points [K, 3] float32, slot [K] int64."""

    points: torch.Tensor
    slot: torch.Tensor


@dataclass
class _BoxGrids:
    """A grid of cells that tiles each slot's box exactly: half [B, 3] metres (box x y z), cells [B, 3], cell_size [B, 3]."""

    half: torch.Tensor
    cells: torch.Tensor
    cell_size: torch.Tensor

    def cell_of(self, local: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
        """Cell [N, 3] int64 of box-frame points [N, 3], clamped into the box."""
        scaled = (local + self.half[slot]) / self.cell_size[slot]
        return torch.minimum(torch.floor(scaled).long().clamp(min=0), self.cells[slot] - 1)

    def key(self, cell: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
        return sparse.pack(cell, slot)


def carve_objects(
    images: "RangeImages",  # every sweep's returns (`range_images`)
    slot: torch.Tensor,  # [N] int64 the box slot of each return, or STATIC
    box_points: torch.Tensor,  # [N, 3] each return in its box's frame (where slot is not STATIC)
    scene_from_sensor: np.ndarray,  # [S, 4, 4]
    scene_boxes: Boxes,  # at the sweeps [S, B], scene frame
    slot_class: torch.Tensor,  # [B] int64 occupancy class of each slot
    cell_m: torch.Tensor,  # [B] carving cell edge of each slot
    wide: torch.Tensor,  # [B] bool: the slot's object is wider than a range-image column (not a person, two-wheeler or cone: classes.SLENDER_CLASSES)
    interior_step_m: float,
    floor_m: float,
    mirror: bool = True,
    prior_free: float = 0.3,
    prior_hit: float = 0.0,
) -> ObjectShapes:
    """The solid of every box slot seen in any sweep, as box-frame points (see the module docstring).

    cell_m: carving cell edge per slot (shrunk per box so that whole cells tile the box); interior_step_m:
    spacing of the interior points; floor_m: the bottom slice of the box, under a car's body and
    between its wheels, which the LiDAR rarely sees into: solid only where hit. mirror,
    prior_free, prior_hit: the shape priors (0 turns a class prior off).
    """
    device = slot.device
    valid = torch.as_tensor(scene_boxes.valid, device=device)
    seen = valid.any(0)
    if not bool(seen.any()):
        return ObjectShapes(torch.zeros((0, 3), device=device), torch.zeros(0, dtype=torch.long, device=device))
    # the box of a slot: its largest size over the sweeps (nuScenes keeps one size per instance)
    size = torch.as_tensor(scene_boxes.size, dtype=torch.float32, device=device)[..., [1, 0, 2]]  # (l, w, h) on box x y z
    half = torch.where(valid[..., None], size, 0).amax(0) / 2  # [B, 3]
    cells = torch.ceil(2 * half / cell_m[:, None]).long().clamp(min=1)
    grids = _BoxGrids(half, cells, 2 * half / cells)

    slots = torch.nonzero(seen).squeeze(1)
    cell_slot, cell = _all_cells(grids.cells[slots])
    cell_slot = slots[cell_slot]
    centre = (cell.float() + 0.5) * grids.cell_size[cell_slot] - grids.half[cell_slot]  # [C, 3] box frame
    sensor_from_box = invert_transform(scene_from_sensor)[:, None] @ scene_boxes.world_from_box()  # [S, B, 4, 4]
    # a sweep carves nothing of a box wholly beyond its farthest return (every rule's free range lies within its returns)
    nearest_m = np.linalg.norm(sensor_from_box[..., :3, 3], axis=-1) - np.linalg.norm(half.cpu().numpy(), axis=1) - 1e-3  # [S, B]
    farthest_m = images.ranges.flatten(1).amax(1).cpu().numpy().astype(np.float64) * (1 + 1e-5)  # [S]
    reached = valid & torch.as_tensor(nearest_m < farthest_m[:, None], device=device)
    sensor_from_box = torch.as_tensor(sensor_from_box, dtype=torch.float32, device=device)
    carved = torch.zeros(cell_slot.numel(), dtype=torch.bool, device=device)
    # (sweep, cell) pairs of the slots valid (and within reach) at each sweep, whole sweeps at a time, about
    # PAIRS_PER_BATCH pairs a batch (sized by the pairs themselves: a long scene has millions of cells, most of them
    # in boxes absent from a sweep)
    slot_cells = torch.where(seen, grids.cells.prod(1), 0)  # [B] cells of each slot, listed slot after slot
    slot_first = torch.cumsum(slot_cells, 0) - slot_cells
    pair_offsets = np.concatenate([[0], np.cumsum((reached.long() * slot_cells).sum(1).cpu().numpy())])
    for first, last in whole_ranges(pair_offsets, pairs_per_batch(device)):
        sweep, box = torch.nonzero(reached[first:last], as_tuple=True)
        owner, k = sparse.ragged_arange(slot_cells[box])
        sweep, here = sweep[owner] + first, slot_first[box[owner]] + k
        open_cells = ~carved[here]  # a cell carved by an earlier sweep stays carved
        sweep, here = sweep[open_cells], here[open_cells]
        if here.numel():
            carved[_seen_free(images, sweep, sensor_from_box, centre, grids.cell_size, cell_slot, here, wide)] = True

    is_hit = slot != STATIC
    returns = _return_extent(grids, box_points[is_hit], slot[is_hit])
    hit = torch.isin(grids.key(cell, cell_slot), returns[0])
    if mirror:
        image = _mirror_image(grids, cell_slot, cell)
        carved |= carved[image]
        hit |= ~carved & hit[image]  # the far wheels, under the body
    if prior_free > 0:
        carved |= ~hit & (_class_fraction(grids, cell_slot, cell, carved, slot_class) >= prior_free)
    above_floor = centre[:, 2] > floor_m - grids.half[cell_slot, 2]
    if prior_hit > 0:  # the floor slice of an instance seen from far away: its wheels where its class's were hit
        hit |= ~above_floor & ~carved & (_class_fraction(grids, cell_slot, cell, hit, slot_class) >= prior_hit)
    solid = (~carved & above_floor) | hit
    cell_slot, cell = cell_slot[solid], cell[solid]
    return ObjectShapes(*_solid_points(grids, cell_slot, cell, grids.key(cell, cell_slot), interior_step_m, returns))


def _return_extent(grids: "_BoxGrids", points: torch.Tensor, slot: torch.Tensor):
    """Per cell that holds returns: (sorted keys [U], lowest [U, 3] and highest [U, 3] return, in cell units)."""
    scaled = (points + grids.half[slot]) / grids.cell_size[slot]
    keys = grids.key(grids.cell_of(points, slot), slot)
    unique, inverse = torch.unique(keys, return_inverse=True)
    rows = inverse[:, None].expand(-1, 3)
    low = torch.full((unique.numel(), 3), math.inf, device=points.device).scatter_reduce_(0, rows, scaled, "amin")
    high = torch.full((unique.numel(), 3), -math.inf, device=points.device).scatter_reduce_(0, rows, scaled, "amax")
    return unique, low, high


def _seen_free(images: "RangeImages", sweep: torch.Tensor, sensor_from_box: torch.Tensor, centre: torch.Tensor, cell_size: torch.Tensor,
               cell_slot: torch.Tensor, here: torch.Tensor, wide: torch.Tensor) -> torch.Tensor:
    """The cells `here` [P] that sweep `sweep` [P] saw wholly free: all eight corners in front of what it returned,
    between the two rings around them, or along the ring whose ray passes through the cell's middle.

    The centre is tested first, the corners only where the centre passed (most pairs lie behind
    a surface or outside the rings). Returns the passing entries of `here`.
    """
    slot = cell_slot[here]
    boxes = sensor_from_box.shape[1]
    sensor_from_box = sensor_from_box[:, :, :3].reshape(-1, 3, 4)  # [S B, 3, 4] (the last row is 0 0 0 1)
    matrix = sensor_from_box[sweep * boxes + slot]  # [P, 3, 4]
    position = torch.einsum("cij,cj->ci", matrix[:, :, :3], centre[here]) + matrix[:, :, 3]
    distance = position.norm(dim=1)
    ring, through = images.ring_through(position, RAY_THROUGH_CELL * cell_size[slot].amin(1) / distance.clamp(min=1e-6))
    # Most centres lie behind what the sweep returned around them (inside or behind their object), or outside the
    # rings: every rule's free range lies within the farthest of the six returns around the direction (two rings,
    # three columns), and the pairs beyond it, or outside the rings with no ring through them, cannot pass. 99 % of a
    # demo scene's pairs fail the centre test; this drops 73 % of them with a fifth of its work.
    around = images.around(sweep, position)
    lower, _, _, azimuth, inside = around
    maybe = (inside | through) & (distance < images.farthest_of_six(sweep, lower, azimuth) * (1 + 1e-5))
    maybe = torch.nonzero(maybe).squeeze(1)
    sweep, here, slot, position, ring, through = (x[maybe] for x in (sweep, here, slot, position, ring, through))
    around = tuple(x[maybe] for x in around)

    def in_front(points: torch.Tensor, pick: torch.Tensor, around=None) -> torch.Tensor:  # between the two rings, else along the ring through the cell
        free = _all_in_front(images, points, sweep[pick], slot[pick], wide, around=around)
        along = torch.nonzero(through[pick] & ~free).squeeze(1)
        free[along] = _all_in_front(images, points[along], sweep[pick[along]], slot[pick[along]], wide, ring[pick[along]])
        return free

    passed = torch.nonzero(in_front(position[:, None], torch.arange(len(here), device=here.device), around)).squeeze(1)
    offsets = (_CORNERS.to(centre.device).float() - 0.5)[None] * cell_size[slot[passed]][:, None]  # [P', 8, 3]
    matrix = sensor_from_box[sweep[passed] * boxes + slot[passed]]  # [P', 3, 4]
    corners = torch.einsum("cij,ckj->cki", matrix[:, :, :3], centre[here[passed]][:, None] + offsets) + matrix[:, None, :, 3]
    return here[passed[in_front(corners, passed)]]


def _all_in_front(images: "RangeImages", points: torch.Tensor, sweep: torch.Tensor, slot: torch.Tensor, wide: torch.Tensor,
                  ring: torch.Tensor | None = None, around: tuple | None = None) -> torch.Tensor:
    """[n] whether all K sensor-frame points [n, K, 3] lie in front of what sweep `sweep` [n] returned, for box
    `slot` [n] (`RangeImages.free_range`; `ring` [n]: along that ring alone; `around`: `RangeImages.around` of the
    points, where K is 1 and it is known)."""
    k = points.shape[1]
    repeat = (lambda x: x) if k == 1 else (lambda x: x.repeat_interleave(k))  # noqa: E731
    free = images.free_range(repeat(sweep), points.reshape(-1, 3), repeat(slot), repeat(wide[slot]), None if ring is None else repeat(ring),
                             around)
    return (points.norm(dim=2) < free.view(-1, k)).all(1)


def _nearest(*ranges: torch.Tensor) -> torch.Tensor:
    """The nearest of several returns [N] each, 0 where one of them is missing (0)."""
    stack = torch.stack(ranges)
    return torch.where((stack > 0).all(0), stack.amin(0), torch.zeros_like(ranges[0]))


@dataclass
class RangeImages:
    """Every sweep as a range image: rows are the rings sorted by elevation (`elevation` [G] radians,
    ascending), columns A azimuth bins centred on the sweep's firings (`phase` [S]: where the firings
    lie, in columns modulo 1). ranges: [S, G, A] metres of the nearest return, 0 where none
    (unknown); owner: [S, G, A] int64 its box slot or STATIC."""

    ranges: torch.Tensor
    owner: torch.Tensor
    elevation: torch.Tensor
    phase: torch.Tensor

    def free_range(self, sweep: torch.Tensor, position: torch.Tensor, slot: torch.Tensor, wide: torch.Tensor,
                   ring: torch.Tensor | None = None, around: tuple | None = None) -> torch.Tensor:
        """[N] how far sweep `sweep` [N] saw free space towards each sensor-frame point [N, 3] of box `slot` [N].

        Between the two rings around the direction: where both hit the point's own object, the surface runs
        between the two returns (interpolated), unless the lower return lies more than OVERHANG_M beyond
        the upper one (the lower ring passed under an overhang, such as a trailer's body, to what stands
        behind it); anywhere else its edge may lie anywhere between them (the nearer return). Across
        azimuth, for `wide` [N] objects the same holds between the two columns around the direction
        (returns taken at their columns' centres): interpolated where all four returns lie on the object
        (and no lower one is an overhang's), else the nearest of the four: an oblique face 60 m away
        changes depth by up to 0.3 m within one column of 0.33 deg. Objects that are not wide (people,
        two-wheelers, cones) use the direction's own column: their parts are thinner than a column, so a
        neighbouring column's return says nothing about the space beside them. 0 outside the rings, or next
        to a direction without a return. ring: [N] rows of one ring to take alone, the same way across the
        columns (`ring_through`: its ray passes through the cell being tested). around: `around(sweep, position)`
        where the caller has it.
        """
        lower, upper, weight, azimuth, inside = self.around(sweep, position) if around is None else around
        if ring is not None:
            lower, upper, weight, inside = ring, ring, torch.zeros_like(weight), torch.ones_like(inside)
        free = torch.zeros_like(weight)
        for rule, which in ((self._across_columns, wide & inside), (self._own_column, ~wide & inside)):
            index = torch.nonzero(which).squeeze(1)
            free[index] = rule(sweep[index], lower[index], upper[index], weight[index], azimuth[index], slot[index])
        return free

    def _own_column(self, sweep, lower, upper, weight, azimuth, slot):
        below, above, on_object = self._column(sweep, lower, upper, torch.floor(azimuth).long() % self.ranges.shape[2], slot)
        on_object &= below <= above + OVERHANG_M
        return torch.where(on_object, below + weight * (above - below), _nearest(below, above))

    def _across_columns(self, sweep, lower, upper, weight, azimuth, slot):
        first = torch.floor(azimuth - 0.5)  # the columns whose centres lie either side of the direction
        across = azimuth - 0.5 - first
        columns = self.ranges.shape[2]
        below0, above0, on0 = self._column(sweep, lower, upper, first.long() % columns, slot)
        below1, above1, on1 = self._column(sweep, lower, upper, (first.long() + 1) % columns, slot)
        on_object = on0 & on1 & (torch.maximum(below0, below1) <= torch.minimum(above0, above1) + OVERHANG_M)
        lower_row, upper_row = below0 + across * (below1 - below0), above0 + across * (above1 - above0)
        return torch.where(on_object, lower_row + weight * (upper_row - lower_row), _nearest(below0, above0, below1, above1))

    def _column(self, sweep, lower, upper, column, slot):
        """The returns of the two rings in one column, and whether both lie on the object `slot`."""
        rows, columns = self.ranges.shape[1:]
        at_lower, at_upper = (sweep * rows + lower) * columns + column, (sweep * rows + upper) * columns + column  # flat indices
        ranges, owner = self.ranges.reshape(-1), self.owner.reshape(-1)
        below, above = ranges[at_lower], ranges[at_upper]
        on_object = (owner[at_lower] == slot) & (owner[at_upper] == slot) & (below > 0) & (above > 0)
        return below, above, on_object

    def farthest_of_six(self, sweep: torch.Tensor, lower: torch.Tensor, azimuth: torch.Tensor) -> torch.Tensor:
        """[N] the farthest return of sweep `sweep` [N] in rows `lower` and `lower` + 1 [N] (`around`), in the column of
        `azimuth` [N] (`around`) and the two beside it: no rule's free range there exceeds it (but by rounding)."""
        rows, columns = self.ranges.shape[1:]
        column = torch.floor(azimuth).long() % columns
        return self._farthest_of_six.reshape(-1)[(sweep * (rows - 1) + lower) * columns + column]

    @functools.cached_property
    def _farthest_of_six(self) -> torch.Tensor:
        """[S, G - 1, A]: at [s, g, a] the farthest return of sweep s in rows g, g + 1 and columns a - 1, a, a + 1 (circular)."""
        three = torch.maximum(torch.maximum(torch.roll(self.ranges, 1, dims=2), self.ranges), torch.roll(self.ranges, -1, dims=2))
        return torch.maximum(three[:, :-1], three[:, 1:]).contiguous()

    def ring_through(self, position: torch.Tensor, radius: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The row of the ring nearest in elevation to each sensor-frame direction [N, 3], and whether it lies within
        `radius` [N] radians of it."""
        elevation = _elevation_of(position)
        lower, upper, _ = self._rings_around(elevation)
        row = torch.where(elevation - self.elevation[lower] < self.elevation[upper] - elevation, lower, upper)
        return row, (self.elevation[row] - elevation).abs() < radius

    def nearest_around(self, sweep: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """[N] the nearest return of sweep `sweep` [N] in its two rings around each sensor-frame direction [N, 3], in its
        column and the two beside it; 0 outside the rings, or where one of those six has no return."""
        lower, upper, _, azimuth, inside = self.around(sweep, position)
        columns = self.ranges.shape[2]
        column = torch.floor(azimuth).long() % columns
        nearest = _nearest(*[self.ranges[sweep, row, (column + step) % columns] for row in (lower, upper) for step in (-1, 0, 1)])
        return torch.where(inside, nearest, torch.zeros_like(nearest))

    def around(self, sweep: torch.Tensor, position: torch.Tensor):
        """Rows of the rings below and above each sensor-frame direction [N, 3] of sweep `sweep` [N], the weight of
        the upper one, its azimuth in columns (column k spans [k, k + 1), its firing at k + 0.5), and whether it
        lies between the lowest and the highest ring."""
        elevation = _elevation_of(position)
        lower, upper, inside = self._rings_around(elevation)
        weight = ((elevation - self.elevation[lower]) / (self.elevation[upper] - self.elevation[lower]).clamp(min=1e-9)).clamp(0, 1)
        azimuth = _column_coordinate(position, self.ranges.shape[2]) - self.phase[sweep] + 0.5
        return lower, upper, weight, azimuth, inside

    def _rings_around(self, elevation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows of the rings below and above each elevation [N] radians (the lowest or the highest two outside them),
        and whether it lies between the lowest and the highest ring."""
        rows = self.elevation.numel()
        upper = torch.searchsorted(self.elevation, elevation)
        inside = (upper > 0) & (upper < rows)
        upper = upper.clamp(1, rows - 1)
        return upper - 1, upper, inside


def range_images(points_sensor: torch.Tensor, ring: torch.Tensor, sweep: torch.Tensor, slot: torch.Tensor, num_sweeps: int) -> RangeImages:
    """Range images of all sweeps: one row per ring (by its median elevation), as many columns as a ring's usual returns."""
    device = points_sensor.device
    distance = points_sensor.norm(dim=1).clamp(min=1e-6)
    elevation = _elevation_of(points_sensor)
    rings = torch.unique(ring)
    ring_elevation = torch.stack([elevation[ring == g].median() for g in rings])
    order = torch.argsort(ring_elevation)
    row_of_ring = torch.zeros(int(rings.max()) + 1, dtype=torch.long, device=device)
    row_of_ring[rings[order]] = torch.arange(rings.numel(), device=device)
    row = row_of_ring[ring]
    per_ring = torch.bincount(sweep * rings.numel() + row)
    columns = max(1, int(torch.quantile(per_ring[per_ring > 0].float(), 0.9)))
    coordinate = _column_coordinate(points_sensor, columns)
    # a spinning LiDAR fires at regular azimuths from a phase of its own each sweep: the circular mean of the returns'
    # positions within their columns; the columns are then centred on the firings, where their returns lie
    turn = 2 * math.pi * (coordinate - torch.floor(coordinate))
    phase = torch.atan2(torch.bincount(sweep, torch.sin(turn), num_sweeps), torch.bincount(sweep, torch.cos(turn), num_sweeps))
    phase = torch.remainder(phase / (2 * math.pi), 1.0).float()
    column = torch.remainder(torch.floor(coordinate - phase[sweep] + 0.5).long(), columns)
    shape = (num_sweeps, rings.numel(), columns)
    flat = (sweep * shape[1] + row) * columns + column
    ranges = torch.full((int(np.prod(shape)),), math.inf, device=device).scatter_reduce_(0, flat, distance, reduce="amin")
    owner = torch.full(ranges.shape, STATIC, dtype=torch.long, device=device)
    nearest = distance == ranges[flat]
    owner[flat[nearest]] = slot[nearest]
    ranges = torch.where(torch.isinf(ranges), torch.zeros_like(ranges), ranges)
    return RangeImages(ranges.view(shape), owner.view(shape), ring_elevation[order], phase)


def _elevation_of(position: torch.Tensor) -> torch.Tensor:
    """Elevation of sensor-frame directions [N, 3]: [N] radians."""
    return torch.asin((position[:, 2] / position.norm(dim=1).clamp(min=1e-6)).clamp(-1, 1))


def _column_coordinate(position: torch.Tensor, columns: int) -> torch.Tensor:
    """Azimuth of sensor-frame directions [N, 3] in units of columns, from 0 at -x: [N]."""
    return (torch.atan2(position[:, 1], position[:, 0]) + math.pi) / (2 * math.pi) * columns


def _mirror_image(grids: _BoxGrids, slot: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """Index [C] of each cell's mirror image across its box's x-z plane (left <-> right)."""
    mirror = cell.clone()
    mirror[:, 1] = grids.cells[slot, 1] - 1 - cell[:, 1]
    keys = grids.key(cell, slot)
    order = torch.argsort(keys)
    return order[sparse.lookup(keys[order], grids.key(mirror, slot))]  # every box cell is listed, so all are found


def _class_fraction(grids: _BoxGrids, slot: torch.Tensor, cell: torch.Tensor, flag: torch.Tensor, slot_class: torch.Tensor, bins: int = 32) -> torch.Tensor:
    """For each cell, the fraction of its class's cells at the same place in their boxes where `flag` [C] holds: [C] float.

    "The same place": the same bin of a `bins`^3 lattice over box-normalised coordinates, which
    pools boxes of different sizes.
    """
    place = torch.floor((cell.float() + 0.5) / grids.cells[slot] * bins).long().clamp(max=bins - 1)
    key = ((slot_class[slot] * bins + place[:, 0]) * bins + place[:, 1]) * bins + place[:, 2]
    size = (int(slot_class.max()) + 1) * bins**3
    total = torch.bincount(key, minlength=size)
    flagged = torch.bincount(key, weights=flag.float(), minlength=size)
    return (flagged / total.clamp(min=1))[key]


def _all_cells(cells: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every cell of boxes with `cells` [B', 3] cells each: (box index [C] into B', cell [C, 3])."""
    owner, k = sparse.ragged_arange(cells.prod(1))
    ny, nz = cells[owner, 1], cells[owner, 2]
    return owner, torch.stack([k // (ny * nz), (k // nz) % ny, k % nz], 1)


def _solid_points(grids: _BoxGrids, slot: torch.Tensor, cell: torch.Tensor, keys: torch.Tensor, interior_step_m: float, returns):
    """Box-frame points of a solid given as cells: corners of a cube in each boundary cell, centres of spaced interior cells.

    returns: `_return_extent` of the object's returns. A boundary cell's cube is 0.6 of the cell;
    towards a carved neighbour, in a cell that holds returns, it ends at the returns instead: the
    surface itself, say a bonnet's, which the cube would overshoot by up to 0.3 cells into the next
    voxel layer (or fall short of by 0.2).
    """
    device = cell.device
    order = torch.argsort(keys)
    slot, cell, keys = slot[order], cell[order], keys[order]
    faces = _FACES.to(device)
    neighbour = cell[:, None] + faces[None]  # [C, 6, 3]
    outside = ((neighbour < 0) | (neighbour >= grids.cells[slot][:, None])).any(-1)
    present = sparse.lookup(keys, grids.key(neighbour.clamp(min=0).reshape(-1, 3), slot.repeat_interleave(6))).view(-1, 6) >= 0
    boundary = (outside | ~present).any(1)
    # boundary cells: a cube pulled a fifth of a cell towards the centre, or to the returns towards carved cells
    base = cell[boundary].float()
    low, high = base + 0.5 - BOUNDARY_CUBE / 2, base + 0.5 + BOUNDARY_CUBE / 2
    return_keys, return_low, return_high = returns
    row = sparse.lookup(return_keys, keys[boundary])
    row_low, row_high = return_low[row.clamp(min=0)], return_high[row.clamp(min=0)]
    has = (row >= 0)[:, None]
    towards_carved = (~outside & ~present)[boundary]  # [Cb, 6]: +x -x +y -y +z -z
    high = torch.where(has & towards_carved[:, 0::2], torch.minimum(torch.maximum(row_high, base), base + 1), high)
    low = torch.where(has & towards_carved[:, 1::2], torch.minimum(torch.maximum(row_low, base), base + 1), low)
    low = torch.minimum(low, high)
    corner = low[:, None] + _CORNERS.to(device)[None].float() * (high - low)[:, None]
    corner_slot = slot[boundary].repeat_interleave(8)
    corner_points = corner.reshape(-1, 3) * grids.cell_size[corner_slot] - grids.half[corner_slot]
    # interior cells on a spaced sub-lattice
    stride = torch.clamp(torch.floor(interior_step_m / grids.cell_size[slot]).long(), min=1)
    inner = ~boundary & ((cell % stride) == 0).all(1)
    inner_points = (cell[inner].float() + 0.5) * grids.cell_size[slot[inner]] - grids.half[slot[inner]]
    return torch.cat([corner_points, inner_points]), torch.cat([corner_slot, slot[inner]])
