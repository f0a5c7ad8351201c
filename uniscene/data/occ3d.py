"""Occ3D-nuScenes ground truth as an occupancy source: `gts/<scene_name>/<sample_token>/labels.npz`.

Each labels.npz holds one nuScenes keyframe (sample): `semantics` (0..16, 17 free), `mask_lidar`
and `mask_camera`, each [200, 200, 16] uint8 on the grid [-40, -40, -1, 40, 40, 5.4] m at 0.4 m
(uniscene's default grid). A scene's frames are its samples in time order (2 Hz), taken from the
dataset's tables; every file is checked (present, the three arrays, their shape) before any is read.

Letters: K samples of a scene, X Y Z grid.
"""

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uniscene.classes import FREE
from uniscene.errors import UserError

ARRAYS = ("semantics", "mask_lidar", "mask_camera")
FILE_NAME = "labels.npz"


def gts_folder(root) -> Path:
    """The folder of scene folders: `root/gts` where it exists, else `root` itself."""
    root = Path(root)
    if (root / "gts").is_dir():
        return root / "gts"
    if not root.is_dir():
        raise UserError(f"Occ3D folder {root} does not exist: set occ_vae.occ3d_root (or --occ3d) to the folder that holds gts/")
    return root


def scene_names(root) -> list[str]:
    """The scene folders under gts/, sorted."""
    names = sorted(p.name for p in gts_folder(root).iterdir() if p.is_dir())
    if not names:
        raise UserError(f"Occ3D folder {gts_folder(root)} holds no scene folders: point at the folder of gts/<scene>/<sample>/labels.npz")
    return names


def _npz_header(path: Path) -> dict:
    """{array name: (shape, dtype)} of an .npz, read from the .npy headers alone."""
    try:
        with zipfile.ZipFile(path) as archive:
            headers = {}
            for member in archive.namelist():
                with archive.open(member) as file:
                    version = np.lib.format.read_magic(file)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(file)
                headers[member.removesuffix(".npy")] = (tuple(shape), np.dtype(dtype))
            return headers
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        raise UserError(f"Occ3D file {path} cannot be read ({error}): replace it with the dataset's labels.npz") from error


def check_labels_file(path, grid_shape: tuple) -> None:
    """Raise UserError naming `path` unless it holds the three arrays with shape `grid_shape`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Occ3D file {path} is missing: the scene's sample has no labels.npz; restore it from Occ3D's gts "
                        f"archive, or leave the scene out (--scenes / dataset.scenes)")
    header = _npz_header(path)
    missing = [name for name in ARRAYS if name not in header]
    if missing:
        raise UserError(f"Occ3D file {path} lacks array(s) {missing} (it has {sorted(header)}): Occ3D's labels.npz holds "
                        f"{list(ARRAYS)}")
    for name in ARRAYS:
        shape, dtype = header[name]
        if shape != tuple(grid_shape):
            raise UserError(f"Occ3D file {path}: '{name}' has shape {shape}, the grid is {tuple(grid_shape)}: Occ3D's grid is "
                            f"200 x 200 x 16 at 0.4 m (grid.range_m [-40, -40, -1, 40, 40, 5.4], grid.voxel_size_m 0.4)")
        if dtype.kind not in "biu":
            raise UserError(f"Occ3D file {path}: '{name}' has dtype {dtype}, expected uint8")


def read_labels_file(path) -> dict:
    """{"semantics": [X, Y, Z] uint8 0..17, "mask_lidar", "mask_camera": [X, Y, Z] bool} of one labels.npz."""
    with np.load(path) as data:
        out = {"semantics": data["semantics"].astype(np.uint8), "mask_lidar": data["mask_lidar"].astype(bool),
               "mask_camera": data["mask_camera"].astype(bool)}
    if out["semantics"].max(initial=0) > FREE:
        raise UserError(f"Occ3D file {path}: semantics holds labels up to {int(out['semantics'].max())}, Occ3D's are 0..{FREE}")
    return out


def write_labels_file(path, semantics: np.ndarray, mask_lidar: np.ndarray, mask_camera: np.ndarray) -> Path:
    """Write one frame ([X, Y, Z] each) as Occ3D's labels.npz (uint8 arrays)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, semantics=np.asarray(semantics, np.uint8), mask_lidar=np.asarray(mask_lidar, np.uint8),
                        mask_camera=np.asarray(mask_camera, np.uint8))
    return path


@dataclass(frozen=True)
class Occ3DScene:
    """The labels files of one scene's samples, in time order: paths [K], timestamp_us [K] int64."""

    name: str
    paths: tuple
    timestamp_us: np.ndarray


def occ3d_scene(root, nusc, name: str, grid_shape: tuple) -> Occ3DScene:
    """Scene `name` of the Occ3D folder `root`, its samples from the devkit's tables `nusc`; every file checked."""
    from uniscene.data.reader import scene_record, scene_samples

    folder = gts_folder(root) / name
    if not folder.is_dir():
        raise UserError(f"Occ3D folder {gts_folder(root)} has no scene '{name}': choose scenes that it holds "
                        f"({', '.join(scene_names(root)[:5])}, ...)")
    try:
        scene = scene_record(nusc, name)
    except UserError as error:
        raise UserError(f"Occ3D scene '{name}' is not a scene of the dataset tables: set dataset.dataroot and "
                        f"dataset.version to the nuScenes that the Occ3D folder belongs to ({error})") from None
    samples = scene_samples(nusc, scene)
    paths = tuple(folder / sample["token"] / FILE_NAME for sample in samples)
    for path in paths:
        check_labels_file(path, grid_shape)
    return Occ3DScene(name, paths, np.array([sample["timestamp"] for sample in samples], np.int64))
