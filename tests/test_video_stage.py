"""`uniscene train-video` and `uniscene video` end to end on a small world (tests/video_world.py): the model folder,
generation without any true image, the store and its MP4, same seed same bytes, the first-frame option, a
Stable-Video-Diffusion-like local folder fine-tuned from, and bad input exiting 2 with no output."""

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from video_world import write_scene  # noqa: E402

from uniscene import cli  # noqa: E402
from uniscene.config import defaults, dumps  # noqa: E402
from uniscene.store import open_store, store_provenance  # noqa: E402

FRAMES = 8


def world_config(**video) -> dict:
    config = copy.deepcopy(defaults())
    config["device"] = "cpu"
    config["video"].update({"image_size": [32, 64], "clip_frames": 4, "context_frames": 1, "vae_steps": 6, "steps": 4, "max_boxes": 4,
                            "inference_steps": 2, **video})
    return config


def train(config, scenes, out, *extra) -> int:
    return cli.main(["train-video", "--config", dumps(config), "--frames", *[str(s / "frames.zarr") for s in scenes],
                     "--render", *[str(s / "render.zarr") for s in scenes], "--layout", *[str(s / "layout.zarr") for s in scenes],
                     "--out", str(out), *extra])


def generate(config, model, scene, out, *extra) -> int:
    return cli.main(["video", "--config", dumps(config), "--model", str(model), "--frames", str(scene / "frames.zarr"),
                     "--render", str(scene / "render.zarr"), "--layout", str(scene / "layout.zarr"), "--out", str(out), *extra])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("video_world")
    scenes = [write_scene(root, f"scene-{i}", FRAMES, phase=1.1 * i) for i in range(3)]
    config = world_config()
    model = root / "models" / "video"
    assert train(config, scenes[:2], model) == 0
    return config, root, model, scenes


def test_model_folder_holds_the_pipeline(world):
    _, _, model, _ = world
    assert {p.name for p in model.iterdir()} >= {"vae", "unet", "adapter", "scheduler", "model_index.json", "training.json",
                                                "history.jsonl", "vae_history.jsonl"}
    training = json.loads((model / "training.json").read_text())
    assert training["cross_view"] is True and training["vae_trained"] is True
    vae_losses = [r["losses"]["l1"] for r in training["vae_history"]]
    assert vae_losses[-1] < vae_losses[0]  # the autoencoder learnt something
    from uniscene.models.video.pipeline import MultiViewVideoPipeline

    pipeline = MultiViewVideoPipeline.from_pretrained(model, low_cpu_mem_usage=False)  # a save / load round trip
    assert pipeline.adapter.config.cross_view and len(pipeline.adapter.cross_view_attention) > 0
    assert tuple(pipeline.adapter.config.image_size) == (32, 64)


def test_generation_reads_no_true_image_and_writes_store_and_mp4(world, tmp_path):
    av = pytest.importorskip("av")
    config, root, model, scenes = world
    images = root / "data" / "samples"
    images.rename(root / "data" / "hidden")  # no camera image exists: the default must not need one
    try:
        assert generate(config, model, scenes[2], tmp_path / "video.zarr", "--mp4", str(tmp_path / "video.mp4")) == 0
    finally:
        (root / "data" / "hidden").rename(images)
    video = open_store(tmp_path / "video.zarr", "video")
    assert video["rgb"].shape == (FRAMES, 6, 32, 64, 3) and video["rgb"].dtype == np.uint8
    assert video["intrinsics"].shape == (FRAMES, 6, 3, 3)
    assert video.attrs["first_frame"] is False and video.attrs["cross_view"] is True and video.attrs["source"] == "label"
    assert store_provenance(video)["stage"] == "video"
    with av.open(str(tmp_path / "video.mp4")) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]
    assert len(decoded) == FRAMES and decoded[0].shape == (64, 192, 3)


def test_same_seed_same_bytes_and_the_first_frame_option(world, tmp_path):
    config, root, model, scenes = world
    for name in ("a", "b"):
        assert generate(config, model, scenes[2], tmp_path / f"{name}.zarr", "--frames-range", "0:5") == 0
    a, b = (open_store(tmp_path / f"{name}.zarr", "video")["rgb"].values for name in ("a", "b"))
    assert a.shape[0] == 5 and np.array_equal(a, b)
    assert generate(config, model, scenes[2], tmp_path / "first.zarr", "--frames-range", "0:5", "--first-frame") == 0
    first = open_store(tmp_path / "first.zarr", "video")
    assert first.attrs["first_frame"] is True and json.loads(json.dumps(store_provenance(first)))["config"]["generation"]["first_frame"]


def test_fine_tunes_from_a_local_svd_like_folder(world, tmp_path):
    """A folder as a user's Stable Video Diffusion checkpoint: unet/ (UNetSpatioTemporalConditionModel) and vae/ (AutoencoderKL)."""
    from diffusers import AutoencoderKL, UNetSpatioTemporalConditionModel

    _, _, _, scenes = world
    torch.manual_seed(1)
    pretrained = tmp_path / "svd"
    unet = UNetSpatioTemporalConditionModel(in_channels=8, out_channels=4, block_out_channels=(32, 64), num_frames=4,
                                            down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
                                            up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
                                            layers_per_block=1, num_attention_heads=(1, 2), cross_attention_dim=48,
                                            addition_time_embed_dim=16, projection_class_embeddings_input_dim=48)
    unet.save_pretrained(pretrained / "unet")
    AutoencoderKL(block_out_channels=(16, 32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=16).save_pretrained(pretrained / "vae")
    config = world_config(pretrained=str(pretrained), steps=1)
    out = tmp_path / "tuned"
    assert train(config, scenes[:1], out) == 0
    tuned = UNetSpatioTemporalConditionModel.from_pretrained(out / "unet")
    assert tuned.config.cross_attention_dim == 48  # the user's UNet, not a fresh one
    before, after = unet.state_dict(), tuned.state_dict()
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # one optimiser step moved it
    training = json.loads((out / "training.json").read_text())
    assert training["vae_trained"] is False and training["steps"] == 1
    assert json.loads((out / "vae" / "config.json").read_text())["latent_channels"] == 4


def test_bad_input_exits_2_without_output(world, tmp_path, capsys):
    config, root, model, scenes = world
    assert generate(config, tmp_path, scenes[2], tmp_path / "no_model.zarr") == 2  # not a model folder
    assert not (tmp_path / "no_model.zarr").exists()
    short = write_scene(tmp_path, "short", 4, phase=0.0, with_images=False)
    assert cli.main(["video", "--config", dumps(config), "--model", str(model), "--frames", str(scenes[2] / "frames.zarr"),
                     "--render", str(short / "render.zarr"), "--layout", str(scenes[2] / "layout.zarr"),
                     "--out", str(tmp_path / "mixed.zarr")]) == 2  # a render of other frames
    assert not (tmp_path / "mixed.zarr").exists()
    assert generate(config, model, short, tmp_path / "first.zarr", "--first-frame") == 2  # the option needs the images
    assert not (tmp_path / "first.zarr").exists()
    bad = world_config(pretrained=str(tmp_path / "nowhere"))
    assert train(bad, scenes[:1], tmp_path / "bad_model") == 2
    assert not (tmp_path / "bad_model").exists()
    assert "video.pretrained" in capsys.readouterr().err
