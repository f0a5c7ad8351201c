"""Sparse voxel sets as sorted int64 keys (a voxel hash without a hash table), in torch.

A cell is an integer triple (i, j, k) in some frame, optionally tagged with a group (an object
instance) so that groups never mix. Keys pack (group, i, j, k) into one int64; sorted unique
keys with `torch.searchsorted` stand in for a hash map. Everything runs on the tensors' device
and scales with the number of occupied cells, not the size of the space, which is what lets a
0.1 m grid run where dense arrays of every cell would not fit.

Letters: N points or cells, K unique keys, C classes.
"""

import torch

AXIS_BITS = 16  # cell indices in [-2^15, 2^15): +-3.2 km at 0.1 m cells
GROUP_BITS = 15  # groups 0 .. 32767
_HALF = 1 << (AXIS_BITS - 1)
_AXIS_MASK = (1 << AXIS_BITS) - 1


def cells_of(points: torch.Tensor, cell_m: float) -> torch.Tensor:
    """Integer cell of each point: points [N, 3] metres -> [N, 3] int64."""
    return torch.floor(points / cell_m).long()


def pack(ijk: torch.Tensor, group: torch.Tensor | None = None) -> torch.Tensor:
    """Keys of cells ijk [N, 3] int64 (and groups [N] int64) -> [N] int64."""
    if ijk.numel() and (ijk.min() < -_HALF or ijk.max() >= _HALF):
        raise ValueError(f"cell index out of +-{_HALF}: use larger cells or a frame closer to the points")
    shifted = ijk + _HALF
    keys = (shifted[:, 0] << (2 * AXIS_BITS)) | (shifted[:, 1] << AXIS_BITS) | shifted[:, 2]
    if group is not None:
        if group.numel() and (group.min() < 0 or group.max() >= (1 << GROUP_BITS)):
            raise ValueError(f"group ids must lie in [0, {1 << GROUP_BITS}), got {int(group.min())}..{int(group.max())}")
        keys = keys | (group.long() << (3 * AXIS_BITS))
    return keys


def unpack(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of `pack`: keys [N] -> (ijk [N, 3] int64, group [N] int64)."""
    ijk = torch.stack([(keys >> (2 * AXIS_BITS)) & _AXIS_MASK, (keys >> AXIS_BITS) & _AXIS_MASK, keys & _AXIS_MASK], 1)
    return ijk - _HALF, keys >> (3 * AXIS_BITS)


def ragged_arange(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For counts [K] int64: the owner of each of their sum(counts) items [M], and its index within its owner [M]."""
    owner = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
    start = torch.cumsum(counts, 0) - counts
    return owner, torch.arange(owner.numel(), device=counts.device) - start[owner]


def lookup(sorted_keys: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Position of each query key in `sorted_keys` [K] (sorted, unique), -1 where absent: [N] int64."""
    if sorted_keys.numel() == 0:
        return torch.full_like(query, -1)
    position = torch.searchsorted(sorted_keys, query).clamp(max=sorted_keys.numel() - 1)
    return torch.where(sorted_keys[position] == query, position, torch.full_like(position, -1))


def majority(keys: torch.Tensor, labels: torch.Tensor, num_classes: int, priority: torch.Tensor | None = None,
             num_keys: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Most frequent label per key (ties go to the larger label); with `priority` ([C] bool), a
    key holding any label of priority takes the most frequent of those.

    keys [N] int64, labels [N] int64 in [0, C) -> (unique keys [K] sorted, label [K] int64).
    num_keys: where keys are known to lie in [0, num_keys), (key, label) pairs are counted in one
    sort instead of two (keys and pairs).
    """
    labels = labels.long()
    if num_keys is not None and num_keys * num_classes < 2**62:
        pairs, counts = torch.unique(keys * num_classes + labels, return_counts=True)  # sorted by key, then label
        unique, owner = torch.unique_consecutive(pairs // num_classes, return_inverse=True)
    else:
        unique, inverse = torch.unique(keys, return_inverse=True)
        pairs, counts = torch.unique(inverse * num_classes + labels, return_counts=True)
        owner = pairs // num_classes
    label = pairs % num_classes
    if priority is not None:  # a label of priority outweighs any count
        counts = counts + priority.to(counts.device)[label].long() * (keys.numel() + 1)
    # per key the pair of the top count, of the larger label among equal counts
    best = torch.full((unique.numel(),), -1, dtype=torch.long, device=keys.device)
    best.scatter_reduce_(0, owner, counts * num_classes + label, reduce="amax")
    return unique, best % num_classes


def mean_by_key(keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Group rows by key: keys [N], values [N, D] -> (unique keys [K], mean [K, D], count [K])."""
    unique, inverse, counts = torch.unique(keys, return_inverse=True, return_counts=True)
    sums = torch.zeros((unique.numel(), values.shape[1]), dtype=values.dtype, device=values.device)
    sums.index_add_(0, inverse, values)
    return unique, sums / counts[:, None].to(values.dtype), counts


def cube_offsets(radius_cells: int, device=None) -> torch.Tensor:
    """All integer offsets of the cube [-r, r]^3: [(2r + 1)^3, 3] int64."""
    r = torch.arange(-radius_cells, radius_cells + 1, device=device)
    return torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)


def neighbour_offsets(radius_cells: int, device=None) -> torch.Tensor:
    """All integer offsets within a sphere of `radius_cells`, nearest first: [M, 3] int64."""
    offsets = cube_offsets(radius_cells, device)
    distance = (offsets.float() ** 2).sum(1)
    keep = distance <= radius_cells**2 + 1e-6
    offsets, distance = offsets[keep], distance[keep]
    return offsets[torch.argsort(distance, stable=True)]
