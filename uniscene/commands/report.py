"""`uniscene report <part>`: the report's pictures and tables that no stage draws itself.

    uniscene report occupancy --occupancy A.zarr B.zarr --out views.png    # 3D view + height slices, a row per store
    uniscene report lidar --frames F.zarr --lidar A.zarr B.zarr --out bev.png  # sweeps beside the recorded one
    uniscene report training --models results/models/occ_vae ... --out curves.png
    uniscene report metrics --metrics results/metrics/*.json --out metrics.html
    uniscene report times --logs logs --out stage_times.html                 # each stage's share, also printed

Rules in rules/report.smk run these for `snakemake --report`; `make demo` prints the stage times.
"""

from pathlib import Path

from uniscene.errors import UserError

HELP = "draw the report's figures: occupancy 3D views, LiDAR beside the recorded sweep, training curves, metrics, stage times"
PARTS = ("occupancy", "lidar", "training", "metrics", "times")


def config_stage(args) -> str:
    return "report"


def add_arguments(parser):
    parser.add_argument("part", choices=PARTS, help="which figure")
    parser.add_argument("--occupancy", nargs="+", metavar="STORE", help="occupancy: occ_label / occ_gen stores of one scene")
    parser.add_argument("--frames", help="lidar: the scene's frames.zarr (the recorded sweeps)")
    parser.add_argument("--lidar", nargs="+", metavar="STORE", help="lidar: lidar stores of the scene (label or generated chain)")
    parser.add_argument("--frame", type=int, help="occupancy, lidar: the frame to show (default: the middle one)")
    parser.add_argument("--models", nargs="+", metavar="DIR", help="training: trained model folders")
    parser.add_argument("--metrics", nargs="+", metavar="JSON", help="metrics: results/metrics/<stage>.json files")
    parser.add_argument("--logs", default="logs", help="times: the folder of the rules' benchmark files")
    parser.add_argument("--out", required=True, help="the PNG or HTML to write")


def _required(args, *names):
    missing = [f"--{n}" for n in names if not getattr(args, n)]
    if missing:
        raise UserError(f"`uniscene report {args.part}` needs {', '.join(missing)}")


def _chain_title(store) -> str:
    """'label' or 'generated', from what wrote the store, and its scene."""
    source = "generated" if store.attrs["uniscene"]["stage"] == "occ_gen" or store.attrs.get("source") == "generated" else "label"
    return f"{store.attrs['scene']} {source}"


def _frame(args, num_frames: int) -> int:
    frame = num_frames // 2 if args.frame is None else args.frame
    if not 0 <= frame < num_frames:
        raise UserError(f"--frame {frame} is outside the stores' {num_frames} frames")
    return frame


def main(args, config):
    from uniscene import stage_times
    from uniscene.grid import OccGrid
    from uniscene.store import open_store
    from uniscene.viz import report_figures

    out = Path(args.out)
    if args.part == "occupancy":
        _required(args, "occupancy")
        grid = OccGrid.from_config(config)
        stores = [open_store(path) for path in args.occupancy]
        for path, store in zip(args.occupancy, stores):
            grid.check_store(store, path)
        frame = _frame(args, min(store.sizes["frame"] for store in stores))
        views = {_chain_title(store): store["semantics"][frame].values for store in stores}
        report_figures.save_occupancy_views(out, views, grid, frame)
    elif args.part == "lidar":
        _required(args, "frames", "lidar")
        from uniscene.data.files import read_sweep
        from uniscene.models.lidar.inputs import recorded_sweep_paths

        frames = open_store(args.frames, "frames")
        stores = [open_store(path, "lidar") for path in args.lidar]
        frame = _frame(args, frames.sizes["frame"])
        sweeps = {"recorded": read_sweep(recorded_sweep_paths(frames)[frame])}
        for store in stores:
            offsets = store["frame_offsets"].values
            sweeps[f"{_chain_title(store)} ({store.attrs.get('method', 'learned')})"] = store["points"][offsets[frame]:offsets[frame + 1]].values
        report_figures.save_lidar_bev(out, sweeps, frame)
    elif args.part == "training":
        _required(args, "models")
        report_figures.save_training_curves(out, args.models)
    elif args.part == "metrics":
        _required(args, "metrics")
        report_figures.save_metrics_tables(out, args.metrics)
    else:
        stages = stage_times.read_stage_times(args.logs)
        print(stage_times.as_text(stages))
        from uniscene.store import atomic_file

        with atomic_file(out) as tmp:
            tmp.write_text(stage_times.as_html(stages))
