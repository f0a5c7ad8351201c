"""Scores of each stage against the synthetic ground truth: `uniscene metrics <stage>`.

A metric reads the stores its rule names (`uniscene metrics layout --frames a b --layout a b`,
one of each kind per scene, in the same scene order) and the dataset's truth beside them
(<dataroot>/truth/<scene>.zarr); it looks for nothing under results/ and makes no stage output
itself (the ray-cast LiDAR it compares with is the `lidar_raycast` rule's store).
"""

from dataclasses import dataclass
from pathlib import Path

from uniscene.errors import UserError
from uniscene.store import open_store

# store kind (a `uniscene metrics` argument) -> the stage that writes it
STORE_STAGES = {"frames": "frames", "occ_label": "occ_label", "layout": "layout", "render": "render", "lidar": "lidar",
                "lidar_raycast": "lidar", "lidar_gen": "lidar", "occ_gen": "occ_gen", "occ_gen_ddim50": "occ_gen", "occ_gen_leak_noise_prior": "occ_gen",
                "occ_gen_leak_meta": "occ_gen", "video": "video", "video_no_crossview": "video", "video_gen": "video", "render_gen": "render"}


@dataclass(frozen=True)
class SceneStores:
    """The stores of one scene that a metric reads: kind (a key of STORE_STAGES) -> path."""

    scene: str
    paths: dict

    def open(self, kind: str):
        return open_store(self.paths[kind], stage=STORE_STAGES[kind])


def scene_stores(stores: dict) -> list[SceneStores]:
    """{kind: [path per scene]} -> one SceneStores per scene, in the given order.

    The frames stores name the scenes (their `scene` attribute); the i-th store of every other
    kind must be of the i-th frames store's scene.
    """
    frames = [Path(p) for p in stores["frames"]]
    for kind, paths in stores.items():
        if len(paths) != len(frames):
            raise UserError(f"--{kind.replace('_', '-')} names {len(paths)} stores and --frames {len(frames)}: give one of each per scene, "
                            f"in the same scene order")
    out = []
    for i, frames_path in enumerate(frames):
        scene = str(open_store(frames_path, stage="frames").attrs["scene"])
        paths = {kind: Path(p[i]) for kind, p in stores.items()}
        for kind, path in paths.items():
            other = open_store(path, stage=STORE_STAGES[kind]).attrs["scene"]
            if other != scene:
                raise UserError(f"store {path} is of scene {other}, the {i + 1}-th --frames store ({frames_path}) of scene {scene}: "
                                f"give the stores in the same scene order")
        out.append(SceneStores(scene, paths))
    return out
