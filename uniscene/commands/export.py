"""`uniscene export {nuscenes,occ3d,infos}`: a chain's stores in other tools' formats (uniscene/export/).

- `nuscenes --frames F.. --lidar L.. [--video V..] [--layout Y..] --chain C --out DIR`: the version
  `v1.0-uniscene-<chain>` (tables, samples/ and sweeps/ files) in DIR. Without --video it has no
  camera sample_data (the message says so).
- `occ3d --frames F.. --occupancy O.. --out DIR`: DIR/gts/<scene>/<sample_token>/labels.npz per keyframe,
  masks in Occ3D's definition (mask_camera inside mask_lidar).
- `infos --frames F.. --out PKL`: the frames (the source dataset's files) as an mmdet3d v1.1 info pkl;
  with `--lidar L.. [--video V..] [--layout Y..] --chain C`, the chain's generated frames as the nuScenes
  export of the same stores lays them out (`--nuscenes DIR`: that export, whose files are checked).
Each option takes one store per scene, the scenes in the same order in every option.
"""

from pathlib import Path

from uniscene.errors import UserError

HELP = "export stores as a nuScenes version, Occ3D labels or mmdet3d info files"
FORMATS = ("nuscenes", "occ3d", "infos")


def add_arguments(parser):
    parser.add_argument("format", choices=FORMATS, help="what to write")
    parser.add_argument("--frames", nargs="+", required=True, help="each scene's frames.zarr")
    parser.add_argument("--lidar", nargs="+", help="each scene's lidar.zarr (nuscenes; infos of generated frames)")
    parser.add_argument("--video", nargs="+", help="each scene's video.zarr: the camera images (absent: no camera data)")
    parser.add_argument("--layout", nargs="+", help="each scene's layout.zarr: the boxes (absent: frames.zarr's)")
    parser.add_argument("--occupancy", nargs="+", help="each scene's occ_label.zarr or occ_gen.zarr (occ3d)")
    parser.add_argument("--chain", help="the chain exported (label, gen, edits/<name>): names the version v1.0-uniscene-<chain>")
    parser.add_argument("--nuscenes", help="infos: the nuScenes export of the same stores, whose files the infos name (checked)")
    parser.add_argument("--out", required=True, help="folder (nuscenes, occ3d) or .pkl file (infos) to write")


def config_stage(args) -> str:
    return f"export_{args.format}"


def _per_scene(args, name: str, required: bool) -> list:
    """One path per scene for option `name` ([None, ...] where it is optional and absent)."""
    values = getattr(args, name)
    if values is None:
        if required:
            raise UserError(f"uniscene export {args.format} needs --{name} (one store per scene, in --frames' order)")
        return [None] * len(args.frames)
    if len(values) != len(args.frames):
        raise UserError(f"--{name} names {len(values)} stores and --frames {len(args.frames)}: give one per scene, in the same order")
    return values


def _unused(args, *names) -> None:
    given = [f"--{n}" for n in names if getattr(args, n) is not None]
    if given:
        raise UserError(f"uniscene export {args.format} reads no {', '.join(given)}: leave it out")


def _chain(args) -> str:
    if not args.chain:
        raise UserError(f"uniscene export {args.format} of generated frames needs --chain (label, gen or edits/<name>): it names the version")
    return args.chain


def _scenes(args) -> list:
    from uniscene.export.nuscenes import open_scene

    return [open_scene(f, lidar, video, layout) for f, lidar, video, layout in
            zip(args.frames, _per_scene(args, "lidar", True), _per_scene(args, "video", False), _per_scene(args, "layout", False))]


def export_nuscenes(args, config):
    from uniscene.export.nuscenes import export_nuscenes

    _unused(args, "occupancy", "nuscenes")
    summary = export_nuscenes(args.out, _scenes(args), _chain(args), jpeg_quality=config["export"]["jpeg_quality"], config_subset=config)
    cameras = (f"{summary['camera_files']} camera JPEGs" if summary["cameras"]
               else "no camera sample_data (no --video: pass each scene's video.zarr to export camera images)")
    print(f"export nuscenes: {len(summary['scenes'])} scenes, {summary['samples']} samples, {summary['sample_annotations']} "
          f"annotations, {summary['lidar_files']} LIDAR_TOP .pcd.bin, {cameras} -> {args.out} "
          f"(NuScenes('{summary['version']}', '{args.out}'))")


def export_occ3d(args, config):
    from uniscene.export.occ3d import export_occ3d

    _unused(args, "lidar", "video", "layout", "chain", "nuscenes")
    summary = export_occ3d(args.out, list(zip(args.frames, _per_scene(args, "occupancy", True))), config_subset=config)
    grid = "x".join(map(str, summary["grid_shape"]))
    note = "" if summary["occ3d_grid"] else f" (not Occ3D's 200x200x16 grid: readers that assume it need grid {summary['grid']})"
    print(f"export occ3d: {len(summary['scenes'])} scenes, {summary['labels']} labels.npz of {grid}{note}, mask_camera inside "
          f"mask_lidar as Occ3D ({summary['camera_voxels_dropped']} camera-only voxels left out) -> {args.out}/gts")


def export_infos(args, config):
    from uniscene.export.infos import export_infos

    if args.lidar is None:
        from uniscene.store import open_store

        _unused(args, "video", "layout", "chain", "nuscenes", "occupancy")
        frames = [open_store(path, "frames").load() for path in args.frames]
        path = export_infos(frames, args.out)
        print(f"export infos: {len(frames)} scenes, {sum(f.sizes['frame'] for f in frames)} frames of the source dataset "
              f"({frames[0].attrs['version']}, paths relative to {frames[0].attrs['dataroot']}) -> {path}")
        return
    from uniscene.export.nuscenes import exported_frames, version_name

    _unused(args, "occupancy")
    version = version_name(_chain(args))
    frames = [exported_frames(stores, version) for stores in _scenes(args)]
    if args.nuscenes:
        check_files(args.nuscenes, version, frames)
    path = export_infos(frames, args.out)
    cameras = "with camera images" if frames[0].sizes["cam"] else "without cameras (no --video: `images` is empty)"
    root = args.nuscenes or f"the folder of `uniscene export nuscenes --chain {args.chain}` with the same stores"
    print(f"export infos: {len(frames)} scenes, {sum(f.sizes['frame'] for f in frames)} generated frames {cameras}, "
          f"paths relative to {root} ({version}) -> {path}")


def check_files(root, version: str, frames: list) -> None:
    """UserError naming the first file of the generated frames that the nuScenes export `root` lacks."""
    root = Path(root)
    if not (root / version).is_dir():
        raise UserError(f"{root} holds no nuScenes version {version}: run `uniscene export nuscenes --chain ...` with the same stores "
                        f"into it, or leave --nuscenes out")
    for dataset in frames:
        for path in [*dataset["sweep_path"].values, *dataset["cam_image_path"].values.ravel()]:
            if not (root / str(path)).is_file():
                raise UserError(f"nuScenes export {root} lacks {path}: it was written from other stores (or without --video); "
                                f"rerun `uniscene export nuscenes` with the same stores")


def main(args, config):
    {"nuscenes": export_nuscenes, "occ3d": export_occ3d, "infos": export_infos}[args.format](args, config)
