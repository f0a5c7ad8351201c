"""Sparse-voxel kernels, nearest-label spreading and the densification backends, each against a slow,
obvious reference or a surface whose shape is known."""

import numpy as np
import pytest
import torch

from uniscene.grid import OccGrid
from uniscene.occ_label import sparse
from uniscene.occ_label.densify import Cloud, backend_names, densify
from uniscene.occ_label.label import LabelOptions
from uniscene.classes import FIXED_THING_CLASSES, OCC_CLASS_ID
from uniscene.occ_label.semantics import UNLABELLED, nearest_labels
from uniscene.occ_label.voxelize import voxel_index, voxelize, voxelize_frames
from uniscene.settings import default_settings


def test_majority_matches_a_python_vote():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 50, 2000)
    labels = rng.integers(0, 5, 2000)
    unique, label = sparse.majority(torch.tensor(keys), torch.tensor(labels), 5)
    for key, winner in zip(unique.tolist(), label.tolist()):
        counts = np.bincount(labels[keys == key], minlength=5)
        assert counts[winner] == counts.max()
        assert winner == np.flatnonzero(counts == counts.max()).max()  # ties go to the larger label


def test_pack_round_trips_and_lookup_finds_keys():
    rng = np.random.default_rng(1)
    ijk = torch.tensor(rng.integers(-30000, 30000, (500, 3)))
    group = torch.tensor(rng.integers(0, 30000, 500))
    back, back_group = sparse.unpack(sparse.pack(ijk, group))
    assert torch.equal(back, ijk) and torch.equal(back_group, group)
    keys = torch.unique(sparse.pack(ijk[:250], group[:250]))
    found = sparse.lookup(keys, sparse.pack(ijk, group))
    assert (found[:250] >= 0).all() and torch.equal(keys[found[:250]], sparse.pack(ijk[:250], group[:250]))


def test_nearest_labels_is_within_a_cell_of_the_true_nearest():
    rng = np.random.default_rng(2)
    labelled = rng.uniform(0, 10, (400, 3))
    classes = rng.integers(0, 16, 400)
    query = rng.uniform(0, 10, (300, 3))
    cell = 0.2
    out = nearest_labels(torch.tensor(labelled), torch.tensor(classes), torch.tensor(query), cell, 20.0).numpy()
    distance = np.linalg.norm(query[:, None] - labelled[None], axis=2)  # [Q, L]
    for q in range(len(query)):
        same_class = distance[q, classes == out[q]]
        # the chosen class has a point no farther than the nearest point plus the cell sizes of the level used
        assert same_class.min() <= distance[q].min() * 2 + 4 * cell * np.sqrt(3)
    far = nearest_labels(torch.tensor(labelled), torch.tensor(classes), torch.tensor([[100.0, 100.0, 100.0]]), cell, 1.0)
    assert far.item() == UNLABELLED


def test_a_cone_labels_its_own_cells_but_not_the_ground_in_its_shadow():
    """A dense cone of returns beside a sparsely labelled road: the road behind the cone stays road."""
    cone, road = OCC_CLASS_ID["traffic_cone"], OCC_CLASS_ID["driveable_surface"]
    rng = np.random.default_rng(3)
    cone_points = np.c_[rng.uniform(-0.15, 0.15, (600, 2)), rng.uniform(0.0, 0.9, 600)]  # many bright returns
    road_points = np.c_[rng.uniform(-6, -1, (40, 2)), np.zeros(40)]  # a few labelled road returns, in front of the cone
    labelled = torch.tensor(np.concatenate([cone_points, road_points]))
    classes = torch.tensor([cone] * 600 + [road] * 40)
    queries = torch.tensor([[0.2, 0.0, 0.1],  # beside the cone, in its cell block
                            [1.6, 0.0, 0.0]])  # the road in its shadow, 1.6 m behind it
    cell = 0.2
    assert nearest_labels(labelled, classes, queries, cell, 20.0).tolist() == [cone, cone]  # without local classes it paints the road
    assert nearest_labels(labelled, classes, queries, cell, 20.0, FIXED_THING_CLASSES).tolist() == [cone, road]


def test_nearest_labels_stays_within_the_queries_map_area():
    """A kerb at y = 0: road labelled at y < 0, sidewalk labelled only 1 m in; a query just on the sidewalk
    is nearer the road's points, but takes the sidewalk's with the map's areas."""
    road, sidewalk = OCC_CLASS_ID["driveable_surface"], OCC_CLASS_ID["sidewalk"]
    labelled = torch.tensor([[0.0, -0.3, 0.0], [1.0, -0.5, 0.0], [0.0, 1.0, 0.0], [1.0, 1.2, 0.0]])
    classes = torch.tensor([road, road, sidewalk, sidewalk])
    on_road, on_walkway, elsewhere = 1, 2, 0
    labelled_area = torch.tensor([on_road, on_road, on_walkway, on_walkway])
    queries = torch.tensor([[0.0, 0.1, 0.0], [0.0, -0.1, 0.0], [0.0, 0.2, 0.0]])
    query_area = torch.tensor([on_walkway, on_road, elsewhere])
    cell = 0.2
    assert nearest_labels(labelled, classes, queries, cell, 5.0).tolist() == [road, road, road]
    # the third query's area holds no labelled point: it takes the nearest of any area
    assert nearest_labels(labelled, classes, queries, cell, 5.0, (), labelled_area, query_area).tolist() == [sidewalk, road, road]


def test_voxelize_votes_per_voxel():
    grid = OccGrid((0, 0, 0, 2, 2, 2), 1.0)
    points = torch.tensor([[0.5, 0.5, 0.5], [0.6, 0.4, 0.5], [0.5, 0.5, 0.7], [1.5, 1.5, 1.5], [5.0, 0, 0]])
    semantics = voxelize(grid, points, torch.tensor([3, 3, 4, 7, 1]))
    assert semantics[0, 0, 0] == 3 and semantics[1, 1, 1] == 7  # the majority; the point outside the grid is dropped
    assert (semantics == 17).sum() == 8 - 2
    # a thing (car, 4) reaching into a voxel of road (11) takes it, however few its points
    road_and_wheel = torch.tensor([[0.5, 0.5, 0.1], [0.6, 0.5, 0.1], [0.7, 0.5, 0.1], [0.5, 0.5, 0.9]])
    semantics = voxelize(grid, road_and_wheel, torch.tensor([11, 11, 11, 4]))
    assert semantics[0, 0, 0] == 4


def test_majority_with_priority_matches_a_python_vote_either_way():
    """Both counting paths (keys of unknown range: two sorts; keys below num_keys: one) against a vote by hand."""
    rng = np.random.default_rng(3)
    keys, labels = rng.integers(0, 300, 5000), rng.integers(0, 17, 5000)
    priority = torch.zeros(17, dtype=torch.bool)
    priority[[2, 5]] = True
    for num_keys in (None, 300):
        unique, label = sparse.majority(torch.tensor(keys), torch.tensor(labels), 17, priority, num_keys)
        assert unique.tolist() == sorted(set(keys.tolist()))
        for key, winner in zip(unique.tolist(), label.tolist()):
            counts = np.bincount(labels[keys == key], minlength=17)
            if counts[[2, 5]].any():
                counts[~priority.numpy()] = 0
            assert winner == np.flatnonzero(counts == counts.max()).max()


def test_voxelize_frames_matches_each_frame_voxelised_alone():
    grid = OccGrid((0, 0, 0, 4, 4, 2), 0.5)
    rng = np.random.default_rng(4)
    keys, classes, alone = [], [], []
    for f in range(3):
        points = torch.as_tensor(rng.uniform(-0.5, 4.5, (400, 3)), dtype=torch.float32)
        labels = torch.as_tensor(rng.integers(0, 17, 400))
        alone.append(voxelize(grid, points, labels))
        voxel, inside = voxel_index(grid, points)
        keys.append(voxel + f * int(np.prod(grid.shape)))
        classes.append(labels[inside])
    together = voxelize_frames(grid, torch.cat(keys), torch.cat(classes), 3)
    assert torch.equal(together, torch.stack(alone))


def backend_options(**changes) -> dict:
    """The densify backends' keys at the schema's defaults, with `changes`."""
    return default_settings(LabelOptions, **changes).backend_options


def _ring_plane(gap_m: float, edge_m: float = 3.0):
    """Points of the plane z = 0 on x in [-edge, edge], in lines along y every 0.1 m, with a gap in x."""
    x = np.arange(-edge_m, edge_m, 0.1)
    x = x[np.abs(x) > gap_m / 2]
    y = np.arange(-3.0, 3.0, 0.1)
    xx, yy = np.meshgrid(x, y, indexing="ij")
    points = np.stack([xx.ravel(), yy.ravel(), np.zeros(xx.size)], 1)
    view = np.tile([0.0, 0.0, 1.0], (len(points), 1))
    return torch.tensor(points, dtype=torch.float32), torch.tensor(view, dtype=torch.float32)


def test_splat_closes_a_gap_without_growing_the_edges():
    points, view = _ring_plane(gap_m=1.2)
    cloud = Cloud(points, view, torch.zeros(len(points), dtype=torch.long), 0.2)
    surface = densify(cloud, "splat", backend_options(splat_radius_m=1.0))
    out = surface.points.numpy()
    assert np.abs(out[:, 2]).max() < 1e-3  # stays on the plane
    inside_gap = np.abs(out[:, 0]) < 0.5
    assert np.histogram(out[inside_gap, 1], bins=np.arange(-2.5, 2.6, 0.5))[0].min() > 0  # gap filled along y
    assert out[:, 0].max() < 3.0 + 0.2 and out[:, 0].min() > -3.0 - 0.2  # no growth past the edges
    assert out[:, 1].max() < 3.0 + 0.2 and out[:, 1].min() > -3.0 - 0.2
    wide, view = _ring_plane(gap_m=3.0)
    surface = densify(Cloud(wide, view, torch.zeros(len(wide), dtype=torch.long), 0.2), "splat", backend_options(splat_radius_m=1.0))
    assert (np.abs(surface.points.numpy()[:, 0]) < 0.5).sum() == 0  # a hole wider than 2 radii stays open


def test_poisson_backend_reconstructs_a_plane():
    pytest.importorskip("open3d")
    points, view = _ring_plane(gap_m=0.6)
    cloud = Cloud(points, view, torch.zeros(len(points), dtype=torch.long), 0.2)
    surface = densify(cloud, "poisson", backend_options(poisson_depth=7))
    out = surface.points.numpy()
    assert len(out) > len(points)
    assert np.abs(out[:, 2]).max() < 0.15
    assert ((np.abs(out[:, 0]) < 0.2) & (np.abs(out[:, 1]) < 2.0)).sum() > 10  # the gap is bridged


def test_backends_are_registered_and_nksr_explains_itself():
    assert {"splat", "poisson", "nksr"} <= set(backend_names())
    points, view = _ring_plane(gap_m=0.6)
    cloud = Cloud(points, view, torch.zeros(len(points), dtype=torch.long), 0.2)
    try:
        import nksr  # noqa: F401

        pytest.skip("nksr is installed")
    except ImportError:
        pass
    from uniscene.errors import UserError

    with pytest.raises(UserError, match="nksr"):
        densify(cloud, "nksr", backend_options())


def test_closed_form_eigen_matches_torch_eigh():
    """The closed-form 3 x 3 solver used for normals agrees with torch.linalg.eigh."""
    from uniscene.occ_label.densify.normals import _smallest_eigen

    generator = torch.Generator().manual_seed(0)
    points = torch.randn(2000, 30, 3, dtype=torch.float64, generator=generator)
    points[1000:, :, 2] *= 0.01  # half of them nearly planar, as road and wall patches
    covariance = torch.einsum("kni,knj->kij", points, points) / 30
    values, normal = _smallest_eigen(covariance)
    ref_values, ref_vectors = torch.linalg.eigh(covariance)
    torch.testing.assert_close(values, ref_values, rtol=1e-6, atol=1e-9)
    assert (normal * ref_vectors[:, :, 0]).sum(1).abs().min() > 1 - 1e-6
