"""The workflow on a real single-node Slurm (tests/slurm_cluster.py), run the two ways a user runs it.

One cluster, one working folder, two runs, so that no job runs twice:

1. `snakemake --profile profiles/slurm results/scenes/<scene>/layout.zarr`: the repository's
   profile by path, one scene's short chain (dataset, frames, layout);
2. `snakemake --profile slurm all`: the profile by name, found in Snakemake's user config folder
   where `uniscene install-profile slurm` put it (HOME and XDG_CONFIG_HOME point into the test's
   folder); it runs the rest of `all` (model trainings, generation, metrics) and redoes nothing.

The config is the repository's cut to one scene of ~1 s, 0.8 m voxels, small images and every
model trained for the fewest epochs/steps its schema allows. The tests then check that each rule
ran as a job of its partition (GPU rules with `--gpus=1` and CUDA_VISIBLE_DEVICES set inside),
that the installed copy was the one used, and that the stores open and hold the scene's frames.
"""

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from slurm_cluster import SlurmCluster, ensure_installed
from uniscene.config import SCHEMA_PATH
from uniscene.grid import OccGrid
from uniscene.paths import truth_store
from uniscene.store import open_store

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
SCENE = "synth-0000"
PROFILE = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
# training rules ask for `train_gpus` GPUs themselves (1 by default); the profile gives the other GPU rules theirs
TRAINING_RULES = {"lidar_train", "train_occ_vae", "train_occ_dit", "train_video", "train_video_no_crossview", "train_segmenter",
                  "train_occ_eval_ae"}
GPU_RULES = {rule for rule, resources in PROFILE["set-resources"].items() if resources.get("gpu")} | TRAINING_RULES
GPUS = 4  # of the test cluster's node
# Written into the installed copy only: the jobs of the run by name show it (`scontrol`'s Account).
ACCOUNT = "uniscene-test"
# Options for both runs, test-only: poll early (tiny jobs), keep the job logs, have job steps log their environment.
TEST_OPTIONS = ["--slurm-init-seconds-before-status-checks", "1", "--slurm-keep-successful-logs", "--verbose"]


@dataclass(frozen=True)
class Target:
    """A workflow output, the rule that writes it, and what it must hold."""

    path: str  # relative to the workflow directory
    rule: str
    stage: str | None = None  # store stage (open_store checks it); None for the dataset folder
    variable: str | None = None  # a variable whose dimensions are checked
    dims: tuple = ()


# The first run asks for the layout (TARGETS[2]) and gets the two before it; `all` writes the rest,
# so that its long jobs (labelling, rendering, trainings) overlap as they would in one run.
TARGETS = [
    Target("data/synthetic", "synth_dataset"),
    Target(f"results/scenes/{SCENE}/frames.zarr", "frames_interpolate", "frames", "world_from_ego", ("frame", "row", "col")),
    Target(f"results/scenes/{SCENE}/layout.zarr", "layout_rasterise", "layout", "layout", ("frame", "channel", "x", "y")),
    Target(f"results/scenes/{SCENE}/occ_label.zarr", "occ_label_build", "occ_label", "semantics", ("frame", "x", "y", "z")),
    Target(f"results/scenes/{SCENE}/render.zarr", "render_gaussians", "render", "semantic", ("frame", "cam", "h", "w")),
    Target(f"results/scenes/{SCENE}/lidar.zarr", "lidar_generate", "lidar", "timestamp_us", ("frame",)),
]
FIRST_RUN = TARGETS[:3]


def tiny_config() -> dict:
    """The repository's config cut to one short scene, small images, a coarse grid and tiny trainings.

    This test checks the orchestration, not the quality: the scene is sparse (a third of the agents,
    256 LiDAR columns), the labeller coarse (objects carved on 0.4 / 0.2 m cells, no ground fill:
    ~73 -> ~27 CPU seconds) and the grid 64 x 64 x 8 at 0.8 m (51.2 m across; the occupancy DiT
    needs x and y divisible by the VAE's downsampling, 4, times its patch, 2).
    """
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["device"] = "cpu"
    config["grid"].update(voxel_size_m=0.8, range_m=[-25.6, -25.6, -1.0, 25.6, 25.6, 5.4])
    config["synth"].update(num_scenes=1, duration_s=1.0, image_size=[36, 64], density=0.3, lidar_azimuth_steps=256)
    config["occ_label"].update(object_cell_m=0.4, object_fine_cell_m=0.2, cell_size_m=0.4, ground_fill_m=0.0, patch_samples=1)
    config["lidar"]["frame_stride"] = 4
    return shortest_runs(config)


def _is_length(key: str) -> bool:
    """A key that sets how long something trains, samples or is scored (`epochs`, `steps`, `*_epochs`,
    `*_steps`, `eval_frames`), not how often (`*every*`)."""
    named = key in ("epochs", "steps", "eval_frames") or key.endswith(("_epochs", "_steps"))
    return named and "every" not in key


def shortest_runs(config: dict) -> dict:
    """Every model section (one whose schema has a `model` key) at the fewest epochs and steps allowed,
    trained on whole frames (`crop_*` keys at 0, where 0 means whole: the grid here is smaller than
    their crops).

    Read from the schema, so that a model section added by another stage (or left to its schema
    defaults in config.yaml) trains briefly here without editing this test; and no comparison of
    other labelling backends (`compare_backends`, wherever it lives: the metrics' own tests score them).
    """
    schema = yaml.safe_load(SCHEMA_PATH.read_text())["properties"]
    for name, section in schema.items():
        properties = section.get("properties", {})
        if "compare_backends" in properties:
            config.setdefault(name, {})["compare_backends"] = []
        if "model" not in properties:
            continue
        for key, spec in properties.items():
            if spec.get("type") != "integer":
                continue
            if _is_length(key):
                fewest = spec["exclusiveMinimum"] + 1 if "exclusiveMinimum" in spec else spec.get("minimum", 1)
                config.setdefault(name, {})[key] = max(int(fewest), 1)
            elif key.startswith("crop_") and spec.get("minimum") == 0:
                config.setdefault(name, {})[key] = 0
    return config


@dataclass
class Run:
    """One `snakemake` call: its exit status, output, the rules it planned and its Slurm jobs."""

    returncode: int
    log: str
    planned: dict  # {rule: count} from Snakemake's "Job stats" table, local rules (`all`) left out
    jobs: list  # one dict per Slurm job (scontrol's keys)
    wall_s: float


@dataclass
class SlurmRuns:
    workdir: Path
    config: dict
    profile: Path  # the installed copy
    by_path: Run
    by_name: Run


def slurm_jobs(cluster: SlurmCluster) -> list[dict]:
    """Every job the controller still knows (finished ones stay for MinJobAge), as scontrol's key=value."""
    out = subprocess.run(
        ["scontrol", "show", "job", "--oneliner"], env=cluster.env, capture_output=True, text=True, timeout=30, check=True
    )
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.stdout.splitlines() if line.startswith("JobId=")]


def planned_jobs(log: str) -> dict:
    """{rule: count} of Snakemake's "Job stats" table, without the local `all`."""
    match = re.search(r"Job stats:\njob\s+count\n[- ]+\n(.*?)\ntotal", log, re.S)
    assert match, log[-3000:]
    counts = {rule: int(count) for rule, count in re.findall(r"^(\S+)\s+(\d+)$", match.group(1), re.M)}
    counts.pop("all", None)
    return counts


def run_snakemake(cluster: SlurmCluster, args: list, env: dict, known: set) -> Run:
    """Run snakemake from the repository root; return it with the Slurm jobs that are new since `known`."""
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", *args, "--snakefile", str(REPO / "Snakefile"), *TEST_OPTIONS],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1200,
    )
    wall_s = time.monotonic() - start
    jobs = [job for job in slurm_jobs(cluster) if job["JobId"] not in known]
    if out.returncode != 0:
        print(cluster.logs())
    for job in jobs:  # shown with -s or on failure: where the minutes went
        print(f"slurm job {job['JobId']} {job['Comment']} {job['JobState']} submitted {job['SubmitTime']} ran {job['RunTime']}")
    print(f"snakemake {' '.join(args)}: {wall_s:.0f} s")
    planned = planned_jobs(out.stdout) if out.returncode == 0 else {}
    return Run(out.returncode, out.stdout, planned, jobs, wall_s)


@pytest.fixture(scope="module")
def slurm_runs(tmp_path_factory) -> SlurmRuns:
    reason = ensure_installed()
    if reason:
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("slurm-workflow")
    home = tmp_path_factory.mktemp("home")
    config = tiny_config()
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    # Four GPUs, eight CPUs and 8 GB for each of four 2-thread jobs, so that the GPU rules overlap
    # (and their polling intervals with them) instead of queueing; the tiny jobs use < 2 GB each.
    with SlurmCluster(gpus=GPUS, cpus=8, mem_mb=GPUS * 8000) as cluster:
        env = {**cluster.env, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
        installed = subprocess.run(
            [sys.executable, "-m", "uniscene.cli", "install-profile", "slurm"],
            cwd=home, env=env, capture_output=True, text=True, timeout=120,
        )
        assert installed.returncode == 0, installed.stderr
        profile = home / ".config" / "snakemake" / "slurm"
        # What a user of an accounted cluster does: name the account in the installed copy.
        text = (profile / "config.yaml").read_text()
        assert text.count("\ndefault-resources:\n") == 1, text
        text = text.replace("\ndefault-resources:\n", f"\ndefault-resources:\n  slurm_account: {ACCOUNT}\n")
        (profile / "config.yaml").write_text(text)

        directory = ["--directory", str(workdir)]
        by_path = run_snakemake(cluster, [FIRST_RUN[-1].path, *directory, "--profile", "profiles/slurm"], env, set())
        known = {job["JobId"] for job in by_path.jobs}
        if by_path.returncode == 0:
            by_name = run_snakemake(cluster, ["all", *directory, "--profile", "slurm"], env, known)
        else:
            by_name = Run(-1, "not run: the first run failed", {}, [], 0.0)
    return SlurmRuns(workdir, config, profile, by_path, by_name)


def rule_of(job: dict) -> str:
    """The rule of a job from the plugin's comment, `rule_<rule>` or `rule_<rule>_wildcards_<values>`."""
    return re.sub(r"_wildcards_.*$", "", job["Comment"]).removeprefix("rule_")


def job_log(job: dict) -> str:
    return Path(job["StdOut"]).read_text()


def test_both_runs_finish(slurm_runs):
    for run in (slurm_runs.by_path, slurm_runs.by_name):
        assert run.returncode == 0, run.log[-6000:]
        done = re.findall(r"(\d+) of (\d+) steps \(100%\) done", run.log)
        assert done and done[-1][0] == done[-1][1], run.log[-3000:]


def test_the_profile_by_name_is_the_installed_copy(slurm_runs):
    assert "Using profile slurm for setting default command line arguments" in slurm_runs.by_name.log
    assert {job.get("Account") for job in slurm_runs.by_name.jobs} == {ACCOUNT}  # set in the installed copy only
    assert ACCOUNT not in {job.get("Account") for job in slurm_runs.by_path.jobs}


def test_every_planned_job_ran_once_as_a_slurm_job(slurm_runs):
    first = {rule: 1 for rule in (target.rule for target in FIRST_RUN)}
    assert slurm_runs.by_path.planned == first
    assert not set(slurm_runs.by_name.planned) & set(first)  # `all` redid nothing of the first run
    assert {"occ_label_build", "render_gaussians", "lidar_train", "lidar_generate", "metrics_score"} <= set(
        slurm_runs.by_name.planned
    )
    for run in (slurm_runs.by_path, slurm_runs.by_name):
        ran = {}
        for job in run.jobs:
            ran[rule_of(job)] = ran.get(rule_of(job), 0) + 1
        assert ran == run.planned, [job.get("Comment") for job in run.jobs]


def test_jobs_ran_in_the_workflow_folder(slurm_runs):
    for job in slurm_runs.by_path.jobs + slurm_runs.by_name.jobs:
        rule = rule_of(job)
        assert job["JobState"] == "COMPLETED", (rule, job["JobState"], job_log(job)[-3000:])
        assert job["WorkDir"] == str(slurm_runs.workdir)
        assert Path(job["StdOut"]).is_relative_to(slurm_runs.workdir / ".snakemake" / "slurm_logs" / f"rule_{rule}")
        assert f"rule {rule}:" in job_log(job)  # the job step ran the rule ...
        assert f"'SLURM_JOB_ID': '{job['JobId']}'" in job_log(job)  # ... inside this very allocation


def test_gpu_rules_get_a_gpu_and_the_rest_none(slurm_runs):
    jobs = slurm_runs.by_path.jobs + slurm_runs.by_name.jobs
    assert GPU_RULES & {rule_of(job) for job in jobs}
    for job in jobs:
        rule = rule_of(job)
        visible = re.findall(r"'CUDA_VISIBLE_DEVICES': '([^']*)'", job_log(job))
        if rule in GPU_RULES:
            assert job["Partition"] == "gpu", rule
            assert job.get("TresPerJob") == "gres:gpu:1", rule
            assert len(visible) == 1 and visible[0] in {str(gpu) for gpu in range(GPUS)}, (rule, visible)
        else:
            assert job["Partition"] == "debug", rule  # the cluster's default partition
            assert "TresPerJob" not in job or "gpu" not in job["TresPerJob"], rule
            assert not visible, (rule, visible)


def test_logs_per_rule_and_scene(slurm_runs):
    """README's promise: each job's output and progress bars are in logs/<rule>/<scene or name>.log
    (a generated chain's in logs/<rule>/<scene>/<chain>.log)."""
    for job in slurm_runs.by_path.jobs + slurm_runs.by_name.jobs:
        rule = rule_of(job)
        logs = list((slurm_runs.workdir / "logs" / rule).rglob("*.log"))
        assert logs, rule
    render_log = (slurm_runs.workdir / "logs" / "render_gaussians" / f"{SCENE}.log").read_text()
    assert "100%" in render_log  # the progress bar


def test_dataset_and_its_truth(slurm_runs):
    dataroot = slurm_runs.workdir / slurm_runs.config["dataset"]["dataroot"]
    version = slurm_runs.config["dataset"]["version"]
    scenes = json.loads((dataroot / version / "scene.json").read_text())
    assert [scene["name"] for scene in scenes] == [SCENE]
    truth = open_store(truth_store(dataroot, SCENE))
    frames_per_s = 12
    assert abs(truth.sizes["frame"] - frames_per_s * slurm_runs.config["synth"]["duration_s"]) <= 2


@pytest.mark.parametrize("target", [t for t in TARGETS if t.stage], ids=lambda t: t.stage)
def test_stores_hold_the_scene_frames(slurm_runs, target):
    dataroot = slurm_runs.workdir / slurm_runs.config["dataset"]["dataroot"]
    truth = open_store(truth_store(dataroot, SCENE))
    store = open_store(slurm_runs.workdir / target.path, target.stage)
    assert store[target.variable].dims == target.dims
    assert store.sizes["frame"] == truth.sizes["frame"]
    np.testing.assert_array_equal(store["timestamp_us"].values, truth["timestamp_us"].values)
    expected_sizes = dict(zip("xyz", OccGrid.from_config(slurm_runs.config).shape))
    expected_sizes.update(cam=6, h=slurm_runs.config["synth"]["image_size"][0], w=slurm_runs.config["synth"]["image_size"][1])
    for dim in store[target.variable].dims:
        if dim in expected_sizes:
            assert store.sizes[dim] == expected_sizes[dim], (target.stage, dim)


def test_metrics_of_every_stage(slurm_runs):
    metrics = sorted((slurm_runs.workdir / "results" / "metrics").glob("*.json"))
    assert len(metrics) >= slurm_runs.by_name.planned["metrics_score"]  # (eval_occ_vae writes one too)
    for path in metrics:
        assert isinstance(json.loads(path.read_text()), dict), path
