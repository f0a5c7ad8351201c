"""`uniscene inspect`: stores and model folders described as text and as JSON."""

import json

import numpy as np
import torch
import xarray as xr
from diffusers import ConfigMixin, DDIMScheduler, ModelMixin
from diffusers.configuration_utils import register_to_config

from store_examples import complete
from uniscene.cli import main
from uniscene.sensors import CAMERA_NAMES
from uniscene.store import write_store


class TinyNet(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, width: int = 3):
        super().__init__()
        self.layer = torch.nn.Linear(width, 2 * width)


def _inspect(capsys, *args) -> tuple:
    code = main(["inspect", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def _video_store(tmp_path):
    rgb = np.zeros((5, len(CAMERA_NAMES), 4, 6, 3), np.uint8)
    dataset = xr.Dataset({"rgb": (("frame", "cam", "h", "w", "channel"), rgb), "timestamp_us": ("frame", np.arange(5, dtype=np.int64))},
                         attrs={"scene": "scene-x", "camera_names": list(CAMERA_NAMES)})
    config = {"video": {"steps": 4}}
    return write_store(tmp_path / "video.zarr", complete(dataset, "video"), stage="video", config_subset=config, frame_chunk=2), config


def test_a_store(tmp_path, capsys):
    path, config = _video_store(tmp_path)
    code, text, _ = _inspect(capsys, path)
    assert code == 0
    assert "video store of scene scene-x, 5 frames" in text and "provenance:" in text
    rgb_line = next(line for line in text.splitlines() if line.strip().startswith("rgb "))
    assert "frame,cam,h,w,channel" in rgb_line and "5x6x4x6x3" in rgb_line and "2x6x4x6x3" in rgb_line and "lz4-5 bitshuffle" in rgb_line

    code, out, _ = _inspect(capsys, path, "--json")
    description = json.loads(out)
    rgb = description["variables"]["rgb"]
    assert (rgb["dims"], rgb["shape"], rgb["dtype"], rgb["chunks"]) == (["frame", "cam", "h", "w", "channel"], [5, 6, 4, 6, 3], "uint8", [2, 6, 4, 6, 3])
    assert any(c.startswith("blosc(lz4-5") for c in rgb["codecs"]) and "crc32c" in rgb["codecs"] and rgb["stored_bytes"] > 0
    assert rgb["raw_bytes"] == 5 * 6 * 4 * 6 * 3
    assert description["stage"] == "video" and description["frames"] == 5 and description["attrs"]["camera_names"] == list(CAMERA_NAMES)
    assert description["provenance"]["config"] == config and len(description["provenance"]["config_hash"]) == 16


def test_a_model_and_a_pipeline_folder(tmp_path, capsys):
    model = TinyNet(width=3)
    model.save_pretrained(tmp_path / "model")
    history = [{"step": 10, "epoch": 1, "losses": {"loss": 2.5}}, {"step": 20, "epoch": 2, "losses": {"loss": 0.75}}]
    (tmp_path / "model" / "training.json").write_text(json.dumps({"weights": "ema", "steps": 20, "history": history, "total_seconds": 1.5}))
    code, out, _ = _inspect(capsys, tmp_path / "model", "--json")
    description = json.loads(out)
    parameters = sum(p.numel() for p in model.parameters())
    assert code == 0 and description["parameters"] == parameters == 3 * 6 + 6
    assert description["components"]["model"]["class"] == "TinyNet" and description["components"]["model"]["config"]["width"] == 3
    training = description["training"]
    assert (training["steps"], training["records"], training["total_seconds"]) == (20, 2, 1.5)
    assert training["first"]["losses"] == {"loss": 2.5} and training["last"] == {"step": 20, "losses": {"loss": 0.75}}
    code, text, _ = _inspect(capsys, tmp_path / "model")
    assert "24 parameters" in text and "first step 10: loss 2.5" in text and "last  step 20: loss 0.75" in text

    pipeline = tmp_path / "pipeline"
    model.save_pretrained(pipeline / "transformer")
    DDIMScheduler(num_train_timesteps=50).save_pretrained(pipeline / "scheduler")
    (pipeline / "model_index.json").write_text(json.dumps({"_class_name": "OccGenPipeline", "transformer": ["uniscene", "TinyNet"],
                                                           "scheduler": ["diffusers", "DDIMScheduler"]}))
    code, out, _ = _inspect(capsys, pipeline, "--json")
    description = json.loads(out)
    assert description["pipeline"] == "OccGenPipeline" and description["parameters"] == parameters
    assert description["components"]["scheduler"]["class"] == "DDIMScheduler" and description["components"]["scheduler"]["config"]["num_train_timesteps"] == 50
    assert "training" not in description


def test_not_a_store_or_model(tmp_path, capsys):
    code, _, err = _inspect(capsys, tmp_path / "nothing")
    assert code == 2 and "nothing does not exist" in err
    (tmp_path / "folder").mkdir()
    code, _, err = _inspect(capsys, tmp_path / "folder")
    assert code == 2 and "no uniscene store (no zarr.json)" in err
