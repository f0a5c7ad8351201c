"""Where the VAE's occupancy comes from: scene sequences read frame by frame, lazily.

A sequence is one scene's frames in time order: `read(start, stop)` gives semantics [T, X, Y, Z]
uint8 (0..17) and mask_camera [T, X, Y, Z] bool (all True where the source has none). Two kinds:
- `StoreSequence`: an occupancy store (occ_label.zarr, the synthetic truth/<scene>.zarr, occ_gen.zarr),
  12 Hz frames;
- `Occ3DSequence`: Occ3D's gts/<scene>/<sample>/labels.npz files, 2 Hz keyframes.
Both open their files on first read, so a sequence pickles cheaply into DataLoader workers.

Letters: T frames, X Y Z grid.
"""

from pathlib import Path

import numpy as np

from uniscene.data import occ3d
from uniscene.errors import UserError
from uniscene.grid import OccGrid
from uniscene.store import fingerprint, open_store


class StoreSequence:
    """The frames of an occupancy store; `name` is the store's scene (attribute) or its folder's name."""

    def __init__(self, path, grid: OccGrid):
        self.path = Path(path)
        dataset = open_store(self.path)
        if "semantics" not in dataset or dataset["semantics"].dims != ("frame", "x", "y", "z"):
            raise UserError(f"store {self.path} holds no occupancy (no semantics (frame, x, y, z)): pass an occ_label, "
                            f"occ_gen or synthetic truth store")
        grid.check_store(dataset, self.path)
        self.name = str(dataset.attrs.get("scene") or self.path.parent.name or self.path.stem)
        self.num_frames = int(dataset.sizes["frame"])
        self.has_mask = "mask_camera" in dataset
        self.kind = "store"
        self._dataset = None

    def __getstate__(self):
        return {**self.__dict__, "_dataset": None}

    def read(self, start: int, stop: int) -> dict:
        if self._dataset is None:
            self._dataset = open_store(self.path)
        frames = self._dataset.isel(frame=slice(start, stop))
        semantics = frames["semantics"].values
        mask = frames["mask_camera"].values if self.has_mask else np.ones(semantics.shape, bool)
        return {"semantics": semantics.astype(np.uint8, copy=False), "mask_camera": mask.astype(bool, copy=False)}

    def fingerprint(self) -> str:
        return fingerprint(self.path)


class Occ3DSequence:
    """The labels.npz files of one Occ3D scene, one per sample."""

    def __init__(self, scene: occ3d.Occ3DScene):
        self.scene = scene
        self.name = scene.name
        self.num_frames = len(scene.paths)
        self.has_mask = True
        self.kind = "occ3d"

    def read(self, start: int, stop: int) -> dict:
        frames = [occ3d.read_labels_file(path) for path in self.scene.paths[start:stop]]
        return {"semantics": np.stack([f["semantics"] for f in frames]), "mask_camera": np.stack([f["mask_camera"] for f in frames])}

    def fingerprint(self) -> str:
        stats = [(p.name, p.stat().st_size) for p in self.scene.paths]
        return f"occ3d:{len(stats)}:{sum(size for _, size in stats)}"


def store_sequences(paths, grid: OccGrid) -> list:
    return [StoreSequence(path, grid) for path in paths]


def occ3d_sequences(root, scenes, config: dict, grid: OccGrid) -> list:
    """Sequences of `scenes` (None: every scene folder) of the Occ3D folder `root`, ordered by the config's dataset tables."""
    from uniscene.data.reader import open_dataset

    names = list(scenes) if scenes else occ3d.scene_names(root)
    nusc = open_dataset(config["dataset"]["dataroot"], config["dataset"]["version"])
    return [Occ3DSequence(occ3d.occ3d_scene(root, nusc, name, grid.shape)) for name in names]
