"""The workflow through `--profile profiles/slurm` on a real single-node Slurm (tests/slurm_cluster.py).

One tiny scene goes through the stages in TARGETS as Slurm jobs; the test then checks that each
rule ran as a job of its partition (GPU rules with `--gpus=1` and CUDA_VISIBLE_DEVICES set inside),
and that the stores open and hold the frames of the scene.
"""

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from slurm_cluster import SlurmCluster, ensure_installed
from uniscene.grid import OccGrid
from uniscene.paths import truth_store
from uniscene.store import open_store

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
SCENE = "synth-0000"
PROFILE = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
GPU_RULES = {rule for rule, resources in PROFILE["set-resources"].items() if resources.get("gpu")}


@dataclass(frozen=True)
class Target:
    """A workflow output the test asks for, the rule that writes it, and what it must hold."""

    path: str  # relative to the workflow directory
    rule: str
    stage: str | None = None  # store stage (open_store checks it); None for the dataset folder
    variable: str | None = None  # a variable whose dimensions are checked
    dims: tuple = ()


# Extend with each stage's per-scene store as its command lands; order follows the DAG.
TARGETS = [
    Target("data/synthetic", "synth_dataset"),
    Target(f"results/scenes/{SCENE}/frames.zarr", "frames_interpolate", "frames", "world_from_ego", ("frame", "row", "col")),
    Target(f"results/scenes/{SCENE}/occ_label.zarr", "occ_label_build", "occ_label", "semantics", ("frame", "x", "y", "z")),
    Target(f"results/scenes/{SCENE}/layout.zarr", "layout_rasterise", "layout", "layout", ("frame", "channel", "x", "y")),
    Target(f"results/scenes/{SCENE}/render.zarr", "render_gaussians", "render", "semantic", ("frame", "cam", "h", "w")),
]


def tiny_config() -> dict:
    """The repository's config cut to one short scene, small images and 0.8 m voxels."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["device"] = "cpu"
    config["grid"]["voxel_size_m"] = 0.8
    config["synth"].update(num_scenes=1, duration_s=1.0, image_size=[36, 64])
    return config


@dataclass
class SlurmRun:
    workdir: Path
    config: dict
    returncode: int
    log: str
    jobs: list  # one dict per Slurm job (scontrol's keys)


def slurm_jobs(cluster: SlurmCluster) -> list[dict]:
    """Every job the controller still knows (finished ones stay for MinJobAge), as scontrol's key=value."""
    out = subprocess.run(
        ["scontrol", "show", "job", "--oneliner"], env=cluster.env, capture_output=True, text=True, timeout=30, check=True
    )
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.stdout.splitlines() if line.startswith("JobId=")]


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory) -> SlurmRun:
    reason = ensure_installed()
    if reason:
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("slurm-workflow")
    config = tiny_config()
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    command = [
        sys.executable, "-m", "snakemake", *[target.path for target in TARGETS],
        "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), "--profile", "profiles/slurm",
        # test-only: poll early (tiny jobs), keep the job logs and have the job steps log their environment
        "--slurm-init-seconds-before-status-checks", "1", "--slurm-keep-successful-logs", "--verbose",
    ]
    with SlurmCluster() as cluster:
        out = subprocess.run(
            command, cwd=REPO, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600
        )
        jobs = slurm_jobs(cluster)
        if out.returncode != 0:
            print(cluster.logs())
    for job in jobs:  # shown with -s or on failure: where the minutes went
        print(f"slurm job {job['JobId']} {job['Comment']} {job['JobState']} submitted {job['SubmitTime']} ran {job['RunTime']}")
    return SlurmRun(workdir, config, out.returncode, out.stdout, jobs)


def job_of(run: SlurmRun, rule: str) -> dict:
    jobs = [job for job in run.jobs if job.get("Comment", "").startswith(f"rule_{rule}")]
    assert len(jobs) == 1, f"rule {rule}: {len(jobs)} Slurm jobs ({[job.get('JobState') for job in jobs]})"
    return jobs[0]


def job_log(job: dict) -> str:
    return Path(job["StdOut"]).read_text()


def test_workflow_finishes(slurm_run):
    assert slurm_run.returncode == 0, slurm_run.log[-6000:]
    assert f"{len(TARGETS)} of {len(TARGETS)} steps (100%) done" in slurm_run.log


def test_every_rule_ran_as_a_slurm_job(slurm_run):
    assert len(slurm_run.jobs) == len(TARGETS), [job.get("Comment") for job in slurm_run.jobs]
    for target in TARGETS:
        job = job_of(slurm_run, target.rule)
        assert job["JobState"] == "COMPLETED", (target.rule, job["JobState"], job_log(job)[-3000:])
        assert job["WorkDir"] == str(slurm_run.workdir)
        assert Path(job["StdOut"]).is_relative_to(slurm_run.workdir / ".snakemake" / "slurm_logs" / f"rule_{target.rule}")
        assert f"rule {target.rule}:" in job_log(job)  # the job step ran the rule ...
        assert f"'SLURM_JOB_ID': '{job['JobId']}'" in job_log(job)  # ... inside this very allocation


def test_gpu_rules_get_a_gpu_and_the_rest_none(slurm_run):
    for target in TARGETS:
        job = job_of(slurm_run, target.rule)
        visible = re.findall(r"'CUDA_VISIBLE_DEVICES': '([^']*)'", job_log(job))
        if target.rule in GPU_RULES:
            assert job["Partition"] == "gpu", target.rule
            assert job.get("TresPerJob") == "gres:gpu:1", target.rule
            assert len(visible) == 1 and visible[0] in ("0", "1"), (target.rule, visible)  # one of the node's 2 GPUs
        else:
            assert job["Partition"] == "debug", target.rule  # the cluster's default partition
            assert "TresPerJob" not in job or "gpu" not in job["TresPerJob"], target.rule
            assert not visible, (target.rule, visible)


def test_dataset_and_its_truth(slurm_run):
    dataroot = slurm_run.workdir / slurm_run.config["dataset"]["dataroot"]
    version = slurm_run.config["dataset"]["version"]
    scenes = json.loads((dataroot / version / "scene.json").read_text())
    assert [scene["name"] for scene in scenes] == [SCENE]
    truth = open_store(truth_store(dataroot, SCENE))
    frames_per_s = 12
    assert abs(truth.sizes["frame"] - frames_per_s * slurm_run.config["synth"]["duration_s"]) <= 2


@pytest.mark.parametrize("target", [t for t in TARGETS if t.stage], ids=lambda t: t.stage)
def test_stores_hold_the_scene_frames(slurm_run, target):
    dataroot = slurm_run.workdir / slurm_run.config["dataset"]["dataroot"]
    truth = open_store(truth_store(dataroot, SCENE))
    store = open_store(slurm_run.workdir / target.path, target.stage)
    assert store[target.variable].dims == target.dims
    assert store.sizes["frame"] == truth.sizes["frame"]
    np.testing.assert_array_equal(store["timestamp_us"].values, truth["timestamp_us"].values)
    expected_sizes = dict(zip("xyz", OccGrid.from_config(slurm_run.config).shape))
    expected_sizes.update(cam=6, h=slurm_run.config["synth"]["image_size"][0], w=slurm_run.config["synth"]["image_size"][1])
    for dim in store[target.variable].dims:
        if dim in expected_sizes:
            assert store.sizes[dim] == expected_sizes[dim], (target.stage, dim)
