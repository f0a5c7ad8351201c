"""Every store's layout, declared once: variables, dims, dtypes and required attributes.

`uniscene.store.write_store` checks each dataset against its stage's layout before writing (a
mismatch is a programming error, `LayoutError`); `open_store` checks what it reads (a mismatch
is a store written by another version: `UserError`). The variable tables of docs/stores.md are
generated from here (`python -m uniscene.store_layouts docs/stores.md`; a test checks they agree).

Letters: T frames, S sweeps, V cameras, B instance slots, X Y Z grid, C channels, H W pixels, N points.
"""

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from uniscene.classes import LAYOUT_CHANNEL_NAMES


class LayoutError(ValueError):
    """A dataset does not match its stage's declared layout (a bug in the writer, not bad user input)."""


# Dimensions whose size is fixed wherever they appear.
FIXED_DIM_SIZES = {"row": 4, "col": 4, "k_row": 3, "k_col": 3, "quat": 4, "xyz": 3, "hw": 2}
STR = "str"  # variable-length UTF-8 strings (written as object, read back as numpy's StringDType)


@dataclass(frozen=True)
class Codec:
    """The Blosc compression of a variable's chunks (a crc32c checksum follows it); docs/stores.md says why each."""

    cname: str  # zstd | lz4 | lz4hc | blosclz | zlib
    clevel: int  # 0..9
    shuffle: str = "shuffle"  # shuffle (bytes) | bitshuffle | noshuffle

    def __str__(self) -> str:
        return f"{self.cname}-{self.clevel}" + ("" if self.shuffle == "shuffle" else f" {self.shuffle}")


# Chosen by benchmarks/bench_store.py (docs/stores.md, Codecs): per kind of array, the fastest to disk of the codecs
# storing at most a quarter more than the smallest (or under 1 % of the raw bytes).
DEFAULT_CODEC = Codec("zstd", 5)  # small arrays (poses, times, boxes): size over speed, both negligible
CLASS_MAP = Codec("zstd", 3)  # uint8 classes per pixel: ~117x
DEPTH = Codec("zstd", 1, "bitshuffle")  # float16 depth: 3.8x at 5x zstd-5's speed
ALPHA = Codec("zstd", 1)  # float16 alpha: 5.1x
OCCUPANCY = Codec("zstd", 3)  # uint8 voxel classes: ~120x
MASK = Codec("zstd", 3, "bitshuffle")  # bool voxels and layout cells, a bit each before zstd: ~96x
POINTS = Codec("lz4hc", 5)  # float32 points: 2.9x, decoded at ~2 GB/s
RGB = Codec("lz4", 5, "bitshuffle")  # decoded images barely compress: the fastest


@dataclass(frozen=True)
class Var:
    dims: tuple
    dtype: str  # numpy dtype name, or STR
    meaning: str = ""
    optional: bool = False  # a writer may leave it out (said in `meaning`)
    coordinate: bool = False  # an xarray coordinate rather than a data variable
    codec: Codec = DEFAULT_CODEC  # strings use zarr's own variable-length codec instead
    chunk_sizes: dict = field(default_factory=dict)  # dim -> chunk length for dims other than frame (default: whole)


@dataclass(frozen=True)
class StoreLayout:
    stage: str
    file: str  # the store's name under results/ (docs)
    variables: dict  # name -> Var
    attrs: dict  # required root attribute (one a reader needs) -> meaning
    optional_attrs: dict = field(default_factory=dict)  # written by the stage, informational
    dim_sizes: dict = field(default_factory=dict)  # dims of fixed size in this store only (e.g. layout channels)
    on_grid: bool = False  # grid_range_m / voxel_size_m attributes (OccGrid.to_attrs) give the x y z dims

    def check(self, dataset, describe: str, frame_vars_only: bool = False) -> None:
        """LayoutError naming the variable unless `dataset` matches (`frame_vars_only`: an appended part of the frames)."""
        present = {name: dataset[name] for name in dataset.variables if name not in dataset.dims or name in self.variables}
        wanted = {n: v for n, v in self.variables.items() if not frame_vars_only or "frame" in v.dims}
        extra = sorted(set(present) - set(wanted))
        missing = sorted(n for n, v in wanted.items() if n not in present and not (v.optional or frame_vars_only))
        if extra or missing:
            raise LayoutError(
                f"{describe} does not match the '{self.stage}' layout of uniscene/store_layouts.py: "
                + "; ".join(filter(None, [extra and f"undeclared variables {extra}", missing and f"missing variables {missing}"]))
            )
        sizes = {**FIXED_DIM_SIZES, **self.dim_sizes}
        for name, array in present.items():
            var = self.variables[name]
            if tuple(array.dims) != var.dims:
                raise LayoutError(f"{describe}: variable '{name}' has dims {tuple(array.dims)}, the '{self.stage}' layout {var.dims}")
            if not dtype_matches(array.dtype, var.dtype):
                raise LayoutError(f"{describe}: variable '{name}' has dtype {array.dtype}, the '{self.stage}' layout {var.dtype}")
            for dim, n in zip(array.dims, array.shape):
                if dim in sizes and n != sizes[dim]:
                    raise LayoutError(f"{describe}: variable '{name}' has {n} along '{dim}', the '{self.stage}' layout {sizes[dim]}")
            if var.coordinate != (name in dataset.coords):
                raise LayoutError(f"{describe}: '{name}' must be a {'coordinate' if var.coordinate else 'data variable'}")
        if not frame_vars_only:
            absent = sorted(set(self.attrs) - set(dataset.attrs))
            if absent:
                raise LayoutError(f"{describe} lacks the attributes {absent} of the '{self.stage}' layout")


def dtype_matches(dtype, declared: str) -> bool:
    dtype = np.dtype(dtype)
    return dtype.kind in "OUT" if declared == STR else dtype == np.dtype(declared)


# ------------------------------------------------------------------------------------ shared parts

_BOXES = {
    "box_center": Var(("frame", "box", "xyz"), "float64", "world frame"),
    "box_size": Var(("frame", "box", "xyz"), "float32", "(w, l, h) as nuScenes"),
    "box_rotation": Var(("frame", "box", "quat"), "float64", "world frame, (w, x, y, z)"),
}
_GRID_ATTRS = {"grid_range_m": "the grid's range [x_min y_min z_min x_max y_max z_max] m (`OccGrid.to_attrs`)",
               "voxel_size_m": "the grid's voxel edge, m"}
_OCCUPANCY = {
    "semantics": Var(("frame", "x", "y", "z"), "uint8", "class 0..16, 17 free (`classes`)", codec=OCCUPANCY),
    "mask_lidar": Var(("frame", "x", "y", "z"), "bool", "voxels the LiDAR observed", codec=MASK),
    "mask_camera": Var(("frame", "x", "y", "z"), "bool", "voxels the cameras observed", codec=MASK),
    "timestamp_us": Var(("frame",), "int64", "the frames of frames.zarr"),
}

LAYOUTS = {
    "frames": StoreLayout(
        "frames", "scenes/<scene>/frames.zarr",
        {
            "timestamp_us": Var(("frame",), "int64", "CAM_FRONT capture time"),
            "is_keyframe": Var(("frame",), "bool", "the capture belongs to a 2 Hz sample"),
            "sample_token": Var(("frame",), STR, "the nuScenes sample of the CAM_FRONT sample_data"),
            "frame_token": Var(("frame",), STR, "the CAM_FRONT sample_data token of the frame"),
            "world_from_ego": Var(("frame", "row", "col"), "float64", "logged ego pose of the CAM_FRONT capture"),
            "cam_image_path": Var(("frame", "cam"), STR, "each camera's capture nearest in time"),
            "cam_timestamp_us": Var(("frame", "cam"), "int64", "its time"),
            "cam_sample_data_token": Var(("frame", "cam"), STR, "sample_data token of each camera's capture"),
            "cam_intrinsics": Var(("frame", "cam", "k_row", "k_col"), "float64", "K at the image's own size"),
            "cam_image_size": Var(("cam", "hw"), "int64", "(height, width) of each camera's images"),
            "ego_from_cam": Var(("frame", "cam", "row", "col"), "float64", "OpenCV camera axes"),
            "lidar_sweep_index": Var(("frame",), "int64", "index into the sweep arrays of the nearest LIDAR_TOP sweep"),
            "sweep_path": Var(("sweep",), STR, "every LIDAR_TOP sweep of the scene, in time order"),
            "sweep_token": Var(("sweep",), STR, "LIDAR_TOP sample_data token"),
            "sweep_timestamp_us": Var(("sweep",), "int64", "sweep time"),
            "sweep_is_keyframe": Var(("sweep",), "bool", "the sweep belongs to a 2 Hz sample"),
            "sweep_lidarseg_path": Var(("sweep",), STR, '"" where the sweep has no lidarseg labels'),
            "world_from_sweep_ego": Var(("sweep", "row", "col"), "float64", "ego pose of the sweep"),
            "ego_from_lidar": Var(("sweep", "row", "col"), "float64", "LIDAR_TOP calibration"),
            **{name: Var(var.dims, var.dtype, var.meaning + ", interpolated to the frame time") for name, var in _BOXES.items()},
            "box_velocity": Var(("frame", "box", "xyz"), "float32", "world frame, m/s"),
            "box_valid": Var(("frame", "box"), "bool", "the instance exists at that frame"),
            **{f"sweep_{name}": Var(("sweep",) + var.dims[1:], var.dtype, "as " + name + ", at every sweep's time")
               for name, var in {**_BOXES, "box_velocity": Var(("frame", "box", "xyz"), "float32"),
                                 "box_valid": Var(("frame", "box"), "bool")}.items()},
            "box_instance_token": Var(("box",), STR, "nuScenes instance token"),
            "box_category": Var(("box",), STR, "full nuScenes category name"),
            "box_class": Var(("box",), "int8", "detection class 0..9 (`classes.DETECTION_CLASS_NAMES`), -1 none"),
            "box_occ_class": Var(("box",), "uint8", "occupancy class 0..16 of the category"),
        },
        {"scene": "scene name", "dataroot": "dataset root the paths are relative to", "version": "nuScenes version folder"},
        optional_attrs={"camera_names": "the cam dim's cameras (`sensors.CAMERA_NAMES`)",
                        "location": "the log's map location (absent: the dataset has no map for it)"},
    ),
    "occ_label": StoreLayout(
        "occ_label", "scenes/<scene>/occ_label.zarr", dict(_OCCUPANCY),
        {"scene": "scene name", **_GRID_ATTRS},
        optional_attrs={"backend": "surface backend (splat / poisson / nksr)", "device": "cpu / cuda",
                        "camera_ray_stride_px": "mask_camera's ray stride used", "map_areas": "whether the map's areas were used"},
        on_grid=True,
    ),
    "occ_gen": StoreLayout(
        "occ_gen", "scenes/<scene>/gen/occ_gen.zarr",
        {**_OCCUPANCY, "clip": Var(("frame",), "int64", "the clip in which each frame was generated")},
        {"scene": "scene name", **_GRID_ATTRS, "sampler": "diffusers scheduler", "inference_steps": "sampling steps",
         "guidance_scale": "classifier-free guidance scale", "seed": "sampling seed"},
        on_grid=True,
    ),
    "layout": StoreLayout(
        "layout", "scenes/<scene>/layout.zarr",
        {
            "layout": Var(("frame", "channel", "x", "y"), "bool", "18 channels (`classes.LAYOUT_CHANNEL_NAMES`) on the grid's x-y plane",
                          codec=MASK),
            "timestamp_us": Var(("frame",), "int64", "the frames of frames.zarr"),
            "world_from_ego": Var(("frame", "row", "col"), "float64", "the frame's ego pose (as frames.zarr)"),
            **_BOXES,
            "box_valid": Var(("frame", "box"), "bool", "drawn in that frame"),
            "box_class": Var(("frame", "box"), "int8", "detection class 0..9 per frame (an edit may re-class a range), -1 none"),
            "box_instance_token": Var(("box",), STR, "frames.zarr's token; `layout-edit --add` makes new ones"),
        },
        {"scene": "scene name", **_GRID_ATTRS, "channel_names": "`classes.LAYOUT_CHANNEL_NAMES`"},
        optional_attrs={"map_name": "map location", "dataroot": "dataset root", "box_rule": "overlap / center",
                        "timing": "device, map raster seconds, frames/s",
                        "edits": "every edit applied since `uniscene layout` (op, args, frames)"},
        dim_sizes={"channel": len(LAYOUT_CHANNEL_NAMES)},
        on_grid=True,
    ),
    "render": StoreLayout(
        "render", "scenes/<scene>/render.zarr",
        {
            "semantic": Var(("frame", "cam", "h", "w"), "uint8", "render class 0..19 (`classes.RENDER_CLASS_NAMES`), 255 background",
                            codec=CLASS_MAP),
            "depth": Var(("frame", "cam", "h", "w"), "float16", "camera z-depth, m, alpha-normalised; 0 where alpha is 0", codec=DEPTH),
            "alpha": Var(("frame", "cam", "h", "w"), "float16", "accumulated opacity", codec=ALPHA),
            "intrinsics": Var(("frame", "cam", "k_row", "k_col"), "float64", "K at the render size"),
            "timestamp_us": Var(("frame",), "int64", "the frames of frames.zarr"),
        },
        {"scene": "scene name", "source": "label / generated"},
        optional_attrs={"backend": "gsplat / torch", "device": "cpu / cuda", "camera_names": "the cam dim's cameras",
                        "class_names": "`classes.RENDER_CLASS_NAMES`", "background": "255", "render_seconds": "seconds of the render loop (reads and writes overlapped with it)",
                        "frames_per_second": "frames over render_seconds"},
    ),
    "lidar": StoreLayout(
        "lidar", "scenes/<scene>/lidar.zarr",
        {
            "points": Var(("point", "channel"), "float32", "x, y, z (LIDAR_TOP sensor frame), intensity, ring", codec=POINTS,
                          chunk_sizes={"point": 1 << 20}),  # 20 MB chunks: compressed in parallel, read in part
            "channel": Var(("channel",), STR, "the column names of points", coordinate=True),
            "frame_offsets": Var(("frame_edge",), "int64", "T + 1 offsets into points"),
            "timestamp_us": Var(("frame",), "int64", "the frames of frames.zarr"),
            "ego_from_sensor": Var(("frame", "row", "col"), "float64", "the sensor pose of each frame in its ego frame"),
        },
        {"scene": "scene name", "source": "label / generated", "sensor": "LIDAR_TOP"},
        optional_attrs={"method": "learned"},
        dim_sizes={"channel": 5},
    ),
    "video": StoreLayout(
        "video", "scenes/<scene>/video.zarr (label chain), variants/video_no_crossview.zarr, <chain>/video.zarr",
        {
            "rgb": Var(("frame", "cam", "h", "w", "channel"), "uint8", "generated RGB images", codec=RGB),
            "intrinsics": Var(("frame", "cam", "k_row", "k_col"), "float64", "K at the video size"),
            "timestamp_us": Var(("frame",), "int64", "the frames of frames.zarr"),
        },
        {"scene": "scene name", "source": "label / generated (the render store's)", "camera_names": "the cam dim's cameras",
         "cross_view": "whether the model had cross-view attention", "first_frame": "whether the real first images were read",
         "sampler": "diffusers scheduler", "inference_steps": "sampling steps per clip", "guidance_scale": "classifier-free guidance scale",
         "seed": "sampling seed"},
        optional_attrs={"clip_frames": "frames per clip", "context_frames": "frames each later clip is conditioned on",
                        "frames": "the frame range generated, START:STOP", "device": "cpu / cuda",
                        "generate_seconds": "seconds of the generation loop (writes overlapped)", "seconds_per_clip": "generate_seconds per clip"},
        dim_sizes={"channel": 3},
    ),
    "synth_truth": StoreLayout(
        "synth_truth", "<dataroot>/truth/<scene>.zarr (synthetic dataset only)",
        {
            "timestamp_us": Var(("frame",), "int64", "CAM_FRONT capture times"),
            "world_from_ego": Var(("frame", "row", "col"), "float64", "true ego pose"),
            "semantics": Var(("frame", "x", "y", "z"), "uint8", "true occupancy (optional: the hand-made dataset has none)", optional=True,
                             codec=OCCUPANCY),
            "mask_camera": Var(("frame", "x", "y", "z"), "bool", "voxels the cameras see (optional, as semantics)", optional=True,
                               codec=MASK),
            **_BOXES,
            "box_present": Var(("frame", "box"), "bool", "the instance is within range"),
            "box_instance_token": Var(("box",), STR, "nuScenes instance token"),
            "box_category": Var(("box",), STR, "full nuScenes category name"),
            "cam_semantics": Var(("frame", "cam", "h", "w"), "uint8", "true class per pixel, 255 sky (optional)", optional=True,
                                 codec=CLASS_MAP),
            "cam_depth": Var(("frame", "cam", "h", "w"), "float32", "true depth, m, 0 sky (optional)", optional=True, codec=DEPTH),
        },
        {},
        optional_attrs={"scene": "scene name", "location": "map location", "camera_names": "the cam dim's cameras",
                        **_GRID_ATTRS},
        on_grid=True,
    ),
}


def layout_of(stage: str) -> StoreLayout:
    if stage not in LAYOUTS:
        raise LayoutError(f"no store layout declared for stage '{stage}' (uniscene/store_layouts.py declares {sorted(LAYOUTS)})")
    return LAYOUTS[stage]


# ------------------------------------------------------------------------------------------- docs


def markdown_table(stage: str) -> str:
    """The variable and attribute tables of one layout, as docs/stores.md shows them."""
    layout = LAYOUTS[stage]
    rows = ["| variable | dims | dtype | codec | meaning |", "| --- | --- | --- | --- | --- |"]
    for name, var in layout.variables.items():
        note = " (coordinate)" if var.coordinate else ""
        codec = "vlen-utf8" if var.dtype == STR else str(var.codec)
        rows.append(f"| {name} | {','.join(var.dims)} | {var.dtype} | {codec} | {var.meaning}{note} |")
    rows.append("")
    rows.append("| attribute | required | meaning |")
    rows.append("| --- | --- | --- |")
    rows += [f"| {name} | yes | {meaning} |" for name, meaning in layout.attrs.items()]
    rows += [f"| {name} | no | {meaning} |" for name, meaning in layout.optional_attrs.items()]
    return "\n".join(rows)


_BLOCK = re.compile(r"(<!-- layout: (\w+) -->\n).*?(<!-- end layout -->)", re.S)


def render_docs(text: str) -> str:
    """`text` with every `<!-- layout: STAGE -->` ... `<!-- end layout -->` block regenerated."""
    return _BLOCK.sub(lambda m: f"{m.group(1)}{markdown_table(m.group(2))}\n{m.group(3)}", text)


if __name__ == "__main__":  # python -m uniscene.store_layouts docs/stores.md
    from uniscene.store import atomic_file

    path = Path(sys.argv[1])
    text = render_docs(path.read_text())
    with atomic_file(path) as tmp:
        tmp.write_text(text)
