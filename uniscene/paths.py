"""Default paths of the workflow's outputs (docs/architecture.md, 'The stages'); one definition each."""

from pathlib import Path


def scene_dir(results: str | Path, scene: str) -> Path:
    return Path(results) / "scenes" / scene


def scene_store(results: str | Path, scene: str, name: str) -> Path:
    """e.g. scene_store("results", "synth-0000", "frames") -> results/scenes/synth-0000/frames.zarr"""
    return scene_dir(results, scene) / f"{name}.zarr"


def model_dir(results: str | Path, name: str) -> Path:
    return Path(results) / "models" / name


def metrics_path(results: str | Path, stage: str) -> Path:
    return Path(results) / "metrics" / f"{stage}.json"


def truth_store(dataroot: str | Path, scene: str) -> Path:
    """Ground truth that the synthetic dataset writes beside itself."""
    return Path(dataroot) / "truth" / f"{scene}.zarr"
