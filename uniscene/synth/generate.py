"""Writing the synthetic dataset: sensor files, nuScenes tables, map expansion and truth stores.

Work is split into one LiDAR task and one camera task per scene; tasks run in worker
processes (each re-creates its scene from the config) and write their files directly. The
tables are assembled at the end from what the tasks return. Everything is written into a
temporary sibling of the output folder, which is renamed into place last.
"""

import datetime as _dt
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from uniscene.sensors import CAMERA_NAMES, LIDAR_NAME
from uniscene.errors import UserError
from uniscene.grid import OccGrid
from uniscene.stage_config import stage_config
from uniscene.store import atomic_directory, write_store
from uniscene.synth import nuscenes_writer as nw
from uniscene.synth.capture import CameraRays, capture_cameras, capture_lidar
from uniscene.synth.kernels import candidate_pairs, slab_test
from uniscene.sensors import LIDAR_TRANSLATION_M, lidar_rotation_wxyz
from uniscene.synth.sensors import camera_rotation_wxyz
from uniscene.synth.truth import CameraVisibility, frame_semantics, truth_dataset
from uniscene.synth.world import SynthSettings, SyntheticScene, build_scene

ANNOTATION_RANGE_M = 50.0


def _filename(folder: str, scene: SyntheticScene, channel: str, timestamp: int, ext: str) -> str:
    return f"{folder}/{channel}/{scene.name}__{channel}__{timestamp}.{ext}"


def _pose_record(token: str, timestamp: int, world_from_ego: np.ndarray) -> dict:
    from uniscene.geometry import matrix_to_quaternion

    return {"token": token, "timestamp": int(timestamp),
            "rotation": [float(v) for v in matrix_to_quaternion(world_from_ego[:3, :3])],
            "translation": [float(v) for v in world_from_ego[:3, 3]]}


def instance_tokens(seed: int, scene: SyntheticScene) -> list:
    return [nw.make_token(seed, scene.name, "instance", i) for i in range(len(scene.instances))]


# ---------------------------------------------------------------------------------------------
# tasks (run in worker processes)


def lidar_task(config: dict, index: int, root: str, position: int = 0) -> dict:
    """Ray-cast every LIDAR_TOP sweep of scene `index`; write .pcd.bin and keyframe lidarseg files.

    position: the line of its progress bar (-1: no bar).

    Returns per sweep: timestamp, world_from_ego, filename, point count; per keyframe sweep the
    number of points on each instance ([I] int).
    """
    scene = build_scene(config, index)
    version = config["dataset"]["version"]
    root = Path(root)
    offsets = scene.lidar_offsets_us
    sweeps = []
    counts = {}
    for j in tqdm(range(len(offsets)), desc=f"{scene.name} lidar", position=max(position, 0), leave=False, mininterval=1.0,
                  disable=position < 0):
        t_s = offsets[j] / 1e6
        timestamp = scene.start_us + int(offsets[j])
        key = j % 10 == 0
        sweep = capture_lidar(scene, t_s)
        filename = _filename("samples" if key else "sweeps", scene, LIDAR_NAME, timestamp, "pcd.bin")
        path = root / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep.points.tofile(path)
        if key:
            counts[j // 10] = np.bincount(sweep.instance[sweep.instance >= 0], minlength=len(scene.instances))
            token = nw.make_token(config["seed"], scene.name, "sample_data", LIDAR_NAME, j)
            label_dir = root / "lidarseg" / version
            label_dir.mkdir(parents=True, exist_ok=True)
            sweep.lidarseg.astype(np.uint8).tofile(label_dir / f"{token}_lidarseg.bin")
        sweeps.append({"timestamp": timestamp, "world_from_ego": scene.ego_pose(t_s), "filename": filename,
                       "is_key_frame": key, "num_points": len(sweep.points)})
    return {"kind": "lidar", "index": index, "sweeps": sweeps, "counts": counts}


def _visible_fraction(scene: SyntheticScene, t_s: float, rays: CameraRays, instance_image: np.ndarray) -> np.ndarray:
    """Per instance: pixels that see it / pixels whose rays cross its parts with nothing else in the way, [I]."""
    num = len(scene.instances)
    visible = np.bincount(instance_image[instance_image >= 0].reshape(-1), minlength=num)
    boxes, owner = scene.primitives(t_s)
    parts = np.nonzero(owner >= 0)[0]
    world_from_ego = scene.ego_pose(t_s)
    origins = rays.origins_flat @ world_from_ego[:3, :3].T + world_from_ego[:3, 3]
    directions = rays.dirs_flat @ world_from_ego[:3, :3].T
    pair_ray, pair_part = candidate_pairs(origins, directions, boxes.center[parts], boxes.half[parts], boxes.yaw[parts],
                                         ANNOTATION_RANGE_M + 20)
    t, _ = slab_test(origins[pair_ray], directions[pair_ray], boxes.center[parts][pair_part], boxes.half[parts][pair_part],
                     boxes.yaw[parts][pair_part])
    hit = np.isfinite(t)
    key = np.unique(pair_ray[hit] * num + owner[parts][pair_part[hit]])
    unoccluded = np.bincount(key % num, minlength=num)
    return np.where(unoccluded > 0, visible / np.maximum(unoccluded, 1), 0.0)


def camera_task(config: dict, index: int, root: str, position: int = 0) -> dict:
    """Render the six cameras at every 12 Hz frame of scene `index`; write the images and the truth store.

    position: the line of its progress bar (-1: no bar).
    """
    scene = build_scene(config, index)
    settings = scene.settings
    grid = OccGrid.from_config(config)
    root = Path(root)
    rays = CameraRays(scene)
    visibility = CameraVisibility(grid, scene.rig)
    offsets = scene.camera_offsets_us
    frames, fractions = [], {}
    semantics, masks, cam_sem, cam_depth, poses, stamps = [], [], [], [], [], []
    for k in tqdm(range(len(offsets)), desc=f"{scene.name} cameras", position=max(position, 0), leave=False, mininterval=1.0,
                  disable=position < 0):
        t_s = offsets[k] / 1e6
        timestamp = scene.start_us + int(offsets[k])
        key = k % 6 == 0
        capture = capture_cameras(scene, t_s, rays)
        filenames = []
        for v, name in enumerate(CAMERA_NAMES):
            filename = _filename("samples" if key else "sweeps", scene, name, timestamp, "jpg")
            path = root / filename
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(capture.image[v]).save(path, quality=settings.jpeg_quality)
            filenames.append(filename)
        if key:
            fractions[k // 6] = _visible_fraction(scene, t_s, rays, capture.instance)
        world_from_ego = scene.ego_pose(t_s)
        frames.append({"timestamp": timestamp, "world_from_ego": world_from_ego, "filenames": filenames, "is_key_frame": key})
        semantics.append(frame_semantics(scene, t_s, grid))
        masks.append(visibility.mask(capture.depth, rays.origins_ego, rays.dirs_ego, rays.z_of_dir))
        cam_sem.append(capture.semantics)
        cam_depth.append(capture.depth)
        poses.append(world_from_ego)
        stamps.append(timestamp)
    dataset = truth_dataset(scene, grid, stamps, np.stack(poses), np.stack(semantics), np.stack(masks),
                            np.stack(cam_sem), np.stack(cam_depth), instance_tokens(config["seed"], scene))
    write_store(root / "truth" / f"{scene.name}.zarr", dataset, stage="synth_truth", config_subset=stage_config(config, "synth"),
                seed=config["seed"])
    return {"kind": "camera", "index": index, "frames": frames, "fractions": fractions}


def _run_task(args):
    kind, config, index, root, position = args
    try:  # one BLAS thread per worker: the workers already fill the cores
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        threadpool_limits = None
    task = lidar_task if kind == "lidar" else camera_task
    if threadpool_limits is None:
        return task(config, index, root, position)
    with threadpool_limits(1):
        return task(config, index, root, position)


# ---------------------------------------------------------------------------------------------
# tables


def _chain(records: list) -> None:
    for a, b in zip(records[:-1], records[1:]):
        a["next"] = b["token"]
        b["prev"] = a["token"]


def scene_tables(config: dict, scene: SyntheticScene, lidar: dict, camera: dict, static: dict) -> dict:
    """All per-scene records (log, calibrated_sensor, ego_pose, scene, sample, sample_data,
    instance, sample_annotation, lidarseg) from the tasks' results."""
    seed = config["seed"]
    version = config["dataset"]["version"]
    tok = lambda *parts: nw.make_token(seed, scene.name, *parts)  # noqa: E731
    sensor_token = {r["channel"]: r["token"] for r in static["sensor"]}
    category_token = {r["name"]: r["token"] for r in static["category"]}
    attribute_token = {r["name"]: r["token"] for r in static["attribute"]}
    out = {name: [] for name in ("log", "calibrated_sensor", "ego_pose", "scene", "sample", "sample_data", "instance",
                                 "sample_annotation", "lidarseg")}

    date = _dt.datetime.fromtimestamp(scene.start_us / 1e6, _dt.timezone.utc)
    log_token = tok("log")
    out["log"].append({"token": log_token, "logfile": f"{scene.name}-log", "vehicle": "synth-car",
                       "date_captured": date.strftime("%Y-%m-%d"), "location": scene.location})
    calib = {}
    for v, name in enumerate(CAMERA_NAMES):
        calib[name] = tok("calibrated_sensor", name)
        out["calibrated_sensor"].append({
            "token": calib[name], "sensor_token": sensor_token[name],
            "translation": [float(x) for x in scene.rig.ego_from_cam[v, :3, 3]],
            "rotation": camera_rotation_wxyz(scene.rig, v),
            "camera_intrinsic": [[float(x) for x in row] for row in scene.rig.intrinsics[v]],
        })
    calib[LIDAR_NAME] = tok("calibrated_sensor", LIDAR_NAME)
    out["calibrated_sensor"].append({"token": calib[LIDAR_NAME], "sensor_token": sensor_token[LIDAR_NAME],
                                     "translation": list(LIDAR_TRANSLATION_M), "rotation": lidar_rotation_wxyz(),
                                     "camera_intrinsic": []})

    # samples
    scene_token = tok("scene")
    samples = [{"token": tok("sample", m), "timestamp": int(scene.start_us + off), "prev": "", "next": "",
                "scene_token": scene_token} for m, off in enumerate(scene.sample_offsets_us)]
    _chain(samples)
    out["sample"] = samples
    sample_times = np.array([s["timestamp"] for s in samples])

    def sample_of(timestamp):
        return samples[int(np.searchsorted(sample_times, timestamp, side="left"))]["token"]

    # sample_data and ego poses
    h, w = scene.rig.size_hw
    chains = {name: [] for name in (*CAMERA_NAMES, LIDAR_NAME)}
    for j, sweep in enumerate(lidar["sweeps"]):
        token = tok("sample_data", LIDAR_NAME, j)
        pose = tok("ego_pose", LIDAR_NAME, j)
        out["ego_pose"].append(_pose_record(pose, sweep["timestamp"], sweep["world_from_ego"]))
        chains[LIDAR_NAME].append(_sample_data_record(token, sample_of(sweep["timestamp"]), pose, calib[LIDAR_NAME],
                                                      sweep["timestamp"], "pcd", sweep["is_key_frame"], (0, 0), sweep["filename"]))
        if sweep["is_key_frame"]:
            # nuScenes-lidarseg's records share their sample_data's token (the devkit looks them up by it)
            out["lidarseg"].append({"token": token, "sample_data_token": token,
                                    "filename": f"lidarseg/{version}/{token}_lidarseg.bin"})
    for k, frame in enumerate(camera["frames"]):
        for v, name in enumerate(CAMERA_NAMES):
            token = tok("sample_data", name, k)
            pose = tok("ego_pose", name, k)
            out["ego_pose"].append(_pose_record(pose, frame["timestamp"], frame["world_from_ego"]))
            chains[name].append(_sample_data_record(token, sample_of(frame["timestamp"]), pose, calib[name],
                                                    frame["timestamp"], "jpg", frame["is_key_frame"], (h, w),
                                                    frame["filenames"][v]))
    for name, records in chains.items():
        _chain(records)
        out["sample_data"].extend(records)

    # annotations: instances seen (points within range) at some keyframe, annotated from the first to the last
    inst = scene.instances
    tokens = instance_tokens(seed, scene)
    num_inst = len(inst)
    seen = np.zeros((len(samples), num_inst), bool)
    boxes_at = []
    for m in range(len(samples)):
        t_s = scene.sample_offsets_us[m] / 1e6
        center, size, yaw = scene.boxes(t_s)
        ego_xy = scene.ego_pose(t_s)[:2, 3]
        near = np.hypot(*(center[:, :2] - ego_xy).T) <= ANNOTATION_RANGE_M
        seen[m] = near & (lidar["counts"][m] > 0)
        _, _, speed = scene.instance_poses(t_s)
        boxes_at.append((center, size, yaw, speed))
    for i in range(num_inst):
        frames = np.nonzero(seen[:, i])[0]
        if len(frames) == 0:
            continue
        category = inst.category[i]
        records = []
        for m in range(frames[0], frames[-1] + 1):
            center, size, yaw, speed = boxes_at[m]
            records.append({
                "token": tok("sample_annotation", i, m), "sample_token": samples[m]["token"], "instance_token": tokens[i],
                "visibility_token": nw.visibility_token(float(camera["fractions"][m][i])),
                "attribute_tokens": [attribute_token[a] for a in _attributes(category, inst.mobility[i], speed[i])],
                "translation": [float(x) for x in center[i]], "size": [float(x) for x in size[i]],
                "rotation": [float(np.cos(yaw[i] / 2)), 0.0, 0.0, float(np.sin(yaw[i] / 2))],
                "prev": "", "next": "", "num_lidar_pts": int(lidar["counts"][m][i]), "num_radar_pts": 0})
        _chain(records)
        out["sample_annotation"].extend(records)
        out["instance"].append({"token": tokens[i], "category_token": category_token[category],
                                "nbr_annotations": len(records), "first_annotation_token": records[0]["token"],
                                "last_annotation_token": records[-1]["token"]})

    out["scene"].append({"token": scene_token, "log_token": log_token, "nbr_samples": len(samples),
                         "first_sample_token": samples[0]["token"], "last_sample_token": samples[-1]["token"],
                         "name": scene.name, "description": f"synthetic town drive ({scene.location} map region)"})
    return out


def _attributes(category: str, mobility: str, speed: float) -> list:
    if category in ("vehicle.bicycle", "vehicle.motorcycle"):
        return ["cycle.with_rider"] if mobility == "moving" else ["cycle.without_rider"]
    if category.startswith("vehicle."):
        if mobility == "parked":
            return ["vehicle.parked"]
        return ["vehicle.moving"] if speed > 0.3 else ["vehicle.stopped"]
    if category.startswith("human.pedestrian"):
        return ["pedestrian.moving"] if speed > 0.2 else ["pedestrian.standing"]
    return []


# ---------------------------------------------------------------------------------------------
# entry point


def _usable_cores() -> int:
    """Cores this process may run on (a Slurm job's allocation, not the whole node)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover (not Linux)
        return os.cpu_count() or 1


def _sample_data_record(token, sample_token, ego_pose_token, calibrated_sensor_token, timestamp, fileformat,
                        is_key_frame, size_hw, filename) -> dict:
    """One nuScenes sample_data row; prev/next are linked once the sensor's chain is complete."""
    return {
        "token": token, "sample_token": sample_token, "ego_pose_token": ego_pose_token,
        "calibrated_sensor_token": calibrated_sensor_token, "timestamp": timestamp, "fileformat": fileformat,
        "is_key_frame": is_key_frame, "height": size_hw[0], "width": size_hw[1], "filename": filename,
        "prev": "", "next": ""}


def generate_dataset(config: dict, out_dir, workers: int | None = None, progress: bool = True) -> Path:
    """Write the whole synthetic dataset into `out_dir` (replaced atomically)."""
    settings = SynthSettings.from_config(config)
    version = config["dataset"]["version"]
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder: choose another path")
    num_scenes = settings.num_scenes
    if workers is None:
        workers = settings.workers or min(_usable_cores(), 2 * num_scenes)
    with atomic_directory(out) as tmp:
        tasks = [(kind, config, i, str(tmp)) for i in range(num_scenes) for kind in ("camera", "lidar")]
        tasks = [task + ((1 + k % max(workers, 1)) if progress else -1,) for k, task in enumerate(tasks)]
        results = {}
        bar = tqdm(total=len(tasks), desc="synth tasks", disable=not progress, position=0)
        if workers <= 1:
            for task in tasks:
                result = _run_task(task)
                results[(result["kind"], result["index"])] = result
                bar.update()
        else:
            import multiprocessing

            with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
                for result in pool.map(_run_task, tasks):
                    results[(result["kind"], result["index"])] = result
                    bar.update()
        bar.close()
        static = nw.static_tables()
        tables = {name: [] for name in nw.TABLE_NAMES}
        tables.update({k: list(v) for k, v in static.items()})
        tables["lidarseg"] = []
        towns_by_location, logs_by_location = {}, {}
        for i in range(num_scenes):
            scene = build_scene(config, i)
            part = scene_tables(config, scene, results[("lidar", i)], results[("camera", i)], static)
            for name, records in part.items():
                tables[name].extend(records)
            towns_by_location.setdefault(scene.location, []).append(scene.town)
            logs_by_location.setdefault(scene.location, []).append(part["log"][0]["token"])
        for location in sorted(towns_by_location):
            tables["map"].append(nw.write_map(tmp, location, towns_by_location[location], logs_by_location[location]))
        nw.write_tables(tmp / version, tables)
        (tmp / "lidarseg" / version).mkdir(parents=True, exist_ok=True)
    return out
