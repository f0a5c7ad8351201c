"""The Snakemake workflow: the DAG (`-n`), the rule graph, and config errors at DAG-build time.

Snakemake runs through its CLI with the repository as working directory and `--directory` a
fresh folder that holds the config, so outputs already in the repository change nothing.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from uniscene.config import load_config
from uniscene.data.scenes import synthetic_scene_names
from uniscene.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
# Rules that `all` does not reach, with a target that runs each (a new one goes here).
ON_DEMAND_TARGETS = {"export_infos_source": "results/export/source/nuscenes_infos_train.pkl"}
TARGETS = ["all", *ON_DEMAND_TARGETS.values()]


def rule_names() -> set[str]:
    """Every rule defined in the Snakefile and rules/*.smk, `use rule X as Y` ones included."""
    texts = [(REPO / "Snakefile").read_text()] + [path.read_text() for path in sorted((REPO / "rules").glob("*.smk"))]
    return {name for text in texts for name in re.findall(r"^(?:rule (\w+):|use rule \w+ as (\w+))", text, flags=re.MULTILINE) for name in name if name}


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """Snakemake's CLI; its log (stdout and stderr, whichever it picks) in `.stdout`."""
    return subprocess.run(
        [*SNAKEMAKE, "--directory", str(workdir), *args],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120,
    )


def job_counts(log: str) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry run."""
    stats = log.split("Job stats:")[1].split("total")[0]
    return {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", stats, flags=re.MULTILINE)}


@pytest.fixture
def workdir(tmp_path) -> Path:
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    return tmp_path


def write_config(workdir: Path, **dataset) -> None:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["dataset"].update(dataset)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


def test_dry_run_lists_every_rule(workdir):
    out = snakemake(workdir, "-n", *TARGETS)
    assert out.returncode == 0, out.stdout
    jobs = job_counts(out.stdout)
    assert set(jobs) == rule_names(), "a rule that `all` does not reach belongs in ON_DEMAND_TARGETS"
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    assert jobs["frames_interpolate"] == config["synth"]["num_scenes"]
    assert jobs["synth_dataset"] == 1
    assert not (workdir / "results").exists(), "a dry run wrote outputs"


def test_per_scene_target_runs_only_its_chain(workdir):
    *others, scene = synthetic_scene_names(yaml.safe_load((REPO / "config.yaml").read_text()))
    out = snakemake(workdir, "-n", f"results/scenes/{scene}/render.zarr")
    assert out.returncode == 0, out.stdout
    jobs = job_counts(out.stdout)
    assert jobs == {rule: 1 for rule in ("synth_dataset", "frames_interpolate", "occ_label_build", "layout_rasterise", "render_gaussians")}
    assert not [other for other in others if other in out.stdout]


def test_rulegraph_is_a_dot_graph_of_the_stages(workdir):
    out = snakemake(workdir, *TARGETS, "--rulegraph")
    assert out.returncode == 0, out.stdout
    dot = out.stdout[out.stdout.index("digraph") :]
    assert dot.rstrip().endswith("}")
    labels = dict(re.findall(r'^\s*(\d+)\[label = "(\w+)"', dot, flags=re.MULTILINE))
    assert set(labels.values()) == rule_names()
    edges = {(labels[a], labels[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, flags=re.MULTILINE)}
    for edge in [
        ("synth_dataset", "frames_interpolate"),
        ("frames_interpolate", "occ_label_build"),
        ("frames_interpolate", "layout_rasterise"),
        ("occ_label_build", "render_gaussians"),
        ("layout_rasterise", "render_gaussians"),
    ]:
        assert edge in edges


def test_invalid_config_value_is_the_commands_one_line(workdir):
    """--config and --configfile: the line `uniscene <stage>` prints for the same value, naming the source and the key."""
    out = snakemake(workdir, "-n", "--config", "device=gpu")
    assert out.returncode == 1
    line = "config.yaml + --config: invalid value for key 'device': 'gpu' is not one of ['auto', 'cpu', 'cuda']"
    assert line in out.stdout and "Error validating config file" not in out.stdout
    (workdir / "bad.yaml").write_text("layout:\n  supersample: 0\n")
    out = snakemake(workdir, "-n", "--configfile", str(workdir / "bad.yaml"))
    assert out.returncode == 1
    with pytest.raises(UserError) as error:
        load_config(str(workdir / "bad.yaml"))
    message = str(error.value).split(": ", 1)[1]  # after the source, which names the merged files here
    assert f"config.yaml + bad.yaml: {message}" in out.stdout
    assert "'layout.supersample': 0 is less than the minimum of 1" in out.stdout


def test_unknown_scene_target_names_the_scene_and_how_to_list_them(workdir):
    out = snakemake(workdir, "-n", "results/scenes/nope/render.zarr")
    assert out.returncode == 1
    assert "MissingRuleException" not in out.stdout
    assert "scene 'nope' is not among the scenes the config selects" in out.stdout
    assert "`uniscene scenes --config config.yaml`" in out.stdout and "dataset.scenes" in out.stdout


def test_unknown_scene_stops_the_dag(workdir):
    write_config(workdir, scenes=["synth-0000", "scene-9999"])
    out = snakemake(workdir, "-n")
    assert out.returncode == 1
    assert "dataset.scenes names unknown scene(s) ['scene-9999']" in out.stdout


def test_missing_dataroot_stops_the_dag(workdir, tmp_path):
    missing = tmp_path / "no-nuscenes"
    write_config(workdir, kind="nuscenes", dataroot=str(missing), version="v1.0-mini")
    out = snakemake(workdir, "-n")
    assert out.returncode == 1
    assert f"{missing}/v1.0-mini/scene.json not found" in out.stdout
    assert "dataset.dataroot" in out.stdout
