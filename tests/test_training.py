"""The shared training loop (uniscene.training) on a tiny MLP and a regression whose truth is known.

y = sin(2 x0) + 0.5 x1 + noise, noise ~ N(0, NOISE_STD^2): a good fit's mean squared error on
the training data is the noise floor NOISE_STD^2 and its error against the truth near 0.
"""

import functools
import json
import os
import socket
import time

import pytest
import torch
from torch import distributed as dist
from torch import multiprocessing as mp
from torch.nn import functional as F
from torch.utils.data import Dataset
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

from uniscene.training import HISTORY_FILE, TRAINING_FILE, Trainer, TrainingConfig, seed_everything
from uniscene.training.trainer import CHECKPOINT_DIR, STATE_FILE

NOISE_STD = 0.1


def truth(x: torch.Tensor) -> torch.Tensor:
    """x [N, 2] -> [N, 1]."""
    return torch.sin(2 * x[:, :1]) + 0.5 * x[:, 1:]


class Regression(Dataset):
    """N samples of the known regression, drawn from their own seed."""

    def __init__(self, size: int, seed: int = 1):
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.rand(size, 2, generator=generator) * 4 - 2
        self.y = truth(self.x) + NOISE_STD * torch.randn(size, 1, generator=generator)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        return {"x": self.x[index], "y": self.y[index]}


class Interrupted(RuntimeError):
    pass


def mse_loss(model, batch, jitter: float = 0.0, stop_at: list | None = None):
    """MSE; `jitter` perturbs the inputs from the global RNG (which resuming must restore);
    `stop_at` [n]: raise on the n-th call (a job killed mid-run)."""
    if stop_at is not None:
        stop_at[0] -= 1
        if stop_at[0] < 0:
            raise Interrupted
    x = batch["x"] + jitter * torch.randn_like(batch["x"])
    loss = F.mse_loss(model(x), batch["y"])
    return loss, {"mse": loss.item()}


class TinyMLP(ModelMixin, ConfigMixin):
    """x [B, 2] -> y [B, 1]."""

    @register_to_config
    def __init__(self, hidden: int = 64):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(2, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))

    def forward(self, x):
        return self.body(x)


def mlp(seed: int = 0) -> TinyMLP:
    seed_everything(seed)
    return TinyMLP()


def weights(model) -> list:
    return [p.detach().clone() for p in model.state_dict().values()]


def without_speed(history: list) -> list:
    return [{k: v for k, v in record.items() if k != "samples_per_s"} for record in history]


CONFIG = TrainingConfig(batch_size=32, learning_rate=3e-2, steps=840, ema_decay=0.9, log_every=20, checkpoint_every=200, seed=3)


CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))


@pytest.mark.parametrize("device", ["cpu", CUDA])  # on CUDA in bf16 autocast (the config's default)
def test_resume_matches_an_uninterrupted_run_and_fits_the_truth(tmp_path, device):
    data = Regression(200)  # 7 steps per epoch, the last one of 8 samples
    loss = functools.partial(mse_loss, jitter=0.01)
    config = TrainingConfig(**{**CONFIG.as_dict(), "checkpoint_every": 150})  # checkpoints inside history windows
    straight = Trainer(mlp(), data, loss, config, tmp_path / "a", run_hash="r", device=device)
    history = straight.fit()

    # killed after step 500 (checkpoint at 450, in the middle of epoch 65), then rerun from fresh weights
    with pytest.raises(Interrupted):
        killed = functools.partial(mse_loss, jitter=0.01, stop_at=[500])
        Trainer(mlp(), data, killed, config, tmp_path / "b", run_hash="r", device=device).fit()
    assert torch.load(tmp_path / "b" / CHECKPOINT_DIR / STATE_FILE, weights_only=False)["step"] == 450
    assert len((tmp_path / "b" / HISTORY_FILE).read_text().splitlines()) == 25  # logged up to step 500
    resumed = Trainer(mlp(seed=9), data, loss, config, tmp_path / "b", run_hash="r", device=device)
    assert without_speed(resumed.fit()) == without_speed(history)
    for a, b in zip(weights(straight.raw_model), weights(resumed.raw_model)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(weights(straight.final_model()), weights(resumed.final_model())):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    # the history file: one JSON line per logged step, the records fit() returned
    lines = [json.loads(line) for line in (tmp_path / "b" / HISTORY_FILE).read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(20, 841, 20))
    assert without_speed(lines) == without_speed(history)
    assert lines[-1]["epoch"] == 120 and set(lines[-1]["losses"]) == {"loss", "mse"} and lines[-1]["samples_per_s"] > 0

    # the fit: training loss at the noise floor, the EMA model close to the truth
    assert 0.7 * NOISE_STD**2 < history[-1]["losses"]["mse"] < 1.3 * NOISE_STD**2
    assert history[0]["losses"]["mse"] > 10 * NOISE_STD**2
    x = torch.rand(2000, 2, generator=torch.Generator().manual_seed(5)) * 4 - 2
    with torch.no_grad():
        assert F.mse_loss(resumed.final_model()(x.to(device)).cpu(), truth(x)).item() < 0.3 * NOISE_STD**2

    # a rerun of a finished run does nothing; another run_hash starts afresh
    rerun = Trainer(mlp(), data, loss, config, tmp_path / "b", run_hash="r", device=device).fit()
    assert without_speed(rerun) == without_speed(history)
    other = TrainingConfig(**{**config.as_dict(), "steps": 40})
    assert [r["step"] for r in Trainer(mlp(), data, loss, other, tmp_path / "b", run_hash="s", device=device).fit()] == [20, 40]


def test_save_final_writes_the_ema_model_and_removes_the_work_folder(tmp_path):
    config = TrainingConfig(**{**CONFIG.as_dict(), "steps": 30, "log_every": 10})
    trainer = Trainer(mlp(), Regression(64), mse_loss, config, tmp_path / "work", run_hash="r")
    trainer.fit()
    out = trainer.save_final(tmp_path / "model", files={"extra.json": {"a": 1}}, info={"num_samples": 64})
    assert not (tmp_path / "work").exists()
    saved = TinyMLP.from_pretrained(out, low_cpu_mem_usage=False).state_dict()
    ema = trainer.final_model().state_dict()
    assert all(torch.equal(saved[k], ema[k]) for k in ema)
    assert not all(torch.equal(saved[k], trainer.raw_model.state_dict()[k]) for k in ema)  # EMA, not the raw weights
    info = json.loads((out / TRAINING_FILE).read_text())
    assert info["weights"] == "ema" and info["num_samples"] == 64 and info["steps"] == 30 and len(info["history"]) == 3
    assert json.loads((out / "extra.json").read_text()) == {"a": 1}
    assert len((out / HISTORY_FILE).read_text().splitlines()) == 3


def test_epochs_log_and_checkpoint_once_per_epoch_where_every_is_0(tmp_path):
    config = TrainingConfig(**{**CONFIG.as_dict(), "steps": 0, "epochs": 3, "log_every": 0, "checkpoint_every": 0})
    trainer = Trainer(mlp(), Regression(50), mse_loss, config, tmp_path, run_hash="r")  # 2 steps per epoch, the last of 18
    saved = []
    checkpoint = trainer._checkpoint
    trainer._checkpoint = lambda: (saved.append(trainer.step), checkpoint())
    history = trainer.fit()
    assert [(r["step"], r["epoch"]) for r in history] == [(2, 1), (4, 2), (6, 3)] and saved == [2, 4, 6]
    assert [r["samples_per_s"] > 0 for r in history] == [True] * 3


def test_a_failed_checkpoint_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    config = TrainingConfig(**{**CONFIG.as_dict(), "steps": 30, "checkpoint_every": 10})
    real_save = torch.save
    calls = []

    def save_then_fail(state, path):  # the second checkpoint dies half-written
        calls.append(path)
        if len(calls) == 2:
            path.write_bytes(b"half a checkpoint")
            raise OSError("disk full")
        real_save(state, path)

    monkeypatch.setattr(torch, "save", save_then_fail)
    with pytest.raises(OSError, match="disk full"):
        Trainer(mlp(), Regression(64), mse_loss, config, tmp_path, run_hash="r").fit()
    monkeypatch.setattr(torch, "save", real_save)
    assert calls[1].parent != tmp_path / CHECKPOINT_DIR  # written aside ...
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_DIR, HISTORY_FILE]  # ... and removed
    assert torch.load(tmp_path / CHECKPOINT_DIR / STATE_FILE, weights_only=False)["step"] == 10


def test_only_rank_0_writes_and_ranks_share_each_global_batch(tmp_path, monkeypatch):
    data = Regression(21)
    config = TrainingConfig(**{**CONFIG.as_dict(), "batch_size": 8, "steps": 6, "checkpoint_every": 2, "log_every": 2})
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    shares = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        trainer = Trainer(mlp(), data, mse_loss, config, tmp_path / f"rank{rank}", run_hash="r")
        shares.append(trainer._rank_batches(order))
        history = trainer.fit()  # no process group: each rank trains alone on its shares
        assert [r["step"] for r in history] == [2, 4, 6]
        written = trainer.save_final(tmp_path / f"model{rank}")
        assert written is None if rank else written == tmp_path / "model0"
    assert not (tmp_path / "rank1").exists() and not (tmp_path / "model1").exists()
    assert (tmp_path / "model0").is_dir()
    # 21 samples padded to 22, global batches of 8, 8, 6: equal shares, together the global batch
    assert [len(b) for b in shares[0]] == [len(b) for b in shares[1]] == [4, 4, 3]
    padded = torch.cat([order, order[:1]]).tolist()
    assert sum((a + b for a, b in zip(*shares)), []) == padded


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_train(rank: int, out_dir: str) -> None:
    config = TrainingConfig(**{**CONFIG.as_dict(), "steps": 12, "log_every": 4, "checkpoint_every": 6})
    trainer = Trainer(mlp(), Regression(40), mse_loss, config, f"{out_dir}/work", run_hash="ddp")
    assert isinstance(trainer.model, torch.nn.parallel.DistributedDataParallel)
    history = trainer.fit()
    if rank == 0:
        torch.save({"weights": weights(trainer.final_model()), "history": history}, f"{out_dir}/result.pt")


def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    """One of `world_size` gloo processes: train, and rank 0 saves the final weights."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        # the trainer (and its DDP wrapper) is freed inside _ddp_train, before the group is destroyed, as
        # the CLI does: freeing DDP after destroy_process_group hung gloo's teardown in 3 runs of 8
        _ddp_train(rank, out_dir)
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_match_one_process_on_the_same_global_batch(tmp_path):
    # spawn, not fork: a forked child would inherit the locks of whatever threads earlier tests left in
    # this process. Spawned children re-import torch (a few seconds each) and compute on one thread
    # each; the deadline turns any hang into a failure
    context = mp.start_processes(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("2 gloo processes training 12 steps took over 120 s")
    config = TrainingConfig(**{**CONFIG.as_dict(), "steps": 12, "log_every": 4, "checkpoint_every": 6})
    single = Trainer(mlp(), Regression(40), mse_loss, config, tmp_path / "single", run_hash="ddp")
    history = single.fit()
    result = torch.load(tmp_path / "result.pt", weights_only=False)
    for a, b in zip(weights(single.final_model()), result["weights"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for one, two in zip(history, result["history"]):
        assert one["losses"]["mse"] == pytest.approx(two["losses"]["mse"], rel=1e-5)


@pytest.mark.parametrize("steps", [1, 2, 3, 5])
def test_a_run_of_a_few_steps_trains_under_every_schedule(tmp_path, steps):
    """OneCycleLR divides by its warm-up's length in steps: 10 % of a few steps is under one (it raised ZeroDivisionError)."""
    for schedule in ("one_cycle", "cosine", "constant"):
        config = TrainingConfig(**{**CONFIG.as_dict(), "steps": steps, "log_every": 1, "lr_schedule": schedule})
        trainer = Trainer(mlp(), Regression(40), mse_loss, config, tmp_path / f"{schedule}-{steps}", run_hash="few")
        history = trainer.fit()
        assert trainer.step == steps and len(history) == steps
