"""`uniscene frames`: the 12 Hz frames of one scene -> results/scenes/<scene>/frames.zarr.

`--scene S --out STORE` reads the scene from the nuScenes-format dataset (or, when
`dataset.info_pkl` names one, from a 12 Hz info file) and interpolates the keyframe boxes to
every frame and every LiDAR sweep (uniscene.frames). `uniscene export infos` writes frames
stores as mmdet3d v1.1 info files.
"""

from pathlib import Path

from uniscene.sensors import CAMERA_NAMES, LIDAR_NAME
from uniscene.data.scenes import check_scene
from uniscene.store import write_store

HELP = "12 Hz frames of one scene: poses, cameras, LiDAR, interpolated boxes"
STAGE = "frames"
FRAME_CHUNK = 4096  # frames.zarr is small: one chunk per variable


def add_arguments(parser):
    parser.add_argument("--scene", required=True, help="scene name (one of dataset.scenes)")
    parser.add_argument("--out", required=True, help="store to write (results/scenes/<scene>/frames.zarr)")


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


def main(args, config):
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
