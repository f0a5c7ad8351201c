"""Shared pytest fixtures.

`synthetic_dataset`: a tiny synthetic nuScenes-format dataset, written once per test session by
`uniscene synth`'s core (2 scenes x 3 s, 45 x 80 images). Returns (config, dataroot): `config`
is the repository's config.yaml with dataset.dataroot pointing at the dataset and the tiny
synth section; read the dataset with `NuScenes(config["dataset"]["version"], str(dataroot))`.
"""

from pathlib import Path

import pytest

from uniscene.config import load_config

REPO = Path(__file__).resolve().parents[1]

TINY_SYNTH = {"num_scenes": 2, "duration_s": 3.0, "image_size": [45, 80], "density": 1.0, "town_blocks": 3}


def tiny_synth_config(dataroot) -> dict:
    """The repository config with the tiny synthetic dataset at `dataroot`."""
    config = load_config(str(REPO / "config.yaml"))  # every key, defaults filled in
    config["dataset"]["kind"] = "synthetic"
    config["dataset"]["dataroot"] = str(dataroot)
    config["synth"] = {**config.get("synth", {}), **TINY_SYNTH}
    return config


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory):
    from uniscene.synth.generate import generate_dataset

    dataroot = tmp_path_factory.mktemp("synthetic") / "synthetic"
    config = tiny_synth_config(dataroot)
    generate_dataset(config, dataroot, progress=False)
    return config, dataroot
