"""`uniscene install-profile`: the profile lands where Snakemake looks a bare name up, never over one.

Each command runs as a subprocess with XDG_CONFIG_HOME (Snakemake's user config folder) in a
temporary folder; the Slurm workflow test (tests/test_slurm_workflow.py) runs the installed
profile for real.
"""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def uniscene(args: list, config_home: Path, extra_env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """`uniscene ARGS` with Snakemake's user config folder at config_home/snakemake."""
    env = {**os.environ, **(extra_env or {}), "XDG_CONFIG_HOME": str(config_home)}
    return subprocess.run(
        [sys.executable, "-m", "uniscene.cli", *args], env=env, capture_output=True, text=True, timeout=120, **kwargs
    )


def test_installs_where_snakemake_resolves_the_bare_name(tmp_path):
    config_home = tmp_path / "config"
    # from a folder with no config.yaml: the command reads no workflow config
    out = uniscene(["install-profile", "slurm"], config_home, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    installed = config_home / "snakemake" / "slurm"
    assert str(installed) in out.stdout
    assert (installed / "config.yaml").read_bytes() == (REPO / "profiles" / "slurm" / "config.yaml").read_bytes()
    assert not [p.name for p in installed.parent.iterdir() if p.name.startswith(".")]  # no temporary left
    # Snakemake's own lookup of `--profile slurm`, from a folder that has no profile of that name
    resolve = (
        "from snakemake.cli import get_profile_dir; folder, config = get_profile_dir('slurm'); print(folder)"
    )
    env = {**os.environ, "XDG_CONFIG_HOME": str(config_home)}
    found = subprocess.run(
        [sys.executable, "-c", resolve], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True
    )
    assert found.stdout.strip() == str(installed)


def test_site_installs_in_the_site_folder(tmp_path):
    """--site: the folder Snakemake searches after the user's (the first of $XDG_CONFIG_DIRS, by default /etc/xdg)."""
    site = tmp_path / "site"
    out = uniscene(["install-profile", "slurm", "--site"], tmp_path / "config", extra_env={"XDG_CONFIG_DIRS": str(site)})
    assert out.returncode == 0, out.stderr
    assert (site / "snakemake" / "slurm" / "config.yaml").is_file()
    assert not (tmp_path / "config").exists()


def test_never_overwrites_an_existing_profile(tmp_path):
    config_home = tmp_path / "config"
    own = config_home / "snakemake" / "slurm"
    own.mkdir(parents=True)
    (own / "config.yaml").write_text("executor: slurm\njobs: 7\n")

    out = uniscene(["install-profile", "slurm"], config_home)
    assert out.returncode == 2
    assert str(own) in out.stderr and "--force" in out.stderr
    assert "Traceback" not in out.stderr
    assert (own / "config.yaml").read_text() == "executor: slurm\njobs: 7\n"

    kept = uniscene(["install-profile", "slurm", "--if-missing"], config_home)  # what `make setup` runs
    assert kept.returncode == 0, kept.stderr
    assert "kept" in kept.stdout
    assert (own / "config.yaml").read_text() == "executor: slurm\njobs: 7\n"

    forced = uniscene(["install-profile", "slurm", "--force"], config_home)
    assert forced.returncode == 0, forced.stderr
    assert (own / "config.yaml").read_bytes() == (REPO / "profiles" / "slurm" / "config.yaml").read_bytes()


def test_unwritable_folder_is_one_message(tmp_path):
    config_home = tmp_path / "config"
    config_home.mkdir()
    (config_home / "snakemake").write_text("")  # a file where Snakemake's config folder should be
    out = uniscene(["install-profile", "slurm"], config_home)
    assert out.returncode == 2
    assert str(config_home / "snakemake") in out.stderr and "Traceback" not in out.stderr
    assert [p.name for p in config_home.iterdir()] == ["snakemake"]


def test_profiles_ship_in_the_wheel(tmp_path):
    """A non-editable install finds the profiles: they are package data, not files of the checkout."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "profiles", source / "profiles")
    # the package as a checkout has it: uniscene/profiles is a link to ../profiles
    shutil.copytree(REPO / "uniscene", source / "uniscene", symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(source), "-w", str(tmp_path)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("uniscene-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for profile in ("local", "slurm"):
        assert f"uniscene/profiles/{profile}/config.yaml" in names, names

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )
    config_home = tmp_path / "config"
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = uniscene(["install-profile", "slurm"], config_home, extra_env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    imported = subprocess.run(
        [sys.executable, "-c", "import uniscene; print(uniscene.__file__)"], env=env, cwd=tmp_path,
        capture_output=True, text=True, check=True,
    )
    assert Path(imported.stdout.strip()).is_relative_to(target)  # the wheel's copy ran, not the checkout's
    assert (config_home / "snakemake" / "slurm" / "config.yaml").read_bytes() == (
        REPO / "profiles" / "slurm" / "config.yaml"
    ).read_bytes()
