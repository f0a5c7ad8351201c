"""Trainer: one optimisation loop for every uniscene model (API in `uniscene/training/__init__.py`).

Per step: this rank's share of a global batch -> `loss_fn(model, batch)` under autocast ->
backward -> clip -> AdamW -> LR schedule -> EMA. The data order of an epoch is a permutation
drawn from `generator` (rank 0's is broadcast), padded to a multiple of the world size, cut into
global batches, each split into equal contiguous shares per rank: the same global batches on any
number of processes. Rank 0 writes the loss history (one JSON line per logged step) and the
checkpoint (one folder, replaced atomically); a rerun with the same `run_hash` resumes from it.
"""

import copy
import json
import math
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch import distributed as dist
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from uniscene.store import atomic_directory, atomic_file, write_json_atomic
from uniscene.training.config import TrainingConfig
from uniscene.training.distributed import RankInfo, collective_device, process_group_ready

CHECKPOINT_DIR = "checkpoint"  # inside the work folder: the last checkpoint
STATE_FILE = "state.pt"  # inside the checkpoint: everything needed to resume
HISTORY_FILE = "history.jsonl"  # one JSON line per logged step
TRAINING_FILE = "training.json"  # written by save_final beside the model


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's (CPU and every CUDA device) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Train `model` on `dataset` with `loss_fn(model, batch) -> (loss, {name: float})`.

    `work_dir` holds the checkpoint and the loss history (callers may keep scratch files there
    too: `save_final` removes the folder). `run_hash` names what is trained (settings, data): a
    checkpoint of another hash is ignored. `generator` orders the data (seeded with config.seed
    when None); pass your own to draw augmentations from the same stream, which is checkpointed
    with the rest. Under several processes `loss_fn` receives the DDP wrapper: call it, and read
    attributes through `unwrap_model`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        dataset: Dataset,
        loss_fn,
        config: TrainingConfig,
        work_dir,
        run_hash: str = "",
        *,
        device: str = "cpu",
        generator: torch.Generator | None = None,
        description: str = "train",
    ):
        self.rank = RankInfo.from_env()
        if config.batch_size % self.rank.world_size:
            raise ValueError(f"batch_size {config.batch_size} is the global batch: it must divide by WORLD_SIZE {self.rank.world_size}")
        if len(dataset) == 0:
            raise ValueError("the training set is empty")
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.rank.world_size > 1:
            self.device = torch.device("cuda", self.rank.local_rank)
            torch.cuda.set_device(self.device)
        self.raw_model = model.to(self.device)
        self.model = self.raw_model
        if process_group_ready(self.rank):
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(self.raw_model, device_ids=device_ids)
        self.dataset, self.loss_fn, self.config = dataset, loss_fn, config
        self.work_dir, self.run_hash, self.description = Path(work_dir), run_hash, description
        self.generator = generator if generator is not None else torch.Generator().manual_seed(config.seed)
        self.steps_per_epoch = math.ceil(self._padded_length() / config.batch_size)
        self.total_steps = config.steps or config.epochs * self.steps_per_epoch
        self.optimizer = torch.optim.AdamW(self.raw_model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        self.scheduler = _lr_scheduler(self.optimizer, config, self.total_steps)
        self.ema = None
        if config.ema_decay > 0:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(self.raw_model.parameters(), decay=config.ema_decay, foreach=True)
        self.autocast = self.device.type == "cuda" and config.mixed_precision == "bf16"
        self.step, self.history, self._order = 0, [], None
        self._window = _new_window()  # loss sums since the last history line

    # 1. the data: epoch order, this rank's batches

    def _padded_length(self) -> int:
        world = self.rank.world_size
        return math.ceil(len(self.dataset) / world) * world

    def _epoch_order(self) -> torch.Tensor:
        """A permutation of the dataset, [N] int64, the same on every rank."""
        order = torch.randperm(len(self.dataset), generator=self.generator)
        if process_group_ready(self.rank):
            shared = order.to(collective_device(self.device))
            dist.broadcast(shared, src=0)
            order = shared.cpu()
        return order

    def _rank_batches(self, order: torch.Tensor) -> list:
        """This rank's index lists, one per step of the epoch (the order padded by wrapping round)."""
        order = torch.cat([order, order[: self._padded_length() - len(order)]])
        world, rank, size = self.rank.world_size, self.rank.rank, self.config.batch_size
        batches = []
        for start in range(0, len(order), size):
            chunk = order[start:start + size]
            share = len(chunk) // world
            batches.append(chunk[rank * share:(rank + 1) * share].tolist())
        return batches

    # 2. the loop

    def fit(self) -> list:
        """Train to the last step (resuming where a checkpoint of this run stops); returns the history records."""
        self._start()
        config = self.config
        self.model.train()
        bar = tqdm(total=self.total_steps, initial=self.step, desc=self.description, unit="step", disable=not self.rank.is_main)
        while self.step < self.total_steps:
            epoch, offset = divmod(self.step, self.steps_per_epoch)
            if offset == 0 or self._order is None:
                self._order = self._epoch_order()
            batches = self._rank_batches(self._order)[offset:]
            loader = DataLoader(
                self.dataset, batch_sampler=batches, num_workers=config.num_workers, pin_memory=self.device.type == "cuda",
                generator=torch.Generator().manual_seed(config.seed + epoch),  # worker seeds, apart from the global RNG
            )
            for indices, batch in zip(batches, loader):
                lr = self.optimizer.param_groups[0]["lr"]
                parts = self._train_step(batch)
                self.step += 1
                window = self._window
                for name, value in parts.items():
                    window["sums"][name] = window["sums"].get(name, 0.0) + value
                window["steps"] += 1
                window["samples"] += len(indices) * self.rank.world_size
                bar.update(1)
                bar.set_postfix(loss=f"{parts['loss']:.4f}")
                if self._due(config.log_every):
                    self._log(window, epoch, lr, bar)
                    self._window = _new_window()
                if self._due(config.checkpoint_every):
                    self._checkpoint()
                if self.step >= self.total_steps:
                    break
        bar.close()
        self.model.eval()
        return self.history

    def _due(self, every: int) -> bool:
        """Whether the step just taken is one of every `every` steps (0: the last of an epoch), or the last one."""
        return self.step % (every or self.steps_per_epoch) == 0 or self.step == self.total_steps

    def _train_step(self, batch) -> dict:
        batch = _to_device(batch, self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            loss, parts = self.loss_fn(self.model, batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.step(self.raw_model.parameters())
        return {"loss": float(loss.detach()), **parts}

    def _log(self, window: dict, epoch: int, lr: float, bar) -> None:
        names = sorted(window["sums"])
        means = torch.tensor([window["sums"][name] / window["steps"] for name in names], dtype=torch.float64)
        if process_group_ready(self.rank):  # the mean over ranks
            means = means.to(collective_device(self.device))
            dist.all_reduce(means)
            means = means.cpu() / self.rank.world_size
        seconds = max(time.perf_counter() - window["start"], 1e-9)
        record = {
            "step": self.step,
            "epoch": epoch + 1,
            "losses": {name: float(f"{value:.6g}") for name, value in zip(names, means.tolist())},
            "lr": float(f"{lr:.6g}"),
            "samples_per_s": round(window["samples"] / seconds, 2),
        }
        self.history.append(record)
        if self.rank.is_main:
            with open(self.work_dir / HISTORY_FILE, "a") as file:
                file.write(json.dumps(record) + "\n")
            bar.write(json.dumps(record))

    # 3. checkpoints

    def _checkpoint(self) -> None:
        """Every rank hands over its RNG states; rank 0 writes the checkpoint folder atomically."""
        rng = [_rng_state()]
        if process_group_ready(self.rank):
            rng = [None] * self.rank.world_size
            dist.all_gather_object(rng, _rng_state())
        if not self.rank.is_main:
            return
        state = {
            "run_hash": self.run_hash,
            "step": self.step,
            "model": self.raw_model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "order": self._order,
            "rng": rng,
            "history": self.history,
            "window": {key: value for key, value in self._window.items() if key != "start"},
        }
        with atomic_directory(self.work_dir / CHECKPOINT_DIR) as tmp:
            torch.save(state, tmp / STATE_FILE)

    def _start(self) -> None:
        """Resume from this run's checkpoint, or seed a fresh start (and empty the history file)."""
        path = self.work_dir / CHECKPOINT_DIR / STATE_FILE
        state = torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else None
        if state is not None and state["run_hash"] != self.run_hash:
            if self.rank.is_main:
                print(f"{self.description}: ignoring checkpoint {path.parent}: it was written for other settings or data")
            state = None
        if state is None:
            seed_everything(self.config.seed + self.rank.rank)
            self.step, self.history, self._order, self._window = 0, [], None, _new_window()
        else:
            self.raw_model.load_state_dict(state["model"])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
                self.ema.to(self.device)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.generator.set_state(state["generator"])
            self.step, self.history, self._order = state["step"], state["history"], state["order"]
            self._window = {**state["window"], "start": time.perf_counter()}  # the next line averages as uninterrupted
            if len(state["rng"]) == self.rank.world_size:
                _set_rng_state(state["rng"][self.rank.rank])
            else:  # another number of processes: fresh per-rank streams, still seeded
                seed_everything(self.config.seed + self.rank.rank + 7919 * self.step)
            if self.rank.is_main:
                print(f"{self.description}: resuming from {path.parent} at step {self.step}/{self.total_steps}")
        if self.rank.is_main:  # the history file holds exactly the records up to the checkpoint
            self.work_dir.mkdir(parents=True, exist_ok=True)
            with atomic_file(self.work_dir / HISTORY_FILE) as tmp:
                tmp.write_text("".join(json.dumps(record) + "\n" for record in self.history))

    # 4. the result

    def final_model(self) -> torch.nn.Module:
        """The trained model: a copy holding the EMA weights where EMA is on, else the model itself."""
        if self.ema is None:
            return self.raw_model
        model = copy.deepcopy(self.raw_model)
        self.ema.copy_to(model.parameters())
        return model

    def save_final(self, out, files: dict | None = None, info: dict | None = None, save_model=None) -> Path | None:
        """Rank 0 writes the model folder `out` atomically and removes the work folder; other ranks return None.

        `out` gets the final model's `save_pretrained` (EMA weights where EMA is on), history.jsonl,
        training.json ({"weights": "ema" | "raw", "training": config, "history": records, **info})
        and one JSON file per entry of `files` ({file name: payload}). `save_model(model, folder)`
        replaces the `save_pretrained` (e.g. a pipeline that holds the model beside others).
        """
        if not self.rank.is_main:
            return None
        out = Path(out)
        with atomic_directory(out) as tmp:
            if save_model is None:
                self.final_model().save_pretrained(tmp)
            else:
                save_model(self.final_model(), tmp)
            shutil.copyfile(self.work_dir / HISTORY_FILE, tmp / HISTORY_FILE)
            payload = {
                "weights": "ema" if self.ema is not None else "raw", "training": self.config.as_dict(), "steps": self.step,
                "world_size": self.rank.world_size, "history": self.history, **(info or {}),
            }
            for name, content in {TRAINING_FILE: payload, **(files or {})}.items():
                write_json_atomic(tmp / name, content)
        shutil.rmtree(self.work_dir, ignore_errors=True)
        return out


def _lr_scheduler(optimizer, config: TrainingConfig, total_steps: int):
    if config.lr_schedule == "one_cycle":
        # OneCycleLR divides by its warm-up's length in steps: a run of a few steps warms up over two (one or two steps:
        # a constant rate)
        if total_steps <= 2:
            return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, config.learning_rate, total_steps=total_steps,
                                                   pct_start=max(config.warmup, 2.0 / total_steps))
    from diffusers.optimization import get_scheduler

    name = "cosine" if config.lr_schedule == "cosine" else "constant_with_warmup"
    return get_scheduler(name, optimizer, num_warmup_steps=round(config.warmup * total_steps), num_training_steps=total_steps)


def _new_window() -> dict:
    return {"sums": {}, "steps": 0, "samples": 0, "start": time.perf_counter()}


def _to_device(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(value, device) for value in batch)
    return batch


def _rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
