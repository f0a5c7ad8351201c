"""Video metrics (uniscene/metrics/video.py and its parts) against truth, and `uniscene metrics video` end to end.

Numbers against closed forms (PSNR, SSIM, Frechet distance, mIoU), LPIPS against torchmetrics'
own module with the same (random) backbone, the cross-view figure on the synthetic cameras' true
images and depth, the segmenter trained briefly by `uniscene train-segmenter` on one scene and
scored on the other's true images, and `uniscene metrics video` on stand-in stores: a render
made of the truth's classes and depth, videos made of the true images (resized) and of noise,
with LPIPS, FID and FVD read from small networks the tests build and pin by sha256.
"""

import copy
import json
from unittest import mock

import numpy as np
import pytest
import torch
import xarray as xr

from store_examples import complete
from uniscene import cli
from uniscene.config import dumps
from uniscene.data.images import read_images, resize_images, resize_nearest
from uniscene.data.scenes import train_scenes, val_scenes
from uniscene.errors import UserError
from uniscene.metrics.cross_view import CrossViewScore, neighbour_matches, photometric_errors
from uniscene.metrics.frechet import FeatureNetwork, FeatureNetworkSpec, features_frechet, frechet_distance
from uniscene.metrics.lpips import LPIPS, alexnet_features, load_lpips, torchmetrics_heads_path
from uniscene.metrics.pinned import sha256_of
from uniscene.metrics.render import NONE_INDEX, confusion_matrix
from uniscene.metrics.video import PSNR_CAP_DB, class_scores, psnr_db, ssim
from uniscene.paths import scene_store, truth_store
from uniscene.sensors import CAMERA_NAMES
from uniscene.store import open_store, write_store

VIDEO_HW = (48, 80)  # the stand-in videos' size: the 45 x 80 true images resized
FRAME_STEP = 3  # the stand-in videos hold every 3rd frame of the held-out scene (a video may cover some frames only)
CLIP_FRAMES = 4
SEGMENTER_STEPS = 80


# ------------------------------------------------------------------------------- closed forms


def test_psnr_identical_is_capped_and_known_offset_matches_formula():
    rng = np.random.default_rng(0)
    a = rng.integers(20, 200, (3, 16, 24, 3), dtype=np.uint8)
    assert np.all(psnr_db(a, a) == PSNR_CAP_DB)
    b = a + np.uint8(10)  # every value off by 10 of 255
    np.testing.assert_allclose(psnr_db(a, b), 20 * np.log10(255 / 10), rtol=1e-12)
    noise = rng.choice([-8, 8], size=a.shape)  # |error| 8 everywhere: MSE (8/255)^2
    np.testing.assert_allclose(psnr_db(a, (a + noise).astype(np.uint8)), 20 * np.log10(255 / 8), rtol=1e-12)


def test_ssim_is_one_for_identical_and_lower_for_noise():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (2, 32, 48, 3), dtype=np.uint8)
    np.testing.assert_allclose(ssim(a, a), 1.0, atol=1e-6)
    noisy = np.clip(a + rng.normal(0, 40, a.shape), 0, 255).astype(np.uint8)
    assert np.all(ssim(a, noisy) < 0.9)


def test_frechet_distance_closed_forms():
    # one dimension: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 1, abs=1e-9)
    # commuting covariances (one eigenbasis): ||mu1 - mu2||^2 + sum (sqrt(a_i) - sqrt(b_i))^2
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    a, b = rng.uniform(0.5, 3, 5), rng.uniform(0.5, 3, 5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mu1, q @ np.diag(a) @ q.T, mu1, q @ np.diag(a) @ q.T) == pytest.approx(0, abs=1e-8)
    # from samples: near the closed form of the two Gaussians they are drawn from
    x = rng.normal(0, 1, (20000, 3))
    y = rng.normal(0.5, 2, (20000, 3))
    assert features_frechet(x, y) == pytest.approx(3 * 0.25 + 3 * (2 - 1) ** 2, rel=0.05)


def test_miou_of_truth_against_itself_is_one():
    rng = np.random.default_rng(3)
    classes = rng.integers(0, NONE_INDEX + 1, (4, 20, 30))
    scores = class_scores(confusion_matrix(classes, classes))
    assert scores["miou"] == 1.0 and scores["pixel_accuracy"] == 1.0 and scores["pixel_accuracy_with_sky"] == 1.0
    shuffled = rng.permutation(classes.reshape(-1)).reshape(classes.shape)
    assert class_scores(confusion_matrix(classes, shuffled))["miou"] < 0.2


# ------------------------------------------------------------------------------------------ LPIPS


def _random_backbone_state(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    return {f"features.{k}": v for k, v in alexnet_features().state_dict().items()}


def test_lpips_heads_come_from_torchmetrics_and_it_agrees_with_torchmetrics(tmp_path):
    import torchmetrics.functional.image.lpips as tm_lpips

    state = _random_backbone_state()
    torch.save({**state, "classifier.1.weight": torch.zeros(2, 2)}, tmp_path / "alexnet.pth")  # torchvision's file has a classifier
    model = load_lpips(tmp_path / "alexnet.pth")
    shipped = torch.load(torchmetrics_heads_path(), map_location="cpu", weights_only=True)
    for i, head in enumerate(model.heads):
        assert torch.equal(head.weight, shipped[f"lin{i}.model.1.weight"])
    # torchmetrics' own LPIPS module, its torchvision backbone swapped for the same random weights
    with mock.patch.object(tm_lpips, "_get_tv_model_features", lambda net, pretrained=False: alexnet_features()):
        reference = tm_lpips._LPIPS(pretrained=True, net="alex", pnet_rand=True)
    slice_of = lambda i: 1 if i < 2 else 2 if i < 5 else 3 if i < 8 else 4 if i < 10 else 5  # noqa: E731
    reference.net.load_state_dict({f"slice{slice_of(int(k.split('.')[1]))}.{k[len('features.'):]}": v for k, v in state.items()})
    a, b = torch.rand(3, 3, 48, 80, generator=torch.Generator().manual_seed(0)), torch.rand(3, 3, 48, 80)
    torch.testing.assert_close(model(a, b), reference(a, b, normalize=True).reshape(-1), rtol=1e-5, atol=1e-6)


def test_lpips_zero_for_identical_symmetric_and_monotone_in_noise():
    model = LPIPS()
    model.load_backbone(_random_backbone_state(1))
    model.load_heads(torch.load(torchmetrics_heads_path(), map_location="cpu", weights_only=True))
    generator = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, 64, 96, generator=generator)
    assert torch.all(model(x, x) == 0)
    noise = torch.randn(x.shape, generator=generator)
    distances = [model(x, (x + sigma * noise).clamp(0, 1)) for sigma in (0.02, 0.05, 0.1, 0.2, 0.4)]
    y = (x + 0.1 * noise).clamp(0, 1)
    torch.testing.assert_close(model(x, y), model(y, x))
    for lower, higher in zip(distances, distances[1:]):
        assert torch.all(higher > lower)


def test_lpips_backbone_file_must_be_alexnet(tmp_path):
    torch.save({"features.0.weight": torch.zeros(3)}, tmp_path / "wrong.pth")
    with pytest.raises(UserError, match="video_metrics.lpips.backbone"):
        load_lpips(tmp_path / "wrong.pth")


# ------------------------------------------------------------------------------------ feature nets


class _ImageFeatures(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)

    def forward(self, x):
        return torch.relu(self.conv(x / 255.0)).mean((2, 3))


class _ClipFeatures(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 6, 3, stride=2)

    def forward(self, x, return_features: bool = False):
        out = torch.relu(self.conv(x))  # [N, 6, T', H', W']: FeatureNetwork averages the trailing dims
        return out if return_features else out.mean()


def _save_script(module, path) -> str:
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(module), str(path))
    return sha256_of(path)


def test_feature_network_is_pinned_and_must_be_torchscript(tmp_path):
    sha = _save_script(_ImageFeatures(), tmp_path / "net.pt")
    spec = dict(network=str(tmp_path / "net.pt"), sha256=sha, input_size=[20, 30], input_range=[0.0, 255.0], kwargs={})
    net = FeatureNetwork(FeatureNetworkSpec.from_config("video_metrics.fid", spec))
    features = net.image_features(np.zeros((5, 16, 24, 3), np.uint8))
    assert features.shape == (5, 8)
    with pytest.raises(UserError, match=sha):  # the error tells the digest to set
        FeatureNetwork(FeatureNetworkSpec.from_config("video_metrics.fid", {**spec, "sha256": None}))
    with pytest.raises(UserError, match="video_metrics.fid.sha256 says"):
        FeatureNetwork(FeatureNetworkSpec.from_config("video_metrics.fid", {**spec, "sha256": "0" * 64}))
    torch.save(_ImageFeatures().state_dict(), tmp_path / "state.pt")
    with pytest.raises(UserError, match="not a TorchScript archive"):
        FeatureNetwork(FeatureNetworkSpec.from_config("video_metrics.fid", {**spec, "network": str(tmp_path / "state.pt"),
                                                                             "sha256": sha256_of(tmp_path / "state.pt")}))


# ------------------------------------------------------------------------ the synthetic dataset


@pytest.fixture(scope="module")
def video_run(synthetic_dataset, tmp_path_factory):
    """Frames stores of both scenes, the segmenter trained on the training scene, stand-in stores of the held-out one."""
    config, dataroot = synthetic_dataset
    config = copy.deepcopy(config)
    config["device"] = "cpu"
    config["segmenter"] = {**config["segmenter"], "steps": SEGMENTER_STEPS, "batch_size": 8}
    results = tmp_path_factory.mktemp("video_metrics")
    train, held_out = train_scenes(config), val_scenes(config)
    for scene in train + held_out:
        assert cli.main(["frames", "--config", dumps(config), "--scene", scene, "--out", str(scene_store(results, scene, "frames"))]) == 0
    segmenter = results / "models" / "segmenter"
    argv = ["train-segmenter", "--config", dumps(config), "--frames", *[str(scene_store(results, s, "frames")) for s in train],
            "--val-frames", *[str(scene_store(results, s, "frames")) for s in held_out], "--out", str(segmenter)]
    assert cli.main(argv) == 0
    for scene in held_out:
        _write_stand_ins(config, dataroot, scene, results)
    return config, dataroot, results, segmenter, held_out


def _write_stand_ins(config, dataroot, scene, results):
    """render.zarr of the truth's classes and depth; video.zarr of the true images resized to VIDEO_HW; noise videos."""
    frames = open_store(scene_store(results, scene, "frames"), "frames").isel(frame=slice(None, None, FRAME_STEP))
    truth = open_store(truth_store(dataroot, scene))
    index = {int(t): i for i, t in enumerate(truth["timestamp_us"].values)}
    k = [index[int(t)] for t in frames["timestamp_us"].values]
    depth = truth["cam_depth"].values[k]
    render = xr.Dataset({
        "semantic": (("frame", "cam", "h", "w"), truth["cam_semantics"].values[k]),  # occupancy ids are render ids; 255 sky = background
        "depth": (("frame", "cam", "h", "w"), depth.astype(np.float16)),
        "alpha": (("frame", "cam", "h", "w"), (depth > 0).astype(np.float16)),
        "intrinsics": (("frame", "cam", "k_row", "k_col"), frames["cam_intrinsics"].values),
        "timestamp_us": ("frame", frames["timestamp_us"].values),
    }, attrs={"scene": scene, "source": "label"})
    write_store(scene_store(results, scene, "render"), complete(render, "render"), stage="render", config_subset={})
    write_store(scene_store(results, scene, "gen/render"), complete(render.assign_attrs(source="generated"), "render"), stage="render",
                config_subset={})
    true = read_images(dataroot, frames["cam_image_path"].values.reshape(-1), VIDEO_HW).reshape(frames.sizes["frame"], 6, *VIDEO_HW, 3)
    noise = np.random.default_rng(5).integers(0, 256, true.shape, dtype=np.uint8)
    for name, rgb, source, cross_view in (("video", true, "label", True), ("variants/video_no_crossview", noise, "label", False),
                                          ("gen/video", true, "generated", True)):
        video = xr.Dataset({"rgb": (("frame", "cam", "h", "w", "channel"), rgb), "timestamp_us": ("frame", frames["timestamp_us"].values)},
                           attrs={"scene": scene, "source": source, "cross_view": cross_view, "first_frame": False,
                                  "camera_names": list(CAMERA_NAMES)})
        write_store(scene_store(results, scene, name), complete(video, "video"), stage="video", config_subset={})


def test_cross_view_on_truth_agrees_and_a_noise_view_does_not(video_run):
    config, dataroot, results, _, held_out = video_run
    frames = open_store(scene_store(results, held_out[0], "frames"), "frames")
    truth = open_store(truth_store(dataroot, held_out[0]))
    clean, noised = CrossViewScore(6), CrossViewScore(6)
    rng = np.random.default_rng(6)
    for t in range(0, frames.sizes["frame"], 4):
        images = read_images(dataroot, frames["cam_image_path"].values[t])
        matches = neighbour_matches(truth["cam_depth"].values[t], frames["cam_intrinsics"].values[t], frames["ego_from_cam"].values[t], 0.05)
        clean.add(photometric_errors(images, matches), matches, 0.1)
        images[2] = rng.integers(0, 256, images[2].shape, dtype=np.uint8)  # CAM_BACK_RIGHT replaced by noise
        noised.add(photometric_errors(images, matches), matches, 0.1)
    truth_figures, noise_figures = clean.figures(CAMERA_NAMES), noised.figures(CAMERA_NAMES)
    assert truth_figures["matched_pixels"] > 1000
    assert truth_figures["pixel_error"] < 0.06 and truth_figures["agreement"] > 0.9
    for pair in ("CAM_FRONT_RIGHT->CAM_BACK_RIGHT", "CAM_BACK_RIGHT->CAM_BACK"):  # the noised view's two pairs
        assert noise_figures["pairs"][pair]["pixel_error"] > 0.2 and noise_figures["pairs"][pair]["agreement"] < 0.4
    assert noise_figures["pairs"]["CAM_FRONT->CAM_FRONT_RIGHT"] == truth_figures["pairs"]["CAM_FRONT->CAM_FRONT_RIGHT"]


def test_segmenter_beats_chance_on_held_out_true_images(video_run):
    _, _, _, segmenter, held_out = video_run
    training = json.loads((segmenter / "training.json").read_text())
    scores = training["held_out_true_images"]
    assert scores["num_images"] > 0 and training["image_size"] == [45, 80]
    # chance: every pixel given the commonest class of the held-out truth
    config, dataroot, results, _, _ = video_run
    truth = open_store(truth_store(dataroot, held_out[0]))["cam_semantics"].values.astype(np.int64)
    truth[truth == 255] = NONE_INDEX
    chance = class_scores(confusion_matrix(truth, np.full_like(truth, np.bincount(truth.reshape(-1)).argmax())))
    assert scores["pixel_accuracy"] > chance["pixel_accuracy"] + 0.25, (scores["pixel_accuracy"], chance["pixel_accuracy"])
    assert scores["miou"] > 4 * chance["miou"] and scores["miou"] > 0.2, (scores["miou"], chance["miou"])


def _metrics_config(video_run, tmp_path):
    config, *_ = video_run
    config = copy.deepcopy(config)
    torch.manual_seed(0)
    torch.save({f"features.{k}": v for k, v in alexnet_features().state_dict().items()}, tmp_path / "alexnet.pth")
    fid_sha = _save_script(_ImageFeatures(), tmp_path / "fid.pt")
    fvd_sha = _save_script(_ClipFeatures(), tmp_path / "fvd.pt")
    config["video_metrics"] = {
        **config["video_metrics"],
        "lpips": {"backbone": str(tmp_path / "alexnet.pth"), "sha256": sha256_of(tmp_path / "alexnet.pth")},
        "fid": {**config["video_metrics"]["fid"], "network": str(tmp_path / "fid.pt"), "sha256": fid_sha, "input_size": [32, 48]},
        "fvd": {**config["video_metrics"]["fvd"], "network": str(tmp_path / "fvd.pt"), "sha256": fvd_sha, "input_size": [24, 32],
                "kwargs": {"return_features": True}, "clip_frames": CLIP_FRAMES},
    }
    return config


def _metrics_argv(video_run, config, out, *, gen: bool = True, segmenter: bool = True) -> list:
    _, _, results, segmenter_dir, held_out = video_run
    stores = lambda name: [str(scene_store(results, s, name)) for s in held_out]  # noqa: E731
    argv = ["metrics", "video", "--config", dumps(config), "--frames", *stores("frames"), "--render", *stores("render"),
            "--video", *stores("video"), "--video-no-crossview", *stores("variants/video_no_crossview"), "--out", str(out)]
    if gen:
        argv += ["--video-gen", *stores("gen/video"), "--render-gen", *stores("gen/render")]
    if segmenter:
        argv += ["--segmenter", str(segmenter_dir)]
    return argv


def test_metrics_video_end_to_end_truth_high_noise_low(video_run, tmp_path):
    config = _metrics_config(video_run, tmp_path)
    out = tmp_path / "video.json"
    assert cli.main(_metrics_argv(video_run, config, out)) == 0
    payload = json.loads(out.read_text())
    truth, noise, gen = (payload["variants"][k] for k in ("cross_view", "no_cross_view", "generated_chain"))
    ceiling = payload["true_images"]["condition_consistency"]
    # the stand-in made of the true images: perfect pixel figures, condition consistency at the segmenter's ceiling
    assert truth["psnr_db"] == PSNR_CAP_DB and truth["ssim"] == pytest.approx(1.0, abs=1e-6) and truth["lpips"] == 0
    assert truth["condition_consistency"]["vs_truth"]["miou"] == pytest.approx(ceiling["miou"])
    assert ceiling["miou"] > 0.2 and truth["fid"]["value"] == pytest.approx(0, abs=1e-6) and truth["fvd"]["value"] == pytest.approx(0, abs=1e-6)
    assert truth["cross_view_consistency"]["pixel_error"] < 0.06 and truth["cross_view_consistency"]["agreement"] > 0.9
    # noise: low everywhere
    assert noise["psnr_db"] < 12 and noise["ssim"] < 0.1 and noise["lpips"] > 0
    assert noise["condition_consistency"]["vs_truth"]["miou"] < 0.5 * ceiling["miou"]
    assert noise["cross_view_consistency"]["pixel_error"] > 0.25 and noise["cross_view_consistency"]["agreement"] < 0.3
    assert noise["fid"]["value"] > 10 * max(truth["fid"]["value"], 1e-3) and noise["fvd"]["value"] > 10 * max(truth["fvd"]["value"], 1e-3)
    # the generated chain: no pixel figures, condition consistency against its own render
    assert "psnr_db" not in gen and set(gen["condition_consistency"]) == {"vs_render"}
    assert gen["condition_consistency"]["vs_render"]["miou"] == pytest.approx(truth["condition_consistency"]["vs_truth"]["miou"])
    # the protocol is written down
    assert payload["protocol"]["fvd"]["clip_frames"] == CLIP_FRAMES and "bilinear" in payload["protocol"]["resize"]["true_images"]
    frames = len(range(0, open_store(scene_store(video_run[2], video_run[4][0], "frames"), "frames").sizes["frame"], FRAME_STEP))
    assert truth["frames_scored"] == frames and truth["images_scored"] == 6 * frames
    assert truth["fvd"]["num_clips"] == 6 * (frames // CLIP_FRAMES) and truth["image_size"] == [list(VIDEO_HW)]
    assert payload["networks"]["lpips"]["backbone_sha256"] == config["video_metrics"]["lpips"]["sha256"]
    assert payload["segmenter"]["held_out_true_images"]["miou"] > 0.2 and "skipped" not in payload


def test_metrics_video_skips_unconfigured_networks_with_one_line_each(video_run, tmp_path):
    config, *_ = video_run
    out = tmp_path / "video.json"
    assert cli.main(_metrics_argv(video_run, config, out, gen=False)) == 0
    payload = json.loads(out.read_text())
    assert set(payload["skipped"]) == {"lpips", "fid", "fvd"}
    assert "video_metrics.lpips.backbone" in payload["skipped"]["lpips"] and "video_metrics.fid.network" in payload["skipped"]["fid"]
    truth = payload["variants"]["cross_view"]
    assert "lpips" not in truth and "fid" not in truth and truth["psnr_db"] == PSNR_CAP_DB
    assert "generated_chain" not in payload["variants"]


def test_metrics_video_bad_inputs_exit_2(video_run, tmp_path, capsys):
    config, *_ = video_run
    out = tmp_path / "video.json"
    assert cli.main(_metrics_argv(video_run, config, out, segmenter=False)) == 2
    assert "--segmenter" in capsys.readouterr().err
    bad = copy.deepcopy(config)
    bad["video_metrics"]["fid"] = {**bad["video_metrics"]["fid"], "network": str(tmp_path / "missing.pt")}
    assert cli.main(_metrics_argv(video_run, bad, out)) == 2
    assert "video_metrics.fid.network" in capsys.readouterr().err
    argv = _metrics_argv(video_run, config, out, gen=False)
    swapped = argv.index("--video-no-crossview")
    argv[swapped], argv[argv.index("--video")] = "--video", "--video-no-crossview"  # the two variants swapped
    assert cli.main(argv) == 2
    assert "cross_view" in capsys.readouterr().err
    assert not out.exists()


def test_resize_rules():
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (2, 9, 16, 3), dtype=np.uint8)
    assert resize_images(images, (9, 16)).tobytes() == images.tobytes()
    assert resize_images(images, (18, 32)).shape == (2, 18, 32, 3)
    classes = rng.integers(0, 18, (9, 16))
    doubled = resize_nearest(classes, (18, 32))
    assert np.array_equal(doubled[::2, ::2], classes) and set(np.unique(doubled)) <= set(np.unique(classes))
