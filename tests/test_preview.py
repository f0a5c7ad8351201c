"""The occupancy preview's bird's-eye view: each column shows its highest occupied (and visible) voxel's class."""

import numpy as np

from uniscene.classes import FREE, OCC_CLASS_ID, OCC_COLORS
from uniscene.viz.bev import BACKGROUND, occupancy_bev_rgb


def test_a_column_shows_its_highest_occupied_voxel():
    road, car, tree = OCC_CLASS_ID["driveable_surface"], OCC_CLASS_ID["car"], OCC_CLASS_ID["vegetation"]
    semantics = np.full((3, 1, 4), FREE, np.uint8)
    semantics[0, 0, :2] = (road, car)  # a car on the road
    semantics[1, 0, [0, 3]] = (road, tree)  # a crown over the road
    visible = np.ones(semantics.shape, bool)
    visible[1, 0, 3] = False  # the crown, unseen
    rgb = occupancy_bev_rgb(semantics)
    np.testing.assert_array_equal(rgb[0, 0], OCC_COLORS[car])
    np.testing.assert_array_equal(rgb[1, 0], OCC_COLORS[tree])
    np.testing.assert_array_equal(rgb[2, 0], BACKGROUND)  # an empty column
    np.testing.assert_array_equal(occupancy_bev_rgb(semantics, visible)[1, 0], OCC_COLORS[road])
