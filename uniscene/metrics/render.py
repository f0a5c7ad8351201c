"""Rendered maps scored against independent data: the scene's LiDAR and the synthetic cameras' truth.

For every scene given and every 12 Hz frame of its render.zarr:

Depth against LiDAR (`depth_vs_lidar`): the frame's LIDAR_TOP sweep (frames.zarr
`lidar_sweep_index`), moved into the frame's ego frame through the poses
(`ego_from_world[t] @ world_from_sweep_ego[s] @ ego_from_lidar[s]`), keeping the points inside
the occupancy grid (nothing outside it can be rendered), projected into each camera with the
render.zarr intrinsics. At each point's pixel (the one whose square holds the projection) where
the rendered alpha reaches render.min_alpha, the error is |rendered depth - point z-depth|.
Figures: median and mean absolute error (m), mean relative error, the fraction within 0.5 m and
1 m, and `coverage`, the fraction of projected points whose pixel has rendered content.

Semantics against the synthetic cameras (`semantic_in_grid`): the truth store's per-pixel
class (`cam_semantics`, resampled to the render size by nearest pixel centre), on pixels whose
true surface point (from `cam_depth`) lies inside the occupancy grid. Rendered road markings
(ped_crossing, road_divider, lane_divider) count as driveable_surface, which the truth calls
them; a rendered background pixel counts as wrong. Pixel accuracy, and IoU per class over the
17 occupancy classes, averaged over the classes present in the truth (mIoU).
`semantic_all_pixels` scores every pixel, with rendered background equal to true sky.

Depth against the synthetic cameras (`depth_vs_truth`): |rendered - true z-depth| on the
in-grid pixels with rendered content (median, mean, relative).

All figures pool every frame, camera and scene; `scenes` repeats them per scene.
"""

from pathlib import Path

import numpy as np

from uniscene.classes import NUM_OCC_CLASSES, OCC_CLASS_ID, OCC_CLASS_NAMES, RENDER_BACKGROUND, RENDER_CLASS_NAMES
from uniscene.data.files import read_sweep
from uniscene.errors import UserError
from uniscene.geometry import invert_transform, transform_points
from uniscene.grid import OccGrid
from uniscene.metrics import SceneStores
from uniscene.paths import truth_store
from uniscene.render.gaussians import MARKING_LAYERS
from uniscene.render.occupancy import RenderSettings
from uniscene.store import open_store

SKY = 255
NONE_INDEX = NUM_OCC_CLASSES  # confusion-matrix row/column of background (prediction) or sky (truth)
_MARKING_IDS = [RENDER_CLASS_NAMES.index(name) for name in MARKING_LAYERS]


def scoring_classes(semantic: np.ndarray) -> np.ndarray:
    """Render classes -> occupancy classes 0..16, markings as driveable_surface, background as NONE_INDEX."""
    out = np.asarray(semantic).astype(np.int64)
    out[np.isin(out, _MARKING_IDS)] = OCC_CLASS_ID["driveable_surface"]
    out[out == RENDER_BACKGROUND] = NONE_INDEX
    return out


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Counts [18, 18] of (truth, predicted) pairs of classes 0..17 (17: sky / background)."""
    size = NUM_OCC_CLASSES + 1
    return np.bincount(truth.reshape(-1) * size + predicted.reshape(-1), minlength=size * size).reshape(size, size)


def semantic_scores(confusion: np.ndarray) -> dict:
    """Pixel accuracy and IoU per occupancy class (classes absent from the truth left out of mIoU)."""
    classes = confusion[:NUM_OCC_CLASSES]  # truth rows of real classes
    true_count = classes.sum(1)
    hit = np.diag(confusion)[:NUM_OCC_CLASSES]
    union = true_count + confusion[:, :NUM_OCC_CLASSES].sum(0) - hit
    present = true_count > 0
    iou = {OCC_CLASS_NAMES[c]: float(hit[c] / union[c]) for c in np.nonzero(present)[0]}
    return {
        "pixel_accuracy": float(hit.sum() / max(true_count.sum(), 1)),
        "miou": float(np.mean(list(iou.values()))) if iou else float("nan"),
        "iou": iou,
        "num_pixels": int(true_count.sum()),
    }


def resample_nearest(maps: np.ndarray, size_hw) -> np.ndarray:
    """[..., H, W] maps -> [..., H', W'], each output pixel taking the input pixel under its centre."""
    h, w = maps.shape[-2:]
    rows = np.minimum(((np.arange(size_hw[0]) + 0.5) * h / size_hw[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size_hw[1]) + 0.5) * w / size_hw[1]).astype(np.int64), w - 1)
    return maps[..., rows[:, None], cols[None, :]]


def pixel_points_ego(depth_m: np.ndarray, intrinsics: np.ndarray, ego_from_cam: np.ndarray) -> np.ndarray:
    """Ego-frame points of pixel centres at z-depths [V, H, W] (K [V, 3, 3]) -> [V, H, W, 3]."""
    h, w = depth_m.shape[-2:]
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    pixels = np.stack([u, v, np.ones_like(u)], -1)  # [H, W, 3]
    rays = np.einsum("vij,hwj->vhwi", np.linalg.inv(intrinsics), pixels)  # z = 1
    points_cam = rays * depth_m[..., None]
    return np.einsum("vij,vhwj->vhwi", ego_from_cam[:, :3, :3], points_cam) + ego_from_cam[:, None, None, :3, 3]


def inside_grid(points: np.ndarray, grid: OccGrid) -> np.ndarray:
    """[..., 3] ego points -> [...] bool, inside the grid's box."""
    return np.all((points >= grid.lower_m) & (points < grid.upper_m), axis=-1)


def project_points(points_ego: np.ndarray, ego_from_cam: np.ndarray, intrinsics: np.ndarray, size_hw, near_m: float = 0.1):
    """Ego points [N, 3] into V cameras -> (cam, row, col, z_m), each [M], for points in front and inside the image."""
    cam_from_ego = invert_transform(ego_from_cam)  # [V, 4, 4]
    points_cam = np.einsum("vij,nj->vni", cam_from_ego[:, :3, :3], points_ego) + cam_from_ego[:, None, :3, 3]  # [V, N, 3]
    z = points_cam[..., 2]
    uv = np.einsum("vij,vnj->vni", intrinsics, points_cam)[..., :2] / np.where(z > near_m, z, 1.0)[..., None]
    col, row = np.floor(uv[..., 0]).astype(np.int64), np.floor(uv[..., 1]).astype(np.int64)
    keep = (z > near_m) & (col >= 0) & (col < size_hw[1]) & (row >= 0) & (row < size_hw[0])
    cam = np.broadcast_to(np.arange(len(ego_from_cam))[:, None], z.shape)
    return cam[keep], row[keep], col[keep], z[keep]


def frame_lidar_ego(frames, t: int, dataroot) -> np.ndarray:
    """The LIDAR_TOP points of frame t in the frame's ego frame, [N, 3]."""
    s = int(frames["lidar_sweep_index"].values[t])
    ego_from_sweep_ego = invert_transform(frames["world_from_ego"].values[t]) @ frames["world_from_sweep_ego"].values[s]
    points = read_sweep(Path(dataroot) / str(frames["sweep_path"].values[s]))
    return transform_points(ego_from_sweep_ego @ frames["ego_from_lidar"].values[s], points[:, :3])


def depth_errors(errors: np.ndarray, reference: np.ndarray) -> dict:
    if errors.size == 0:
        return {"num": 0}
    return {
        "median_abs_error_m": float(np.median(errors)),
        "mean_abs_error_m": float(np.mean(errors)),
        "mean_rel_error": float(np.mean(errors / reference)),
        "within_0.5m": float(np.mean(errors <= 0.5)),
        "within_1m": float(np.mean(errors <= 1.0)),
        "num": int(errors.size),
    }


class SceneScore:
    """Pooled raw counts and errors of one or more scenes."""

    def __init__(self):
        size = NUM_OCC_CLASSES + 1
        self.confusion_in_grid = np.zeros((size, size), np.int64)
        self.confusion_all = np.zeros((size, size), np.int64)
        self.lidar_errors, self.lidar_depths = [], []
        self.lidar_projected = 0
        self.truth_errors, self.truth_depths = [], []

    def add(self, other: "SceneScore") -> None:
        self.confusion_in_grid += other.confusion_in_grid
        self.confusion_all += other.confusion_all
        self.lidar_errors += other.lidar_errors
        self.lidar_depths += other.lidar_depths
        self.lidar_projected += other.lidar_projected
        self.truth_errors += other.truth_errors
        self.truth_depths += other.truth_depths

    def figures(self) -> dict:
        lidar_errors = np.concatenate(self.lidar_errors) if self.lidar_errors else np.zeros(0)
        truth_errors = np.concatenate(self.truth_errors) if self.truth_errors else np.zeros(0)
        lidar = depth_errors(lidar_errors, np.concatenate(self.lidar_depths) if self.lidar_depths else np.zeros(0))
        lidar["coverage"] = float(lidar_errors.size / max(self.lidar_projected, 1))
        all_pixels = semantic_scores(self.confusion_all)
        all_pixels["pixel_accuracy"] = float(np.trace(self.confusion_all) / max(self.confusion_all.sum(), 1))  # sky == background too
        all_pixels["num_pixels"] = int(self.confusion_all.sum())
        return {
            "depth_vs_lidar": lidar,
            "semantic_in_grid": semantic_scores(self.confusion_in_grid),
            "semantic_all_pixels": all_pixels,
            "depth_vs_truth": depth_errors(truth_errors, np.concatenate(self.truth_depths) if self.truth_depths else np.zeros(0)),
        }


def score_scene(render, frames, truth, grid: OccGrid, dataroot, min_alpha: float) -> SceneScore:
    """Score one scene's render.zarr against its LiDAR and truth stores (all opened)."""
    score = SceneScore()
    truth_index = {int(ts): i for i, ts in enumerate(truth["timestamp_us"].values)}
    render_ts = render["timestamp_us"].values
    missing = [int(ts) for ts in render_ts if int(ts) not in truth_index]
    if missing:
        raise UserError(f"truth store of scene {render.attrs.get('scene')} lacks frames at {missing[:3]} us: rerun `uniscene synth`")
    frame_index = {int(ts): i for i, ts in enumerate(frames["timestamp_us"].values)}
    image_intrinsics = frames["cam_intrinsics"].values  # [T, V, 3, 3] at the truth's image size
    for t, ts in enumerate(render_ts):
        semantic = scoring_classes(render["semantic"][t].values)  # [V, H, W]
        depth = render["depth"][t].values.astype(np.float32)
        drawn = render["alpha"][t].values.astype(np.float32) >= min_alpha
        intrinsics = render["intrinsics"][t].values
        f = frame_index[int(ts)]
        ego_from_cam = frames["ego_from_cam"].values[f]
        size_hw = semantic.shape[-2:]

        # 1. Depth against the frame's LiDAR points inside the grid.
        points = frame_lidar_ego(frames, f, dataroot)
        cam, row, col, z = project_points(points[inside_grid(points, grid)], ego_from_cam, intrinsics, size_hw)
        hit = drawn[cam, row, col]
        score.lidar_projected += z.size
        score.lidar_errors.append(np.abs(depth[cam, row, col][hit] - z[hit]))
        score.lidar_depths.append(z[hit])

        # 2. Semantics and depth against the synthetic cameras (truth at its own size, resampled).
        k = truth_index[int(ts)]
        true_depth_full = truth["cam_depth"][k].values  # [V, Ht, Wt]
        true_points = pixel_points_ego(true_depth_full, image_intrinsics[f], ego_from_cam)
        in_grid_full = inside_grid(true_points, grid) & (true_depth_full > 0)
        true_class = resample_nearest(truth["cam_semantics"][k].values.astype(np.int64), size_hw)
        true_class[true_class == SKY] = NONE_INDEX
        in_grid = resample_nearest(in_grid_full, size_hw)
        true_depth = resample_nearest(true_depth_full, size_hw)
        score.confusion_all += confusion_matrix(true_class, semantic)
        score.confusion_in_grid += confusion_matrix(true_class[in_grid], semantic[in_grid])
        measured = in_grid & drawn
        score.truth_errors.append(np.abs(depth[measured] - true_depth[measured]))
        score.truth_depths.append(true_depth[measured])
    return score


def evaluate(config: dict, scenes: list[SceneStores]) -> dict:
    grid = OccGrid.from_config(config)
    settings = RenderSettings.from_config(config)
    dataroot = config["dataset"]["dataroot"]
    total = SceneScore()
    per_scene = {}
    for stores in scenes:
        scene = stores.scene
        render, frames = stores.open("render"), stores.open("frames")
        truth = open_store(truth_store(dataroot, scene))
        score = score_scene(render, frames, truth, grid, dataroot, settings.min_alpha)
        total.add(score)
        figures = score.figures()
        per_scene[scene] = {
            "depth_vs_lidar_median_abs_error_m": figures["depth_vs_lidar"].get("median_abs_error_m"),
            "pixel_accuracy": figures["semantic_in_grid"]["pixel_accuracy"],
            "miou": figures["semantic_in_grid"]["miou"],
            "frames_per_second": render.attrs.get("frames_per_second"),
            "backend": render.attrs.get("backend"),
            "source": render.attrs.get("source"),
            "device": render.attrs.get("device"),
        }
    payload = total.figures()
    payload.update({
        "scenes": per_scene,
        "source": ", ".join(sorted({str(entry["source"]) for entry in per_scene.values()})),
        "min_alpha": settings.min_alpha,
        "how": __doc__.split("\n\n", 1)[1].strip(),
    })
    return payload
