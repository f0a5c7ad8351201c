"""The nuScenes reader on tables the tests write themselves (real schema), and its bad-input errors."""

import json
import shutil

import numpy as np
import pytest

from uniscene.sensors import CAMERA_NAMES, LIDAR_NAME
from uniscene.data.handmade import instance_state, token, write_handmade_dataset
from uniscene.data.reader import open_dataset, scene_data
from uniscene.errors import UserError
from uniscene.frames import scene_frames

VERSION = "v1.0-hand"
CHANNELS = CAMERA_NAMES + (LIDAR_NAME,)


@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    return write_handmade_dataset(tmp_path_factory.mktemp("hand") / "data", version=VERSION, with_truth=False)


def _broken_copy(src, tmp_path, edit):
    """A copy of the dataset whose sample_data table went through `edit(records) -> records`."""
    root = tmp_path / "broken"
    shutil.copytree(src, root)
    table = root / VERSION / "sample_data.json"
    table.write_text(json.dumps(edit(json.loads(table.read_text()))))
    return root


def test_scene_arrays(handmade):
    nusc = open_dataset(handmade, VERSION)
    assert open_dataset(handmade, VERSION) is nusc  # tables load once per process
    data = scene_data(nusc, "hand-0000", CHANNELS)
    for chain in data.chains.values():
        assert np.all(np.diff(chain.timestamp_us) > 0)
    assert len(data.chains[LIDAR_NAME].token) == 55 and len(data.chains["CAM_FRONT"].token) == 33
    assert data.chains[LIDAR_NAME].is_keyframe.sum() == 6
    assert (data.lidarseg_filename != "").sum() == 6
    ann = data.annotations
    assert ann.present.shape == (6, 5) and ann.present.sum() == len(nusc.sample_annotation)
    record = nusc.sample_annotation[0]
    k = list(ann.sample_token).index(record["sample_token"])
    b = list(ann.instance_token).index(record["instance_token"])
    np.testing.assert_array_equal(ann.center[k, b], record["translation"])
    np.testing.assert_array_equal(ann.rotation[k, b], record["rotation"])
    assert data.location == "singapore-onenorth"


def test_sweep_boxes_follow_the_devkit_and_the_true_arcs(handmade):
    """Where the devkit interpolates (instance at both samples): the rotation is its slerp; the centre lies on a cubic
    through the annotations, nearer the instance's true arc than the devkit's straight line between them."""
    nusc = open_dataset(handmade, VERSION)
    frames = scene_frames(scene_data(nusc, "hand-0000", CHANNELS), 0.25, 0.1)
    tokens = list(frames.box_instance_token.values)
    scene_start_us = nusc.get("sample", nusc.scene[0]["first_sample_token"])["timestamp"]
    ours, devkit = [], []
    for s, sd_token in enumerate(frames.sweep_token.values):
        sample = nusc.get("sample", nusc.get("sample_data", sd_token)["sample_token"])
        if not sample["prev"]:
            continue
        prev_instances = {nusc.get("sample_annotation", a)["instance_token"] for a in nusc.get("sample", sample["prev"])["anns"]}
        time_s = np.array([(frames.sweep_timestamp_us.values[s] - scene_start_us) * 1e-6])
        for box in nusc.get_boxes(sd_token):
            instance = nusc.get("sample_annotation", box.token)["instance_token"]
            if instance not in prev_instances:
                continue
            b = tokens.index(instance)
            assert frames.sweep_box_valid.values[s, b]
            dot = abs(np.dot(frames.sweep_box_rotation.values[s, b], box.orientation.elements))
            assert dot == pytest.approx(1.0, abs=1e-9)
            true_center = instance_state([token("instance", i) for i in range(5)].index(instance), time_s)[0][0]
            ours.append(np.linalg.norm(frames.sweep_box_center.values[s, b] - true_center))
            devkit.append(np.linalg.norm(box.center - true_center))
    ours, devkit = np.array(ours), np.array(devkit)
    assert len(ours) > 100
    assert devkit.max() > 0.05  # the straight line cuts the arcs' corners
    assert ours.max() < 0.25 * devkit.max() and ours.mean() < 0.25 * devkit.mean()


def test_missing_dataroot_and_tables(tmp_path, handmade):
    with pytest.raises(UserError, match="does not exist"):
        open_dataset(tmp_path / "nowhere", VERSION)
    root = tmp_path / "partial"
    shutil.copytree(handmade, root)
    (root / VERSION / "sample_data.json").unlink()
    with pytest.raises(UserError, match=r"sample_data\.json.*dataset\.version"):
        open_dataset(root, VERSION)


def test_broken_chain_names_the_token(handmade, tmp_path):
    victim = "hand-0000-lidar-broken"

    def edit(records):
        lidar = [r for r in records if "LIDAR_TOP" in r["filename"]]
        lidar[20]["next"] = victim
        return records

    nusc = open_dataset(_broken_copy(handmade, tmp_path, edit), VERSION)
    with pytest.raises(UserError, match=victim):
        scene_data(nusc, "hand-0000", CHANNELS)


def test_missing_sweep_file_names_the_token(handmade, tmp_path):
    root = _broken_copy(handmade, tmp_path, lambda records: records)
    records = json.loads((root / VERSION / "sample_data.json").read_text())
    sweep = next(r for r in records if r["filename"].startswith("sweeps/LIDAR_TOP"))
    (root / sweep["filename"]).unlink()
    with pytest.raises(UserError, match=sweep["token"]):
        scene_data(open_dataset(root, VERSION), "hand-0000", CHANNELS)


def _drop_captures(records, channel, positions):
    """Remove captures of `channel` (sweeps only) and relink the chain around them."""
    chain = [r for r in records if f"/{channel}/" in r["filename"]]
    dropped = {chain[p]["token"] for p in positions}
    assert not any(chain[p]["is_key_frame"] for p in positions)
    kept = [r for r in chain if r["token"] not in dropped]
    for before, after in zip(kept[:-1], kept[1:]):
        before["next"], after["prev"] = after["token"], before["token"]
    return [r for r in records if r["token"] not in dropped]


def test_camera_missing_at_a_frame(handmade, tmp_path):
    """One lost capture: the neighbour stands in (fallback); two in a row: an error naming the frame."""
    root = _broken_copy(handmade, tmp_path, lambda r: _drop_captures(r, "CAM_BACK", [8]))
    frames = scene_frames(scene_data(open_dataset(root, VERSION), "hand-0000", CHANNELS), 0.25, 0.1)
    offset = np.abs(frames.cam_timestamp_us.values[:, 3] - frames.timestamp_us.values)
    assert offset.max() < 100_000
    root = _broken_copy(handmade, tmp_path / "two", lambda r: _drop_captures(r, "CAM_BACK", [8, 9]))
    with pytest.raises(UserError, match="camera CAM_BACK has no capture within 0.1 s of frame '[0-9a-f]{32}'"):
        scene_frames(scene_data(open_dataset(root, VERSION), "hand-0000", CHANNELS), 0.25, 0.1)
