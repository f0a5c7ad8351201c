"""The `uniscene` CLI: its help, and bad input that stops with one message, exit status 2, no output."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from uniscene.cli import COMMANDS

REPO = Path(__file__).resolve().parents[1]
UNISCENE = str(Path(sys.executable).with_name("uniscene"))  # the console script the rules call


def uniscene(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([UNISCENE, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def write_config(folder: Path, **changes) -> Path:
    """The repository's config with `changes` ("dataset.kind" style keys) applied, as folder/config.yaml."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[key] = value
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def assert_user_error(out: subprocess.CompletedProcess, command: str, *names: str) -> None:
    """Exit 2 and a single line `uniscene <command>: error: ...` naming each of `names`."""
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"uniscene {command}: error: ")
    for name in names:
        assert name in lines[0], (name, lines[0])


def frames(tmp_path: Path, config: str, scene: str = "synth-0000") -> subprocess.CompletedProcess:
    """`uniscene frames` as the rule calls it, writing under tmp_path/results."""
    out_store = tmp_path / "results" / "scenes" / scene / "frames.zarr"
    return uniscene("frames", "--config", config, "--scene", scene, "--out", str(out_store), cwd=tmp_path)


def test_help_lists_every_stage(tmp_path):
    out = uniscene("--help", cwd=tmp_path)
    assert out.returncode == 0
    for name in COMMANDS:
        assert name in out.stdout
    assert {"synth", "frames", "occ-label", "layout", "render", "lidar", "metrics"} <= set(COMMANDS)
    assert uniscene(cwd=tmp_path).returncode == 2  # no stage: help and a usage error


def test_invalid_config_value(tmp_path):
    config = write_config(tmp_path, **{"grid.voxel_size_m": -0.4})
    out = frames(tmp_path, str(config))
    assert_user_error(out, "frames", str(config), "'grid.voxel_size_m'", "-0.4")
    assert not (tmp_path / "results").exists()


def test_invalid_inline_config_value(tmp_path):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["device"] = "gpu"
    out = frames(tmp_path, yaml.safe_dump(config))
    assert_user_error(out, "frames", "--config", "'device'", "'gpu'", "'cuda'")
    assert not (tmp_path / "results").exists()


def test_missing_config_file(tmp_path):
    out = frames(tmp_path, str(tmp_path / "nope.yaml"))
    assert_user_error(out, "frames", "nope.yaml not found", "--config")


@pytest.mark.parametrize("kind", ["nuscenes", "synthetic"])
def test_missing_dataroot(tmp_path, kind):
    dataroot = tmp_path / "no-such-dataset"
    config = write_config(tmp_path, **{"dataset.kind": kind, "dataset.dataroot": str(dataroot), "dataset.scenes": "all"})
    out = frames(tmp_path, str(config))
    assert_user_error(out, "frames", str(dataroot), "dataset.dataroot")
    assert not (tmp_path / "results").exists()
    assert not dataroot.exists()


def test_unknown_scene(tmp_path):
    config = write_config(tmp_path)
    out = frames(tmp_path, str(config), scene="synth-0099")
    assert_user_error(out, "frames", "synth-0099", "synth-0000")
    assert not (tmp_path / "results").exists()


def test_scenes_lists_the_selection_with_every_key_at_its_default(tmp_path):
    (tmp_path / "empty.yaml").write_text("")  # no key at all: the schema's defaults (the embedded dataset, 3 scenes)
    out = uniscene("scenes", "--config", "empty.yaml", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["synth-0000\ttrain", "synth-0001\ttrain", "synth-0002\tval"]
    out = uniscene("scenes", "--config", str(write_config(tmp_path, **{"dataset.scenes": ["synth-0001"]})), "--split", "train", cwd=tmp_path)
    assert out.stdout.splitlines() == ["synth-0001\ttrain"]
