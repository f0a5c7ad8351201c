"""A training command under torchrun, as the training rules start it where train_gpus > 1: two gloo processes on
the CPU join one process group (uniscene/training/distributed.py), train with DDP on the split global batch, and
rank 0 alone writes the model; two such runs with the same seed and world size end with the same weights."""

import copy
import json
import os
import subprocess
import sys

from safetensors.torch import load_file

from uniscene.config import defaults, dumps
from test_occ_gen import GRID, write_scene

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "uniscene.cli"]


def vae_config() -> dict:
    config = copy.deepcopy(defaults())
    config.update(device="cpu", grid={"range_m": list(GRID.range_m), "voxel_size_m": GRID.voxel_size_m})
    config["occ_vae"].update(model="tiny", latent_channels=4, downsample_factor=4, clip_frames=3, batch_size=4, crop_cells=0, steps=3,
                             ema_decay=0.0, lovasz_voxels=0, num_workers=0)
    return config


def test_two_process_training_is_deterministic_and_written_once(tmp_path):
    scenes = [write_scene(tmp_path / "scenes", f"s{i}", [(-3.0 + 4 * i, 1.8, 1.0)], frames=6) / "occ_label.zarr" for i in range(2)]
    config = dumps(vae_config())
    outputs = []
    for run in ("a", "b"):
        out = tmp_path / f"vae_{run}"
        result = subprocess.run([*TORCHRUN, "train-occ-vae", "--config", config, "--occupancy", *map(str, scenes), "--out", str(out)],
                                capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", **_env()})
        assert result.returncode == 0, result.stderr[-3000:]
        outputs.append(out)
    training = json.loads((outputs[0] / "training.json").read_text())
    assert training["world_size"] == 2 and training["steps"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scenes", "vae_a", "vae_b"]  # rank 1 wrote nothing, no temporaries left
    first, second = (load_file(out / "diffusion_pytorch_model.safetensors") for out in outputs)
    assert first.keys() == second.keys()
    for name in first:
        assert (first[name] == second[name]).all(), name


def _env() -> dict:
    """This process's environment less any torchrun variables of an outer launch."""
    return {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
