"""`uniscene layout-edit`: drop, add, move or re-class objects of a layout store in a frame range.

Edits apply in the order given and the result is a new layout store (stage `layout`, the same
layout as `uniscene layout` writes) that the generators read. Examples:

    uniscene layout-edit --layout L.zarr --list
    uniscene layout-edit --layout L.zarr --out E.zarr --frames 12:48 --drop 3,7 --reclass car truck
    uniscene layout-edit --layout L.zarr --out E.zarr --move a1b2 0 3.5 --add car 15 -3.5 0 8
"""

import argparse
import json

from uniscene.config import resolve_device
from uniscene.errors import UserError
from uniscene.grid import OccGrid
from uniscene.layout.edit import LayoutBoxes, add, describe, drop, frame_range, move, reclass, redraw_objects
from uniscene.viz.bev import save_layout_preview
from uniscene.store import open_store, write_store

HELP = "edit a layout store: drop, add, move or re-class objects"
STAGE = "layout_edit"
OBJECTS = "OBJECTS is comma-separated box indices, instance tokens (or unique prefixes) or class names (see --list)"


class _Edit(argparse.Action):
    """Collects every edit flag, in command-line order, into `args.edits` as (op, values)."""

    def __call__(self, parser, namespace, values, option_string=None):
        edits = list(getattr(namespace, "edits", None) or [])
        edits.append((self.dest, list(values)))
        setattr(namespace, "edits", edits)


def add_arguments(parser):
    parser.add_argument("--layout", required=True, help="layout.zarr to edit")
    parser.add_argument("--out", help="edited layout.zarr to write")
    parser.add_argument("--frames", help="frame range START:STOP (half-open frame indices) the edits apply to; default all")
    parser.add_argument("--list", action="store_true", help="print the objects in the frame range as JSON lines and stop")
    parser.add_argument("--preview", help="PNG preview of the edited layout")
    parser.add_argument("--drop", action=_Edit, nargs=1, metavar="OBJECTS", help=f"remove objects; {OBJECTS}")
    parser.add_argument("--reclass", action=_Edit, nargs=2, metavar=("OBJECTS", "CLASS"), help="give objects another class")
    parser.add_argument("--move", action=_Edit, nargs="+", metavar="ARG",
                        help="OBJECTS DX DY [TURN_DEG]: shift by metres in the ego frame of the range's first frame, turn about the centre")
    parser.add_argument("--add", action=_Edit, nargs="+", metavar="ARG",
                        help="CLASS X Y [YAW_DEG [SPEED_MPS]]: a new object at an ego-frame position of the range's first "
                             "frame, driving along its heading at SPEED_MPS (default 0, parked)")
    parser.set_defaults(edits=[])


def _numbers(op: str, values: list, names: str) -> list[float]:
    try:
        return [float(v) for v in values]
    except ValueError:
        raise UserError(f"--{op} {' '.join(values)}: {names} must be numbers") from None


def apply_edit(boxes: LayoutBoxes, op: str, values: list, frames: slice) -> LayoutBoxes:
    """One command-line edit (op, values) applied to `boxes`."""
    if op == "drop":
        return drop(boxes, values[0], frames)
    if op == "reclass":
        return reclass(boxes, values[0], frames, values[1])
    if op == "move":
        if len(values) not in (3, 4):
            raise UserError(f"--move {' '.join(values)}: give OBJECTS DX DY [TURN_DEG]")
        offset = _numbers(op, values[1:], "DX DY TURN_DEG")
        return move(boxes, values[0], frames, offset[:2], offset[2] if len(offset) == 3 else 0.0)
    if len(values) not in (3, 4, 5):
        raise UserError(f"--add {' '.join(values)}: give CLASS X Y [YAW_DEG [SPEED_MPS]]")
    x_m, y_m, *rest = _numbers(op, values[1:], "X Y YAW_DEG SPEED_MPS")
    return add(boxes, frames, values[0], (x_m, y_m), *rest)


def main(args, config):
    dataset = open_store(args.layout, stage="layout").load()
    boxes = LayoutBoxes.from_dataset(dataset)
    frames = frame_range(args.frames, boxes.num_frames)
    if args.list:
        for row in describe(boxes, frames):
            print(json.dumps(row))
        return
    if not args.edits:
        raise UserError("no edit given: add --drop, --move, --reclass or --add (or --list to see the objects)")
    if not args.out:
        raise UserError("--out is required to write the edited layout store")
    grid = OccGrid.from_attrs(dataset.attrs, args.layout)
    for op, values in args.edits:
        boxes = apply_edit(boxes, op, values, frames)

    layout = redraw_objects(dataset["layout"].values, boxes, grid, rule=dataset.attrs.get("box_rule", "overlap"),
                            device=resolve_device(config))
    edited = dataset.drop_vars([name for name in dataset.data_vars if name.startswith("box_")]).drop_dims("box", errors="ignore")
    edited = edited.assign(
        layout=(("frame", "channel", "x", "y"), layout),
        box_center=(("frame", "box", "xyz"), boxes.center),
        box_size=(("frame", "box", "xyz"), boxes.size),
        box_rotation=(("frame", "box", "quat"), boxes.rotation),
        box_valid=(("frame", "box"), boxes.valid),
        box_class=(("frame", "box"), boxes.klass),
        box_instance_token=(("box",), boxes.instance_token),
    )
    edits = [{"op": op, "args": values, "frames": f"{frames.start}:{frames.stop}"} for op, values in args.edits]
    edited.attrs["edits"] = list(dataset.attrs.get("edits", [])) + edits  # every edit since `uniscene layout`
    if args.preview:
        save_layout_preview(args.preview, layout, grid, sorted({frames.start, (frames.start + frames.stop - 1) // 2, frames.stop - 1}))
    subset = {**config, "edits": edits}
    write_store(args.out, edited, stage="layout", config_subset=subset, inputs=[args.layout], frame_chunk=8)
    print(f"layout-edit: {len(edits)} edit(s) on frames {frames.start}:{frames.stop} -> {args.out}")
