"""`uniscene frames`: the 12 Hz frames of one scene -> results/scenes/<scene>/frames.zarr.

`--scene S --out STORE` reads the scene from the nuScenes-format dataset (or, when
`dataset.info_pkl` names one, from a 12 Hz info file) and interpolates the keyframe boxes to
every frame and every LiDAR sweep (uniscene.frames). `--export-infos PKL --split train|val`
writes the frames stores of a split's scenes as one mmdet3d v1.1 info file
(uniscene.interop.infos).
"""

from pathlib import Path

from tqdm import tqdm

from uniscene.sensors import CAMERA_NAMES, LIDAR_NAME
from uniscene.data.scenes import check_scene, train_scenes, val_scenes
from uniscene.errors import UserError
from uniscene.paths import scene_store
from uniscene.store import open_store, write_store

HELP = "12 Hz frames of one scene: poses, cameras, LiDAR, interpolated boxes"
STAGE = "frames"
FRAME_CHUNK = 4096  # frames.zarr is small: one chunk per variable


def add_arguments(parser):
    parser.add_argument("--scene", help="scene name (one of dataset.scenes)")
    parser.add_argument("--out", help="store to write (results/scenes/<scene>/frames.zarr)")
    parser.add_argument("--export-infos", metavar="PKL", help="instead: write a split's frames as an mmdet3d v1.1 info pkl")
    parser.add_argument("--split", choices=("train", "val"), default="train", help="the split to export")
    parser.add_argument("--results", default="results", help="the workflow's results folder (for --export-infos)")


def config_stage(args) -> str:
    """An info export reads the scene split; a scene's frames do not (adding a scene reruns no other)."""
    return "frames_infos" if args.export_infos else STAGE


def build_frames(config: dict, scene: str):
    """The frames dataset of `scene` (attributes included) and the input paths it was read from."""
    from uniscene.frames import FramesSettings, scene_frames

    dataset, settings = config["dataset"], FramesSettings.from_config(config)
    hold_s = settings.hold_one_sided_s
    dataroot = Path(dataset["dataroot"])
    if dataset["info_pkl"]:
        from uniscene.interop.infos import frames_from_infos, read_infos

        frames = frames_from_infos(read_infos(dataset["info_pkl"]), scene, dataroot, dataset["version"], hold_s)
        inputs = [dataset["info_pkl"], dataroot / dataset["version"]]
    else:
        from uniscene.data.reader import open_dataset, scene_data

        nusc = open_dataset(dataroot, dataset["version"])
        data = scene_data(nusc, scene, CAMERA_NAMES + (LIDAR_NAME,))
        frames = scene_frames(data, hold_s, settings.max_camera_offset_s, settings.hold_parked_s)
        inputs = [dataroot / dataset["version"]]
    frames.attrs.update(dataroot=str(dataroot.resolve()), version=dataset["version"])
    return frames, inputs


def export(config: dict, split: str, results, path) -> Path:
    """Write the frames stores of a split's scenes as one mmdet3d v1.1 info file."""
    from uniscene.interop.infos import export_infos

    scenes = {"train": train_scenes, "val": val_scenes}[split](config)
    if not scenes:
        raise UserError(f"the {split} split of dataset.scenes is empty (see dataset.val_scenes): nothing to export")
    stores = [open_store(scene_store(results, s, "frames"), stage="frames").load() for s in tqdm(scenes, desc="frames stores")]
    return export_infos(stores, path)


def main(args, config):
    if args.export_infos:
        path = export(config, args.split, args.results, args.export_infos)
        print(f"frames: {args.split} split -> {path}")
        return
    if not args.scene or not args.out:
        raise UserError("uniscene frames needs --scene and --out (or --export-infos PKL --split train|val)")
    check_scene(config, args.scene)
    frames, inputs = build_frames(config, args.scene)
    write_store(
        args.out, frames, stage="frames", config_subset=config, inputs=inputs,
        frame_chunk=FRAME_CHUNK,
    )
    print(
        f"frames {args.scene}: {frames.sizes['frame']} frames ({int(frames.is_keyframe.sum())} keyframes), "
        f"{frames.sizes['sweep']} sweeps, {frames.sizes['box']} instances -> {args.out}"
    )
