"""Point semantics: lidarseg's 32 classes onto the 17 occupancy classes, and nearest-labelled spreading.

nuScenes labels only the keyframe sweeps (2 Hz); the 20 Hz sweeps between them take the class
of the nearest labelled point of the aggregated static scene. Object points take their box's
class elsewhere (aggregate.py).

Letters: N points, L labelled cells, Q queries.
"""

import numpy as np
import torch

from uniscene.classes import LIDARSEG_CLASS_NAMES, LIDARSEG_TO_OCC
from uniscene.errors import UserError
from uniscene.occ_label import sparse

UNLABELLED = 255  # a point without a class (an unlabelled sweep), never written to a store


def occ_classes_of_lidarseg(lidarseg: np.ndarray, source: str = "lidarseg labels") -> np.ndarray:
    """lidarseg class indices [N] uint8 (0..31) -> occupancy classes [N] uint8 (0..16)."""
    lidarseg = np.asarray(lidarseg)
    if lidarseg.size and lidarseg.max() >= len(LIDARSEG_CLASS_NAMES):
        raise UserError(
            f"{source} holds class {int(lidarseg.max())} but lidarseg has {len(LIDARSEG_CLASS_NAMES)} classes: restore the file"
        )
    return LIDARSEG_TO_OCC[lidarseg]


def nearest_labels(
    labelled_points: torch.Tensor,  # [L, 3]
    labelled_classes: torch.Tensor,  # [L] int64, no UNLABELLED
    query_points: torch.Tensor,  # [Q, 3], same frame
    cell_m: float,
    max_distance_m: float,
    local_classes: tuple = (),
    labelled_area: torch.Tensor | None = None,  # [L] int64
    query_area: torch.Tensor | None = None,  # [Q] int64
) -> torch.Tensor:
    """Class of the nearest labelled cell of each query point, UNLABELLED beyond `max_distance_m`: [Q] int64.

    `local_classes` label only at the finest level (the 3 x 3 x 3 cells around them). occ_label
    passes the fixed things: a barrier or cone outside every box (before its first annotation,
    beyond 50 m) is real and stays, but its dense, bright returns would win the coarse levels'
    majority votes and paint the ground in its LiDAR shadow metres away.

    With areas (map_areas.py codes), a query first takes the nearest labelled cell of its own
    area code, and only where there is none within `max_distance_m` the nearest of any.

    Coarse to fine would miss near neighbours, so fine to coarse: labelled points are binned into
    cells of `cell_m`, 2 `cell_m`, 4 `cell_m`, ... (majority class per cell); a query takes the
    nearest (by cell centre) labelled cell of the 3 x 3 x 3 block around its own cell at the finest
    level that has one. "Nearest" is thus exact to about one cell of that level.
    """
    out = _nearest_in_groups(labelled_points, labelled_classes, query_points, cell_m, max_distance_m, local_classes, labelled_area, query_area)
    if labelled_area is not None:
        rest = torch.nonzero(out == UNLABELLED).squeeze(1)
        out[rest] = _nearest_in_groups(labelled_points, labelled_classes, query_points[rest], cell_m, max_distance_m, local_classes)
    return out


def _nearest_in_groups(labelled_points, labelled_classes, query_points, cell_m, max_distance_m, local_classes, labelled_group=None, query_group=None):
    """`nearest_labels` among the labelled points of each query's own group (all of them when groups are None)."""
    out = torch.full((query_points.shape[0],), UNLABELLED, dtype=torch.long, device=query_points.device)
    if labelled_points.shape[0] == 0 or query_points.shape[0] == 0:
        return out
    pending = torch.arange(query_points.shape[0], device=query_points.device)
    offsets = sparse.neighbour_offsets(1, query_points.device).tolist() + [
        o for o in sparse.cube_offsets(1).tolist() if sum(v * v for v in o) > 1]  # the 3 x 3 x 3 block, nearest first
    offsets = torch.tensor(offsets, device=query_points.device)
    level_m = cell_m
    while pending.numel():
        keys, classes = sparse.majority(sparse.pack(sparse.cells_of(labelled_points, level_m), labelled_group), labelled_classes, UNLABELLED)
        query_cells = sparse.cells_of(query_points[pending], level_m)
        group = None if query_group is None else query_group[pending]
        for offset in offsets:
            found = sparse.lookup(keys, sparse.pack(query_cells + offset, group))
            hit = (found >= 0) & (out[pending] == UNLABELLED)
            out[pending[hit]] = classes[found[hit]]
        pending = pending[out[pending] == UNLABELLED]
        if level_m >= max_distance_m:
            break
        if level_m == cell_m and local_classes:  # past the finest level: the local classes stop labelling
            reaching = ~torch.isin(labelled_classes, torch.tensor(local_classes, device=labelled_classes.device))
            labelled_points, labelled_classes = labelled_points[reaching], labelled_classes[reaching]
            labelled_group = None if labelled_group is None else labelled_group[reaching]
            if labelled_points.shape[0] == 0:
                break
        level_m *= 2
    return out
