"""Per-stage config (uniscene/stage_config.py) and the schema as the one source of defaults.

The unit tests check the table and the settings helper. The workflow tests share one real
Snakemake run of a tiny config (one 2 s scene, 36 x 64 images, 256 LiDAR columns, a 40 x 40 x 8
grid of 0.8 m voxels, coarse labelling cells, one LiDAR epoch) up to the scene's render and LiDAR
sweeps, in which every stage command runs with only its own keys (the command sees nothing else,
so a read outside its subset would fail the run). Then a dry run after editing a render key plans
only the render job, and after editing a LiDAR key only the LiDAR jobs; and a hand-run command on
a config file that leaves its stage's keys out writes the same arrays as the rule. The metrics
(whose rule depends on every store) are left out to keep the run short.
"""

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from uniscene.cli import COMMANDS, NO_CONFIG
from uniscene.config import checked_config, defaults, load_config, schema
from uniscene.errors import UserError
from uniscene.layout.raster import LayoutSettings
from uniscene.models.lidar.settings import LidarSampling, LidarSettings
from uniscene.settings import default_settings, section_settings
from uniscene.stage_config import STAGE_KEYS, stage_config, write_stage_config
from uniscene.store import config_hash

REPO = Path(__file__).resolve().parents[1]
UNISCENE = str(Path(sys.executable).with_name("uniscene"))
SCENE = "synth-0000"
# Leaves every layout, render and frames key (and most others) to the schema's defaults.
TINY = {
    "device": "cpu",
    "grid": {"range_m": [-16.0, -16.0, -1.0, 16.0, 16.0, 5.4], "voxel_size_m": 0.8},
    "synth": {"num_scenes": 1, "duration_s": 2.0, "image_size": [36, 64], "lidar_azimuth_steps": 256},
    "occ_label": {"cell_size_m": 0.4, "object_cell_m": 0.4, "object_fine_cell_m": 0.4},  # coarse: carving was most of the run
    "lidar": {"epochs": 1, "frame_stride": 2},
}
TARGETS = [f"results/scenes/{SCENE}/{store}.zarr" for store in ("render", "lidar", "lidar_raycast")]


def test_every_table_key_is_a_schema_key_and_every_command_has_a_row():
    for stage, keys in STAGE_KEYS.items():
        for key in keys:
            node = schema()
            for name in key.split("."):
                assert name in node["properties"], f"{stage}: {key} is not in the schema"
                node = node["properties"][name]
    for command in COMMANDS:
        module = importlib.import_module(f"uniscene.commands.{command.replace('-', '_')}")
        if hasattr(module, "STAGE"):
            assert module.STAGE in STAGE_KEYS, command
        else:
            assert hasattr(module, "config_stage") or command in NO_CONFIG, command


def test_a_stage_subset_holds_its_keys_only():
    config = defaults()
    render = stage_config(config, "render")
    assert render == {"device": config["device"], "grid": config["grid"], "render": config["render"]}
    lidar = stage_config(config, "lidar")
    assert lidar["lidar"] == {"cast_batch": config["lidar"]["cast_batch"], "ray_drop": config["lidar"]["ray_drop"]}
    assert lidar["synth"] == {"lidar_azimuth_steps": config["synth"]["lidar_azimuth_steps"]}
    assert "dataset" not in stage_config(config, "occ_label")  # labels read the dataset through frames.zarr
    assert "scenes" not in stage_config(config, "frames")["dataset"]  # adding a scene reruns no other scene's frames


def test_the_subset_file_is_named_by_the_provenance_hash(tmp_path):
    config = defaults()
    path = write_stage_config(config, "render", tmp_path)
    assert path.name == f"render-{config_hash(stage_config(config, 'render'))}.json"
    assert load_config(str(path)) == checked_config(stage_config(config, "render")) | {
        k: v for k, v in defaults().items() if k not in ("device", "grid", "render")}
    assert write_stage_config(config, "render", tmp_path) == path and len(list(tmp_path.iterdir())) == 1


def test_defaults_come_from_the_schema_alone():
    assert load_config(str(REPO / "config.yaml")) == defaults()  # config.yaml spells out the defaults, no more
    partial = checked_config({"layout": {"supersample": 5}})
    assert partial["layout"]["supersample"] == 5 and partial["layout"]["box_rule"] == schema()["properties"]["layout"]["properties"]["box_rule"]["default"]
    assert default_settings(LayoutSettings).supersample == 3  # was 2 in code, 3 in the schema


def test_settings_reject_unknown_and_missing_keys_by_name():
    config = defaults()
    with pytest.raises(UserError, match="lidar has unknown key.*epoch_count"):
        section_settings(LidarSettings, {"lidar": {**config["lidar"], "epoch_count": 3}}, "lidar")
    with pytest.raises(UserError, match="lidar.ray_drop missing"):
        section_settings(LidarSampling, {"lidar": {"cast_batch": 8}}, "lidar")
    with pytest.raises(UserError, match="unknown config key.*supersampl in layout"):
        checked_config({"layout": {"supersampl": 2}}, "my.yaml")
    training = LidarSettings.from_config(stage_config(config, "train_lidar"))  # a class takes its keys of a section
    assert training.learning_rate == config["lidar"]["learning_rate"] and isinstance(training.learning_rate, float)


def test_no_model_imports_the_synthetic_dataset():
    for path in (REPO / "uniscene" / "models").rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [n for n in names if n.startswith("uniscene.synth")], path


# ---------------------------------------------------------------------------------------------
# One tiny workflow run


def snakemake(workdir: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
    )


def planned(workdir: Path, config: dict) -> dict[str, int]:
    """Rule -> job count of a dry run with `config` (as a --configfile over the run's config.yaml)."""
    (workdir / "edited.yaml").write_text(yaml.safe_dump(config))
    out = snakemake(workdir, *TARGETS, "-n", "--configfile", str(workdir / "edited.yaml"))  # --configfile takes 1+ values
    assert out.returncode == 0, out.stdout
    if "Nothing to be done" in out.stdout:
        return {}
    stats = out.stdout.split("Job stats:")[1].split("total")[0]
    return {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", stats, flags=re.MULTILINE)}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("stage-config")
    (workdir / "config.yaml").write_text(yaml.safe_dump(TINY))
    out = snakemake(workdir, "--cores", "2", *TARGETS, timeout=1200)
    assert out.returncode == 0, out.stdout[-5000:]
    return workdir


def test_job_lines_pass_a_small_file(run):
    out = snakemake(run, "-n", "-p", "--forcerun", "render_gaussians", f"results/scenes/{SCENE}/render.zarr")
    line = next(line for line in out.stdout.splitlines() if "uniscene render " in line)
    assert len(line) < 400 and "--config .snakemake/uniscene/config/render-" in line
    store = xr.open_zarr(run / f"results/scenes/{SCENE}/render.zarr")
    provenance = store.attrs["uniscene"]
    assert f"render-{provenance['config_hash']}.json" in line  # the file the job read is the one its store names
    assert set(provenance["config"]) == {"device", "grid", "render"}


def test_editing_a_render_key_plans_the_renders_alone(run):
    assert planned(run, TINY) == {}
    jobs = planned(run, {**TINY, "render": {"min_alpha": 0.4}})
    assert jobs == {"render_gaussians": 1}


def test_editing_a_lidar_model_key_plans_the_lidar_jobs_alone(run):
    jobs = planned(run, {**TINY, "lidar": {"epochs": 2}})
    assert jobs == {"lidar_train": 1, "lidar_generate": 1, "lidar_raycast": 1}
    jobs = planned(run, {**TINY, "lidar": {"epochs": 1, "ray_drop": "sample"}})  # sampling: no retraining, and the
    assert jobs == {"lidar_generate": 1}  # ray-cast baseline, which draws nothing, is not recast


@pytest.mark.parametrize("stage", ["frames", "layout"])  # render: the same path, but a whole render more
def test_a_hand_run_command_writes_the_rules_arrays(run, stage, tmp_path):
    results = run / "results" / "scenes" / SCENE
    config = tmp_path / "config.yaml"  # the stage's own section left out: its defaults from the schema
    config.write_text(yaml.safe_dump(TINY))
    out_store = tmp_path / f"{stage}.zarr"
    inputs = {
        "frames": ["--scene", SCENE],
        "layout": ["--frames", str(results / "frames.zarr")],
        "render": ["--frames", str(results / "frames.zarr"), "--occupancy", str(results / "occ_label.zarr"),
                   "--layout", str(results / "layout.zarr")],
    }[stage]
    out = subprocess.run([UNISCENE, stage, "--config", str(config), *inputs, "--out", str(out_store)],
                         cwd=run, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    by_hand, by_rule = xr.open_zarr(out_store), xr.open_zarr(results / f"{stage}.zarr")
    assert set(by_hand.variables) == set(by_rule.variables)
    for name in by_rule.variables:
        assert np.array_equal(by_hand[name].values, by_rule[name].values), name
    subset = by_rule.attrs["uniscene"]["config"]
    assert by_hand.attrs["uniscene"]["config"] == subset
    assert subset == stage_config(load_config(str(config)), stage)
