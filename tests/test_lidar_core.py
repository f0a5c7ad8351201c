"""LiDAR generation pieces on hand-made occupancy: beams and range images, the occupancy prior
against analytic ranges, the network, the baseline and the metrics."""

import numpy as np
import pytest
import torch

from uniscene.classes import FREE, OCC_CLASS_ID
from uniscene.grid import OccGrid
from uniscene.metrics.lidar import bev_histograms, chamfer_m, jsd_bits, mmd_gaussian, ray_metrics
from uniscene.models.lidar.baseline import fit_class_intensity, raycast_range_image
from uniscene.models.lidar.beams import RangeImage, lidar_top, range_image_to_sweep, sweep_to_range_image
from uniscene.models.lidar.network import MODEL_CONFIGS, LidarRangeNet
from uniscene.models.lidar.pipeline import LidarPipeline, sweeps_from_range_images
from uniscene.models.lidar.prior import NUM_PRIOR_FEATURES, cast_beams, prior_features

GRID = OccGrid((-40.0, -40.0, -1.0, 40.0, 40.0, 5.4), 0.4)
PATTERN = lidar_top(360)  # fewer azimuths than the sensor's 1084 keep the tests fast
SENSOR_HEIGHT_M = 1.84
GROUND_TOP_M = 0.2  # the ground voxels fill z in [-1, 0.2)
WALL_Y_M = 20.0  # a wall fills y >= 20 m


def toy_world(batch: int = 1) -> tuple:
    """Semantics [B, X, Y, Z] (ground, a wall on the left) and sensor poses [B, 4, 4] (yaw 0, moving along x)."""
    semantics = torch.full((batch, *GRID.shape), FREE, dtype=torch.uint8)
    semantics[:, :, :, :3] = OCC_CLASS_ID["driveable_surface"]
    semantics[:, :, int((WALL_Y_M + 40) / 0.4):, :] = OCC_CLASS_ID["manmade"]
    poses = torch.eye(4, dtype=torch.float64).repeat(batch, 1, 1)
    poses[:, 0, 3] = torch.linspace(0.0, 3.0, batch, dtype=torch.float64)
    poses[:, 2, 3] = SENSOR_HEIGHT_M
    return semantics, poses


def test_range_image_round_trip_keeps_the_nearest_point_per_ray():
    directions = PATTERN.directions()  # [H, W, 3]
    rng = np.random.default_rng(0)
    range_m = rng.uniform(2, 60, PATTERN.shape)
    points = np.concatenate(
        [(directions * range_m[..., None]).reshape(-1, 3), rng.uniform(0, 100, (range_m.size, 1)),
         np.repeat(np.arange(PATTERN.shape[0]), PATTERN.shape[1])[:, None]], 1
    ).astype(np.float32)
    farther = points[:50].copy()
    farther[:, :3] *= 1.5  # a second, farther return on the same rays
    image = sweep_to_range_image(np.concatenate([farther, points]), PATTERN)
    np.testing.assert_allclose(image.range_m, range_m, rtol=1e-5)
    back = range_image_to_sweep(image, PATTERN)
    np.testing.assert_allclose(np.sort(back[:, 3]), np.sort(points[:, 3]))
    np.testing.assert_allclose(sweep_to_range_image(back, PATTERN).range_m, image.range_m, rtol=1e-5)


def test_prior_matches_the_analytic_ground_and_wall():
    semantics, poses = toy_world(1)
    prior = cast_beams(GRID, semantics, poses, PATTERN)
    elevation = np.deg2rad(np.asarray(PATTERN.elevation_deg))
    azimuth = PATTERN.azimuth_rad()
    # ground: rays pointing down hit the top of the ground voxels unless the wall comes first
    ground_range = (SENSOR_HEIGHT_M - GROUND_TOP_M) / -np.sin(elevation[:, None]) * np.ones_like(azimuth)
    direction_y = np.cos(elevation)[:, None] * np.sin(azimuth)[None, :]
    with np.errstate(divide="ignore"):
        wall_range = np.where(direction_y > 1e-6, WALL_Y_M / direction_y, np.inf)
    expected = np.minimum(np.where(elevation[:, None] < 0, ground_range, np.inf), wall_range)
    expected_hit = expected <= PATTERN.max_range_m
    hit_point = PATTERN.directions() * np.where(expected_hit, expected, 0)[..., None] + [0, 0, SENSOR_HEIGHT_M]
    inside = expected_hit & (np.abs(hit_point[..., :2]) < 39.9).all(-1) & (hit_point[..., 2] < 5.3)  # the hit is in the grid
    assert prior.hit[0].numpy()[inside].all()
    np.testing.assert_allclose(prior.range_m[0].numpy()[inside], expected[inside], rtol=1e-4, atol=1e-3)
    hit_class = prior.hit_class[0].numpy()
    assert set(np.unique(hit_class[inside])) <= {OCC_CLASS_ID["driveable_surface"], OCC_CLASS_ID["manmade"]}
    assert (hit_class[~prior.hit[0].numpy()] == FREE).all()
    # upward rays on the right hit nothing: their range is where they leave the grid's box
    free = (elevation[:, None] > np.deg2rad(2)) & (direction_y < -0.1)
    assert not prior.hit[0].numpy()[free].any()
    directions = PATTERN.directions()[free]
    origin = np.array([0.0, 0.0, SENSOR_HEIGHT_M])
    exit_m = np.min(np.maximum((GRID.lower_m - origin) / directions, (GRID.upper_m - origin) / directions), 1)
    np.testing.assert_allclose(prior.range_m[0].numpy()[free], exit_m, atol=1e-3)


def test_batched_cast_equals_frame_by_frame():
    semantics, poses = toy_world(3)
    semantics[1, 100:120, 90:110, 3:8] = OCC_CLASS_ID["car"]  # a car in one frame only
    batch = cast_beams(GRID, semantics, poses, PATTERN)
    for b in range(3):
        single = cast_beams(GRID, semantics[b:b + 1], poses[b:b + 1], PATTERN)
        for name in single.__dataclass_fields__:
            torch.testing.assert_close(getattr(batch, name)[b:b + 1], getattr(single, name))
    assert (batch.hit_class[1] == OCC_CLASS_ID["car"]).any() and not (batch.hit_class[0] == OCC_CLASS_ID["car"]).any()


def test_network_shapes_and_save_load(tmp_path):
    net = LidarRangeNet(**MODEL_CONFIGS["tiny"]).eval()
    features = torch.randn(2, NUM_PRIOR_FEATURES, *PATTERN.shape[:1], 90)  # width not a multiple of 4
    out = net(features)
    assert out.range_correction_m.shape == out.intensity.shape == out.drop_logit.shape == (2, 32, 90)
    net.save_pretrained(tmp_path)
    loaded = LidarRangeNet.from_pretrained(tmp_path, low_cpu_mem_usage=False).eval()
    torch.testing.assert_close(loaded(features).drop_logit, out.drop_logit)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    with pytest.raises(ValueError, match="features must be"):
        net(torch.randn(1, 3, 32, 64))


def test_raycast_baseline_returns_every_hit_with_class_intensity():
    semantics, poses = toy_world(2)
    prior = cast_beams(GRID, semantics, poses, PATTERN)
    table = fit_class_intensity(torch.tensor([11, 11, 15], dtype=torch.uint8), torch.tensor([10.0, 20.0, 60.0]))
    assert table[11] == 15 and table[15] == 60 and table[4] == 30  # unseen classes get the overall mean
    range_m, intensity = raycast_range_image(prior, PATTERN, table)
    returned = range_m > 0
    assert torch.equal(returned, prior.hit & (prior.range_m >= PATTERN.min_range_m))
    assert torch.all(intensity[returned & (prior.hit_class == 15)] == 60)
    features = prior_features(prior, PATTERN)
    assert features.shape == (2, NUM_PRIOR_FEATURES, *PATTERN.shape) and torch.isfinite(features).all()
    pipeline = LidarPipeline(None, table, GRID, PATTERN)
    output = pipeline(semantics.numpy(), poses.numpy(), method="raycast")
    points, offsets = sweeps_from_range_images(output.range_images(), PATTERN)
    assert offsets[-1] == len(points) == int(returned.sum())
    ground = (points[:, 2] < -1.0) & (points[:, 1] < WALL_Y_M - 0.5)  # sensor frame: the ground lies 1.64 m below
    np.testing.assert_allclose(points[ground, 2], GROUND_TOP_M - SENSOR_HEIGHT_M, atol=1e-3)


def test_learned_pipeline_ray_drop_modes():
    semantics, poses = toy_world(1)
    torch.manual_seed(0)
    pipeline = LidarPipeline(LidarRangeNet(**MODEL_CONFIGS["tiny"]), torch.full((18,), 20.0), GRID, PATTERN)
    prior = cast_beams(GRID, semantics, poses, PATTERN)

    def returned(mode, seed):
        return pipeline.predict(prior, ray_drop=mode, generator=torch.Generator().manual_seed(seed))[0] > 0

    torch.testing.assert_close(returned("sample", 3), returned("sample", 3))  # seeded: same draw
    assert not torch.equal(returned("sample", 3), returned("sample", 4))
    p_drop = torch.sigmoid(pipeline.network(prior_features(prior, PATTERN)).drop_logit).detach()
    in_range = (prior.range_m > 2) & (prior.range_m < 60)  # the untrained correction keeps these in range
    assert torch.equal(returned("threshold", 0)[in_range], (p_drop < 0.5)[in_range])


def test_metrics_on_known_sets():
    rng = np.random.default_rng(1)
    sweeps = [rng.uniform(-50, 50, (500, 5)) for _ in range(4)]
    hist = bev_histograms(sweeps)
    np.testing.assert_allclose(hist.sum(1), 1.0)
    assert mmd_gaussian(hist, hist) == pytest.approx(0.0, abs=1e-12)
    shifted = bev_histograms([s * np.array([0.3, 0.3, 1, 1, 1]) for s in sweeps])
    assert mmd_gaussian(hist, shifted) > 1e-4
    p, q = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert jsd_bits(p, q) == pytest.approx(1.0) and jsd_bits(p, p) == pytest.approx(0.0)
    a = np.zeros((1, 5))
    b = np.array([[3.0, 4.0, 0, 0, 0]])
    assert chamfer_m(a, b) == pytest.approx(10.0)
    recorded = RangeImage(np.array([[1.0, 0.0, 2.0, 0.0]]), np.array([[5.0, 0.0, 7.0, 0.0]]))
    generated = RangeImage(np.array([[1.5, 0.0, 0.0, 3.0]]), np.array([[4.0, 0.0, 0.0, 1.0]]))
    figures = ray_metrics(generated, recorded)
    assert figures["range_mae_m"] == pytest.approx(0.5) and figures["intensity_mae"] == pytest.approx(1.0)
    assert figures["ray_drop_precision"] == pytest.approx(0.5) and figures["ray_drop_recall"] == pytest.approx(0.5)
    assert figures["ray_drop_f1"] == pytest.approx(0.5)
