"""Exports of a chain's stores to other tools' formats, one module each (`uniscene export <format>`).

- `nuscenes.py`: a new nuScenes version (tables, `samples/` and `sweeps/` files) that nuscenes-devkit loads;
- `occ3d.py`: occupancy as Occ3D's `gts/<scene>/<sample_token>/labels.npz` (Occ3D's mask definition);
- `infos.py`: mmdet3d v1.1 info files of the source frames or of a chain's generated frames.

Each writes its output atomically (uniscene.store.atomic_directory / atomic_file).
"""
