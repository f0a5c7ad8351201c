"""Generated multi-view video scored against the held-out scenes' true camera images.

The rule gives, for each held-out scene (`val_scenes`; every scene where there is none), its
frames.zarr, the label chain's render.zarr and two videos generated from it: video.zarr
(cross-view attention on) and variants/video_no_crossview.zarr (off); and, where given, the
generated chain's gen/video.zarr with its gen/render.zarr (`--video-gen`, `--render-gen`).
`--segmenter` names the trained segmentation network (`uniscene train-segmenter`). Every
figure pools all scored frames and cameras of all scenes; where a video was given its real
first frame (attribute first_frame), that frame is left out of every figure.

Truth at the video's size (h x w, from its `rgb`): the true camera images (frames.zarr
`cam_image_path`) resized bilinear; the true classes (truth store `cam_semantics`), the true
depth (`cam_depth`) and the render's maps resized to the nearest pixel centre; intrinsics
scaled to h x w.

Pixel figures (label chain only: the generated chain has no pixel truth), per image then the
mean over images:
- psnr_db: 10 log10(1 / MSE) over the RGB values on a 0..1 scale, capped at 100 dB (identical).
- ssim: torchmetrics' SSIM (Gaussian window 11, sigma 1.5, data range 1), mean over the image.
- lpips: LPIPS-AlexNet (uniscene/metrics/lpips.py), images on a 0..1 scale.

Condition consistency: the segmenter reads each generated frame's classes (frame resized
bilinear to the size it was trained at, logits resized back); the confusion against each
pixel's true class (`vs_truth`: the label chain) and against the class its own render says
(`vs_render`: background as sky; the generated chain's only reference) gives pixel accuracy
and mIoU over the occupancy classes present in the reference. `true_images` runs the same
segmenter on the true images: the ceiling; `segmenter` repeats its training.json figures.

Cross-view consistency: uniscene/metrics/cross_view.py; the pixels are mapped with the video's
own render depth (label: render.zarr; generated: gen/render.zarr). `true_images` gives the same
figure of the true images under the render's mapping and under the true depth's.

FID / FVD: Frechet distances (uniscene/metrics/frechet.py) between the generated frames (every
camera) or clips (each camera's scored frames cut into consecutive clips of fvd.clip_frames) and
the true ones of the same scenes and frames, on local pinned feature networks; skipped with one
line where none is configured.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uniscene.config import resolve_device
from uniscene.data.images import IMAGE_RESIZE, LABEL_RESIZE, read_images, resize_nearest, scale_intrinsics
from uniscene.data.scenes import val_scenes
from uniscene.errors import UserError
from uniscene.metrics import SceneStores
from uniscene.metrics.cross_view import CrossViewScore, neighbour_matches, photometric_errors
from uniscene.metrics.frechet import FeatureNetwork, FeatureNetworkSpec, features_frechet
from uniscene.metrics.pinned import pinned_file, sha256_of, skipped_line
from uniscene.metrics.render import NONE_INDEX, confusion_matrix, scoring_classes, semantic_scores
from uniscene.paths import truth_store
from uniscene.sensors import CAMERA_NAMES
from uniscene.settings import Settings
from uniscene.store import open_store

PSNR_CAP_DB = 100.0
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5
# store kind -> (what the JSON calls it, chain, cross-view attention expected)
VIDEO_KINDS = {"video": ("cross_view", "label", True), "video_no_crossview": ("no_cross_view", "label", False),
               "video_gen": ("generated_chain", "generated", None)}
RENDER_OF_KIND = {"video": "render", "video_no_crossview": "render", "video_gen": "render_gen"}


@dataclass(frozen=True)
class VideoMetricSettings(Settings):
    SECTION = "video_metrics"

    lpips: dict  # backbone, sha256
    fid: dict  # network, sha256, input_size, input_range, kwargs
    fvd: dict  # as fid, and clip_frames
    cross_view: dict  # depth_tolerance, agree_threshold
    batch_frames: int


def psnr_db(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR of uint8 images [N, h, w, 3] on a 0..1 scale, capped at PSNR_CAP_DB, [N]."""
    diff = (a.astype(np.float64) - b.astype(np.float64)) / 255.0
    mse = (diff * diff).reshape(len(a), -1).mean(1)
    return np.minimum(10 * np.log10(1.0 / np.maximum(mse, 1e-300)), PSNR_CAP_DB)


def _to_tensor(images: np.ndarray, device: str):
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 255.0


def ssim(a: np.ndarray, b: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Per-image SSIM of uint8 images [N, h, w, 3] (torchmetrics, Gaussian window 11, sigma 1.5, data range 1), [N]."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    value = structural_similarity_index_measure(_to_tensor(a, device), _to_tensor(b, device), data_range=1.0, kernel_size=SSIM_WINDOW,
                                                sigma=SSIM_SIGMA, reduction="none")
    return value.double().cpu().numpy().reshape(len(a))


class Networks:
    """The learned networks of the figures: the segmenter (required), LPIPS, FID and FVD (each where configured)."""

    def __init__(self, settings: VideoMetricSettings, segmenter_dir, device: str):
        from uniscene.metrics.lpips import load_lpips, torchmetrics_heads_path
        from uniscene.models.segmenter.network import SegmenterNet

        self.device, self.skipped, self.described = device, {}, {}
        folder = Path(segmenter_dir)
        if not (folder / "config.json").is_file() or not (folder / "training.json").is_file():
            raise UserError(f"--segmenter {folder} is not a trained segmenter (no config.json / training.json): run "
                            f"`uniscene train-segmenter` (`snakemake results/models/segmenter`)")
        self.segmenter = SegmenterNet.from_pretrained(folder, low_cpu_mem_usage=False).to(device).eval()
        self.segmenter_training = json.loads((folder / "training.json").read_text())
        self.segmenter_size = tuple(self.segmenter_training["image_size"])
        self.described["segmenter"] = {"folder": str(folder), "image_size": list(self.segmenter_size)}

        self.lpips = None
        backbone = settings.lpips.get("backbone")
        if backbone is None:
            self.skipped["lpips"] = skipped_line("LPIPS's AlexNet backbone (torchvision's ImageNet weights)", "video_metrics.lpips.backbone",
                                                 "alexnet-owt-7be5be79.pth")
        else:
            path = pinned_file(backbone, settings.lpips.get("sha256"), "video_metrics.lpips.backbone")
            self.lpips = load_lpips(path).to(device)
            self.described["lpips"] = {"backbone": str(path), "backbone_sha256": sha256_of(path),
                                       "heads": str(torchmetrics_heads_path()), "heads_sha256": sha256_of(torchmetrics_heads_path())}
        self.fid = self.fvd = None
        for name, what, example in (("fid", "FID's image feature network", "an Inception-v3 TorchScript"),
                                    ("fvd", "FVD's video feature network", "an I3D TorchScript")):
            spec = FeatureNetworkSpec.from_config(f"video_metrics.{name}", getattr(settings, name))
            if spec.network is None:
                self.skipped[name] = skipped_line(what, f"video_metrics.{name}.network", example)
                continue
            network = FeatureNetwork(spec, device)
            setattr(self, name, network)
            self.described[name] = network.describe()
        self.clip_frames = int(settings.fvd["clip_frames"])

    def lpips_values(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.lpips(_to_tensor(a, self.device), _to_tensor(b, self.device)).double().cpu().numpy()

    def classes(self, images: np.ndarray) -> np.ndarray:
        from uniscene.models.segmenter.train import segment

        return segment(self.segmenter, images, size_hw=self.segmenter_size).astype(np.int64)


class VideoScore:
    """Pooled figures of one kind of video over the scenes."""

    def __init__(self):
        size = NONE_INDEX + 1
        self.psnr, self.ssim, self.lpips = [], [], []
        self.confusion_truth = np.zeros((size, size), np.int64)
        self.confusion_render = np.zeros((size, size), np.int64)
        self.true_confusion_truth = np.zeros((size, size), np.int64)
        self.cross_view = CrossViewScore(len(CAMERA_NAMES))
        self.true_cross_view_render = CrossViewScore(len(CAMERA_NAMES))
        self.true_cross_view_truth = CrossViewScore(len(CAMERA_NAMES))
        self.fid_features, self.fid_true, self.fvd_features, self.fvd_true = [], [], [], []
        self.frames, self.images, self.clips = 0, 0, 0
        self.stores, self.sizes, self.first_frame = [], set(), set()


def _check_video(video, path, kind: str, frames, scene: str) -> None:
    name, chain, cross_view = VIDEO_KINDS[kind]
    cameras = list(video.attrs.get("camera_names", CAMERA_NAMES))
    if cameras != list(CAMERA_NAMES):
        raise UserError(f"video store {path} holds the cameras {cameras}, uniscene's order is {list(CAMERA_NAMES)}: regenerate it")
    source = video.attrs.get("source")
    if source is not None and source != chain:
        raise UserError(f"video store {path} was made from {source} occupancy, --{kind.replace('_', '-')} takes the {chain} chain's: "
                        f"check the argument")
    if cross_view is not None and "cross_view" in video.attrs and bool(video.attrs["cross_view"]) != cross_view:
        raise UserError(f"video store {path} has cross_view {video.attrs['cross_view']}, --{kind.replace('_', '-')} takes a video "
                        f"with cross-view attention {'on' if cross_view else 'off'}: check the argument")
    known = set(int(t) for t in frames["timestamp_us"].values)
    missing = [int(t) for t in video["timestamp_us"].values if int(t) not in known]
    if missing:
        raise UserError(f"video store {path} holds frames at {missing[:3]} us that frames.zarr of scene {scene} lacks: regenerate it")


def score_scene(score: VideoScore, kind: str, stores: SceneStores, networks: Networks, settings: VideoMetricSettings,
                dataroot, with_truth_figures: bool) -> None:
    """Add one scene's video of `kind` to `score`."""
    frames, video, render = stores.open("frames"), stores.open(kind), stores.open(RENDER_OF_KIND[kind])
    path = stores.paths[kind]
    _check_video(video, path, kind, frames, stores.scene)
    chain = VIDEO_KINDS[kind][1]
    truth = open_store(truth_store(dataroot, stores.scene))
    if "cam_semantics" not in truth or "cam_depth" not in truth:
        raise UserError(f"truth store {truth_store(dataroot, stores.scene)} has no per-pixel camera truth: rerun `uniscene synth`")
    index = {name: {int(t): i for i, t in enumerate(store["timestamp_us"].values)} for name, store in
             (("frames", frames), ("truth", truth), ("render", render))}
    timestamps = [int(t) for t in video["timestamp_us"].values]
    first_given = bool(video.attrs.get("first_frame", False))
    scored = list(range(1 if first_given else 0, len(timestamps)))
    for name in ("truth", "render"):
        missing = [timestamps[t] for t in scored if timestamps[t] not in index[name]]
        if missing:
            fix = "rerun `uniscene synth`" if name == "truth" else f"render the frames of {path}"
            raise UserError(f"the {name} of scene {stores.scene} ({stores.paths.get(RENDER_OF_KIND[kind]) if name == 'render' else 'truth store'}) "
                            f"lacks frames at {missing[:3]} us that {path} holds: {fix}")
    h, w = video.sizes["h"], video.sizes["w"]
    score.stores.append(str(path))
    score.sizes.add((h, w))
    score.first_frame.add(first_given)
    image_hw = frames["cam_image_size"].values  # [V, 2]
    image_paths, ego_from_cams = frames["cam_image_path"].values, frames["ego_from_cam"].values  # [T, V], [T, V, 4, 4]
    intrinsics_all = np.stack([scale_intrinsics(frames["cam_intrinsics"].values[:, v], image_hw[v], (h, w))
                               for v in range(len(CAMERA_NAMES))], 1)  # [T, V, 3, 3] at h x w
    tolerance, threshold = float(settings.cross_view["depth_tolerance"]), float(settings.cross_view["agree_threshold"])
    generated_all, true_all = [], []
    for start in range(0, len(scored), settings.batch_frames):
        batch = scored[start:start + settings.batch_frames]
        f = [index["frames"][timestamps[t]] for t in batch]
        k = [index["truth"][timestamps[t]] for t in batch]
        r = [index["render"][timestamps[t]] for t in batch]
        generated = video["rgb"].isel(frame=batch).values  # [B, V, h, w, 3] uint8
        true = read_images(dataroot, image_paths[f].reshape(-1), (h, w)).reshape(generated.shape)
        true_class = resize_nearest(truth["cam_semantics"][k].values.astype(np.int64), (h, w))  # [B, V, h, w]
        true_class[true_class == 255] = NONE_INDEX
        render_class = resize_nearest(scoring_classes(render["semantic"][r].values), (h, w))
        render_depth = resize_nearest(render["depth"][r].values.astype(np.float32), (h, w))
        true_depth = resize_nearest(truth["cam_depth"][k].values.astype(np.float32), (h, w))
        flat_generated, flat_true = generated.reshape(-1, h, w, 3), true.reshape(-1, h, w, 3)

        # 1. pixel figures (the label chain has pixel truth)
        if chain == "label":
            score.psnr.append(psnr_db(flat_generated, flat_true))
            score.ssim.append(ssim(flat_generated, flat_true, networks.device))
            if networks.lpips is not None:
                score.lpips.append(networks.lpips_values(flat_generated, flat_true))
        # 2. condition consistency
        predicted = networks.classes(flat_generated).reshape(true_class.shape)
        if chain == "label":
            score.confusion_truth += confusion_matrix(true_class, predicted)
        score.confusion_render += confusion_matrix(render_class, predicted)
        if with_truth_figures:
            score.true_confusion_truth += confusion_matrix(true_class, networks.classes(flat_true).reshape(true_class.shape))
        # 3. cross-view consistency, frame by frame
        for i, fi in enumerate(f):
            intrinsics, ego_from_cam = intrinsics_all[fi], ego_from_cams[fi]
            matches = neighbour_matches(render_depth[i], intrinsics, ego_from_cam, tolerance)
            score.cross_view.add(photometric_errors(generated[i], matches), matches, threshold)
            if with_truth_figures:
                score.true_cross_view_render.add(photometric_errors(true[i], matches), matches, threshold)
                true_matches = neighbour_matches(true_depth[i], intrinsics, ego_from_cam, tolerance)
                score.true_cross_view_truth.add(photometric_errors(true[i], true_matches), true_matches, threshold)
        # 4. features for FID
        if networks.fid is not None:
            score.fid_features.append(networks.fid.image_features(flat_generated))
            score.fid_true.append(networks.fid.image_features(flat_true))
        if networks.fvd is not None:
            generated_all.append(generated)
            true_all.append(true)
        score.frames += len(batch)
        score.images += len(flat_generated)
    # 5. clips for FVD: each camera's scored frames in consecutive clips
    if networks.fvd is not None and generated_all:
        generated_all, true_all = np.concatenate(generated_all), np.concatenate(true_all)  # [T, V, h, w, 3]
        n = networks.clip_frames
        count = len(generated_all) // n
        if count:
            cut = lambda x: x[:count * n].reshape(count, n, *x.shape[1:]).swapaxes(1, 2).reshape(-1, n, h, w, 3)  # noqa: E731 [clips*V, n, ...]
            score.fvd_features.append(networks.fvd.clip_features(cut(generated_all)))
            score.fvd_true.append(networks.fvd.clip_features(cut(true_all)))
            score.clips += count * generated_all.shape[1]


def class_scores(confusion: np.ndarray) -> dict:
    """semantic_scores (occupancy classes) and the pixel accuracy counting sky / background as a class too."""
    return {**semantic_scores(confusion), "pixel_accuracy_with_sky": float(np.trace(confusion) / max(confusion.sum(), 1))}


def _mean(values: list) -> float | None:
    return float(np.mean(np.concatenate(values))) if values else None


def _frechet(generated: list, true: list, unit: str) -> dict:
    count = sum(len(g) for g in generated)
    if count < 2:
        return {"status": f"not computed: {count} {unit} scored, at least 2 needed"}
    return {"value": features_frechet(np.concatenate(generated), np.concatenate(true)), f"num_{unit}": count}


def figures(score: VideoScore, kind: str, networks: Networks) -> dict:
    chain = VIDEO_KINDS[kind][1]
    out = {"stores": score.stores, "frames_scored": score.frames, "images_scored": score.images,
           "image_size": [list(s) for s in sorted(score.sizes)], "first_frame_given": sorted(score.first_frame)}
    if chain == "label":
        out["psnr_db"], out["ssim"] = _mean(score.psnr), _mean(score.ssim)
        if networks.lpips is not None:
            out["lpips"] = _mean(score.lpips)
        out["condition_consistency"] = {"vs_truth": class_scores(score.confusion_truth), "vs_render": class_scores(score.confusion_render)}
    else:
        out["condition_consistency"] = {"vs_render": class_scores(score.confusion_render)}
    out["cross_view_consistency"] = score.cross_view.figures(CAMERA_NAMES)
    if networks.fid is not None:
        out["fid"] = _frechet(score.fid_features, score.fid_true, "images")
    if networks.fvd is not None:
        out["fvd"] = (_frechet(score.fvd_features, score.fvd_true, "clips") if score.clips else
                      {"status": f"not computed: fewer scored frames per scene than video_metrics.fvd.clip_frames ({networks.clip_frames})"})
    return out


def protocol(settings: VideoMetricSettings, networks: Networks) -> dict:
    return {
        "first_frame": "a video given its real first frame (attribute first_frame) is scored without that frame",
        "resize": {"true_images": f"to the video's h x w: {IMAGE_RESIZE}", "true_classes_and_depth": f"to h x w: {LABEL_RESIZE}",
                   "render_maps": f"to h x w: {LABEL_RESIZE}", "intrinsics": "scaled from each camera's image size to h x w",
                   "segmenter": f"frames resized ({IMAGE_RESIZE}) to {list(networks.segmenter_size)}, logits bilinear back to h x w",
                   "fid": f"frames resized ({IMAGE_RESIZE}) to {settings.fid['input_size']}" if networks.fid else None,
                   "fvd": f"frames resized ({IMAGE_RESIZE}) to {settings.fvd['input_size']}" if networks.fvd else None},
        "psnr": f"per image, RGB on 0..1, 10 log10(1 / MSE), capped at {PSNR_CAP_DB:g} dB; mean over images",
        "ssim": f"per image, torchmetrics SSIM, Gaussian window {SSIM_WINDOW}, sigma {SSIM_SIGMA}, data range 1; mean over images",
        "lpips": "per image, LPIPS-AlexNet (torchmetrics' linear heads, local backbone), inputs on 0..1; mean over images",
        "condition_consistency": "segmenter classes of each generated pixel vs its true class (vs_truth) and its render's class (vs_render); "
                                 "mIoU over the 17 occupancy classes present in the reference; sky/background is class 17 of pixel_accuracy_with_sky",
        "cross_view": {"depth_tolerance": settings.cross_view["depth_tolerance"], "agree_threshold": settings.cross_view["agree_threshold"],
                       "pairs": "ring neighbours (v, v + 1), v mapped into v + 1 with the video's render depth"},
        "fid": "all scored frames of every camera vs the true images of the same frames",
        "fvd": {"clip_frames": settings.fvd["clip_frames"], "clips": "each camera's scored frames in consecutive, non-overlapping clips; "
                "a shorter rest is left out", "reference": "the true images' clips of the same frames"},
    }


def evaluate(config: dict, scenes: list[SceneStores], segmenter=None) -> dict:
    if segmenter is None:
        raise UserError("`uniscene metrics video` needs --segmenter DIR (results/models/segmenter, from `uniscene train-segmenter`)")
    import torch

    settings = VideoMetricSettings.from_config(config)
    dataroot = config["dataset"]["dataroot"]
    networks = Networks(settings, segmenter, resolve_device(config))
    kinds = [kind for kind in VIDEO_KINDS if all(kind in s.paths for s in scenes)]
    partial = [kind for kind in VIDEO_KINDS if kind not in kinds and any(kind in s.paths for s in scenes)]
    if partial:
        raise UserError(f"--{partial[0].replace('_', '-')} names stores for some scenes only: give one per scene")
    if "video_gen" in kinds and not all("render_gen" in s.paths for s in scenes):
        raise UserError("--video-gen needs --render-gen (gen/render.zarr of the same scenes): the generated chain is scored against its own render")
    names = [s.scene for s in scenes]
    held_out = set(val_scenes(config))
    payload = {"scenes": names, "held_out": bool(held_out) and held_out >= set(names), "variants": {}}
    if networks.skipped:
        payload["skipped"] = networks.skipped
    truth_score = None
    for kind in kinds:
        score = VideoScore()
        for stores in scenes:
            with torch.no_grad():
                score_scene(score, kind, stores, networks, settings, dataroot, with_truth_figures=kind == "video")
        if kind == "video":
            truth_score = score
        payload["variants"][VIDEO_KINDS[kind][0]] = figures(score, kind, networks)
    if truth_score is not None:
        payload["true_images"] = {
            "condition_consistency": class_scores(truth_score.true_confusion_truth),
            "cross_view_consistency": {"render_depth": truth_score.true_cross_view_render.figures(CAMERA_NAMES),
                                       "true_depth": truth_score.true_cross_view_truth.figures(CAMERA_NAMES)},
            "note": "the segmenter and the cross-view figure on the true images of the frames of --video: the ceilings",
        }
    training = networks.segmenter_training
    payload["segmenter"] = {**networks.described.pop("segmenter"), "held_out_true_images": training.get("held_out_true_images"),
                            "train_seconds": training.get("train_seconds"), "steps": training.get("steps")}
    payload["networks"] = networks.described
    payload["protocol"] = protocol(settings, networks)
    payload["how"] = __doc__.split("\n\n", 1)[1].strip()
    return payload
