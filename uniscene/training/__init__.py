"""The shared training loop of uniscene's models: resume, EMA, checkpoints, loss history, ranks.

Use::

    from uniscene.training import Trainer, TrainingConfig, seed_everything, unwrap_model

    seed_everything(seed)                                # before building the model: same init weights
    model = MyModel(**model_config)                      # diffusers ModelMixin + ConfigMixin
    dataset = MyDataset(...)                             # torch.utils.data.Dataset: __len__, __getitem__(i);
                                                         # read each item lazily from the stores
    def loss_fn(model, batch):                           # batch: default_collate of items, on the device
        out = model(batch["x"])                          # call `model` (the DDP wrapper under torchrun) ...
        scale = unwrap_model(model).config.scale         # ... read attributes through unwrap_model
        loss = F.mse_loss(out, batch["y"]) * scale
        return loss, {"mse": loss.item()}                # (scalar tensor, {name: float}) for the history
    config = TrainingConfig(batch_size=8, learning_rate=1e-3, epochs=10, ema_decay=0.999)
    trainer = Trainer(model, dataset, loss_fn, config, work_dir=out.parent / f"{out.name}.checkpoint",
                      run_hash=config_hash({...settings and input fingerprints...}), device=device,
                      description="train-occ-vae")
    history = trainer.fit()                              # list of records (below); resumes when rerun
    trainer.save_final(out, files={"extra.json": {...}}, info={"num_samples": len(dataset)})

What it does:
- `batch_size` is the global batch. Each epoch draws a permutation from `trainer.generator`
  (rank 0's is broadcast), pads it by wrapping to a multiple of WORLD_SIZE and splits every
  global batch into equal shares per rank, so 1 and N processes see the same global batches.
  The dataset is a plain map-style Dataset: the trainer chooses the sampler (a batch sampler
  of index lists through a DataLoader with `num_workers`).
- Seeded start: a fresh run seeds random / numpy / torch with `seed + RANK`; the data order
  has its own generator (seed), checkpointed with everything else. Draw augmentations and
  diffusion noise from torch's global RNG (different per rank), or, to keep one stream with
  the data order, from the `generator=` passed in (every rank must then draw alike).
- Under DDP the gradients are averaged over ranks: a loss that is a mean over its batch gives
  the gradient of the global batch's mean, as on one process.
- Optimiser AdamW(learning_rate, weight_decay); schedule `one_cycle` (OneCycleLR, pct_start =
  warmup), `cosine` or `constant` (diffusers' schedules with warmup * steps warm-up steps);
  gradient norm clipped at `grad_clip`; EMA of the weights (diffusers' EMAModel) when
  `ema_decay` > 0; bf16 autocast on CUDA when `mixed_precision` is "bf16".
- `work_dir/history.jsonl`: one JSON line per logged step (every `log_every` steps, or at the
  end of each epoch where it is 0, and the last step): {"step", "epoch" (1-based, of that
  step), "losses": {"loss": total, **parts} (means over the steps since the last line and over
  ranks), "lr", "samples_per_s"}.
- `work_dir/checkpoint/state.pt` every `checkpoint_every` steps (0: each epoch) and at the last
  step: model, EMA, optimizer, scheduler, step, data order, generator, every rank's RNG states
  (torch CPU and CUDA, numpy, random) and the history. Written into a temporary sibling and
  renamed (`uniscene.store.atomic_directory`): a killed job leaves the previous checkpoint
  whole. A rerun with the same `run_hash` resumes there bit for bit (on the same number of
  processes; another number resumes too, with fresh RNG streams); another hash starts afresh.
- Ranks: RANK / WORLD_SIZE / LOCAL_RANK from torchrun's environment. Only rank 0 writes and
  shows progress. The model is wrapped in DistributedDataParallel when WORLD_SIZE > 1 and the
  caller has initialised a process group (`torch.distributed.init_process_group`); on CUDA
  each rank takes the GPU `cuda:LOCAL_RANK`.
- `save_final(out)`: the model folder, atomically: `save_pretrained` of the EMA weights where
  EMA is on (else the trained weights), history.jsonl, training.json ({"weights": "ema" |
  "raw", "training": config, "steps", "world_size", "history", **info}) and the `files`; then
  the work folder is removed. `save_model=fn(model, folder)` writes instead of
  `save_pretrained` (a pipeline holding the model). `final_model()` gives the model alone.
"""

from uniscene.training.config import TrainingConfig
from uniscene.training.distributed import RankInfo, process_group_ready, unwrap_model
from uniscene.training.trainer import HISTORY_FILE, TRAINING_FILE, Trainer, seed_everything

__all__ = [
    "HISTORY_FILE", "TRAINING_FILE", "RankInfo", "Trainer", "TrainingConfig", "process_group_ready", "seed_everything",
    "unwrap_model",
]
