"""The report's pictures and tables beyond each stage's own preview: a scene's occupancy in 3D and in
height slices (label and generated), generated LiDAR beside the recorded sweep, every model's
training curves, and every stage's metrics as tables.

Each `save_*` writes one file atomically (uniscene.store.atomic_file) and returns its path.
"""

import html
import json
from pathlib import Path

import numpy as np

from uniscene.classes import FREE, OCC_CLASS_NAMES, OCC_COLORS
from uniscene.errors import UserError
from uniscene.grid import OccGrid
from uniscene.store import atomic_file
from uniscene.viz.occupancy_3d import height_slices_rgb, occupancy_3d_rgb

BEV_REACH_M = 51.2  # the LiDAR metrics' BEV extent (uniscene/metrics/lidar.py)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    plt = _pyplot()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return Path(path)


def save_occupancy_views(path, occupancies: dict, grid: OccGrid, frame: int) -> Path:
    """One row per occupancy ({title: semantics [X, Y, Z] uint8}): the 3D view, then BEV slices at three heights."""
    from matplotlib.patches import Patch

    plt = _pyplot()
    heights = (0.0, 1.0, 2.5)
    fig, axes = plt.subplots(len(occupancies), 1 + len(heights), figsize=(16, 4.4 * len(occupancies)), squeeze=False,
                             gridspec_kw={"width_ratios": [2.2] + [1] * len(heights)})
    present = set()
    for row, (title, semantics) in zip(axes, occupancies.items()):
        present |= set(np.unique(semantics[semantics != FREE]).tolist())
        row[0].imshow(occupancy_3d_rgb(semantics, grid, width_px=900))
        row[0].set_title(f"{title}, frame {frame}: 3D view from behind the ego", fontsize=9)
        for ax, (height, rgb) in zip(row[1:], height_slices_rgb(semantics, grid, heights)):
            ax.imshow(rgb[::-1, ::-1], interpolation="nearest")  # forward up, left to the left
            ax.set_title(f"layer at z = {height:.1f} m", fontsize=9)
        for ax in row:
            ax.axis("off")
    handles = [Patch(color=OCC_COLORS[c] / 255, label=OCC_CLASS_NAMES[c]) for c in sorted(present)]
    fig.legend(handles=handles, loc="lower center", ncol=9, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return _save(fig, path)


def save_lidar_bev(path, sweeps: dict, frame: int) -> Path:
    """Sweeps side by side seen from above ({title: points [N, >= 3] in the sensor frame}), within the metrics' extent."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(sweeps), figsize=(5.2 * len(sweeps), 5.4), squeeze=False)
    for ax, (title, points) in zip(axes[0], sweeps.items()):
        ax.scatter(-points[:, 1], points[:, 0], s=0.15, c=points[:, 2], cmap="viridis", vmin=-2.0, vmax=4.0, linewidths=0)
        ax.set_xlim(-BEV_REACH_M, BEV_REACH_M)
        ax.set_ylim(-BEV_REACH_M, BEV_REACH_M)
        ax.set_aspect("equal")
        ax.set_facecolor("black")
        ax.set_title(f"{title}: frame {frame}, {len(points):,} points", fontsize=9)
        ax.set_xlabel("-y (m, right)", fontsize=7)
        ax.set_ylabel("x (m, forward)", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    return _save(fig, path)


def training_history(model_dir) -> list:
    """A trained model folder's loss records [{step, losses: {name: value}}], from training.json or history.jsonl."""
    model_dir = Path(model_dir)
    summary = model_dir / "training.json"
    if summary.is_file():
        history = json.loads(summary.read_text()).get("history")
        if history:
            return history
    lines = model_dir / "history.jsonl"
    if lines.is_file():
        return [json.loads(line) for line in lines.read_text().splitlines() if line.strip()]
    raise UserError(f"model folder {model_dir} has no loss history (training.json's history or history.jsonl): "
                    f"retrain it with this version of uniscene")


def save_training_curves(path, model_dirs) -> Path:
    """Every loss term against the step, a panel per model (log scale where a term stays positive)."""
    plt = _pyplot()
    model_dirs = [Path(m) for m in model_dirs]
    fig, axes = plt.subplots(1, len(model_dirs), figsize=(4.6 * len(model_dirs), 3.8), squeeze=False)
    for ax, model_dir in zip(axes[0], model_dirs):
        history = training_history(model_dir)
        steps = np.array([record["step"] for record in history])
        for name in history[-1]["losses"]:
            values = np.array([record["losses"].get(name, np.nan) for record in history], float)
            ax.plot(steps, values, label=name, linewidth=1.2)
        if all(v > 0 for record in history for v in record["losses"].values()):
            ax.set_yscale("log")
        ax.set_title(model_dir.name, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.legend(fontsize=7)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _flatten(value, prefix=""):
    """(dotted key, number or short text) for every leaf of a metrics JSON; long lists are summarised."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list) and len(value) > 8:
        yield prefix, f"[{len(value)} values]"
    elif isinstance(value, float):
        yield prefix, f"{value:.4g}"
    else:
        yield prefix, str(value)


def save_metrics_tables(path, metric_files) -> Path:
    """One HTML page: a table per results/metrics/<stage>.json, every figure under its dotted key."""
    sections = []
    for metric_file in metric_files:
        metric_file = Path(metric_file)
        try:
            payload = json.loads(metric_file.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise UserError(f"metrics file {metric_file} cannot be read ({error}): rerun its metrics job") from None
        rows = "".join(f"<tr><td><code>{html.escape(key)}</code></td><td>{html.escape(text[:300])}</td></tr>"
                       for key, text in _flatten(payload) if key != "protocol")
        sections.append(f"<h2 id='{metric_file.stem}'>{html.escape(metric_file.stem)}</h2><table>{rows}</table>")
    index = " · ".join(f"<a href='#{Path(m).stem}'>{Path(m).stem}</a>" for m in metric_files)
    page = ("<!doctype html><meta charset='utf-8'><title>uniscene metrics</title><style>body{font-family:sans-serif}"
            "td{padding:2px 10px;border-bottom:1px solid #ddd;font-size:13px}</style>"
            f"<h1>Every stage's metrics</h1><p>{index}</p>{''.join(sections)}")
    with atomic_file(path) as tmp:
        Path(tmp).write_text(page)
    return Path(path)
