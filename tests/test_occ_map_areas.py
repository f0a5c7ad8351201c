"""occ_label's map areas on the synthetic dataset: each area code agrees with the town's true ground classes."""

import numpy as np
import pytest
import torch

from uniscene.classes import LIDARSEG_TO_OCC, OCC_CLASS_ID
from uniscene.cli import main as cli_main
from uniscene.config import dumps
from uniscene.grid import OccGrid
from uniscene.occ_label.map_areas import AREA_LAYERS, OUTSIDE, MapAreas
from uniscene.paths import scene_store
from uniscene.store import open_store
from uniscene.synth.world import build_scene

SCENE_INDEX = 0


@pytest.fixture(scope="module")
def areas_and_town(synthetic_dataset, tmp_path_factory):
    config, _ = synthetic_dataset
    scene = build_scene(config, SCENE_INDEX)
    frames_path = scene_store(tmp_path_factory.mktemp("map_areas"), scene.name, "frames")
    assert cli_main(["frames", "--config", dumps(config), "--scene", scene.name, "--out", str(frames_path)]) == 0
    frames = open_store(frames_path, stage="frames")
    world_from_ego = frames["world_from_ego"].values
    areas = MapAreas.load(frames.attrs["dataroot"], frames.attrs["location"], world_from_ego, OccGrid.from_config(config))
    return areas, scene.town, world_from_ego


def test_area_codes_agree_with_the_true_ground(areas_and_town):
    areas, town, world_from_ego = areas_and_town
    rng = np.random.default_rng(0)
    xy = world_from_ego[rng.integers(0, len(world_from_ego), 20_000), :2, 3] + rng.uniform(-30, 30, (20_000, 2))
    code = areas.code_of(torch.as_tensor(np.c_[xy, np.zeros(len(xy))]), np.eye(4)).numpy()
    truth = LIDARSEG_TO_OCC[town.ground_class(xy[:, 0], xy[:, 1])]
    assert not (code & OUTSIDE).any()  # the raster covers every frame's reach

    def share(bit, name):
        inside = (code >> AREA_LAYERS.index(bit)) & 1 == 1
        assert inside.sum() > 500
        return (truth[inside] == OCC_CLASS_ID[name]).mean()

    assert share("drivable_area", "driveable_surface") > 0.98
    assert share("walkway", "sidewalk") > 0.95
    outside_areas = truth[code == 0]
    assert np.isin(outside_areas, [OCC_CLASS_ID["driveable_surface"], OCC_CLASS_ID["sidewalk"]]).mean() < 0.03


def test_points_in_another_frame_take_the_codes_of_their_world_position(areas_and_town):
    areas, _, world_from_ego = areas_and_town
    points_ego = torch.tensor([[5.0, -2.0, 0.0], [12.0, 7.0, 0.0], [-20.0, 3.0, 0.0]], dtype=torch.float64)
    world = points_ego.numpy() @ world_from_ego[3, :3, :3].T + world_from_ego[3, :3, 3]
    np.testing.assert_array_equal(areas.code_of(points_ego, world_from_ego[3]).numpy(),
                                  areas.code_of(torch.as_tensor(world), np.eye(4)).numpy())
