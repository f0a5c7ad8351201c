"""TrainingConfig: the knobs of the shared training loop, one frozen dataclass."""

from dataclasses import asdict, dataclass

LR_SCHEDULES = ("one_cycle", "cosine", "constant")
MIXED_PRECISION = ("bf16", "no")


@dataclass(frozen=True)
class TrainingConfig:
    batch_size: int  # global batch: samples per optimiser step summed over all ranks
    learning_rate: float  # peak learning rate of AdamW
    epochs: int = 0  # passes over the data ...
    steps: int = 0  # ... or optimiser steps: exactly one of the two is > 0
    weight_decay: float = 1e-4  # AdamW's decoupled weight decay
    lr_schedule: str = "one_cycle"  # one_cycle (torch OneCycleLR) | cosine | constant (diffusers' schedules)
    warmup: float = 0.1  # fraction of the steps that warm the learning rate up (OneCycleLR's pct_start)
    grad_clip: float = 1.0  # largest gradient norm; 0 clips nothing
    ema_decay: float = 0.0  # 0: no EMA; else the decay of diffusers' EMAModel (e.g. 0.999)
    mixed_precision: str = "bf16"  # bf16: autocast to bfloat16 on CUDA; no: float32. The CPU always runs float32
    log_every: int = 50  # steps per loss-history line, 0: one per epoch (the last step is always logged)
    checkpoint_every: int = 500  # steps per checkpoint, 0: one per epoch (the last step is always checkpointed)
    seed: int = 0  # seeds the data order and, offset by the rank, torch / numpy / random
    num_workers: int = 0  # DataLoader worker processes per rank

    def __post_init__(self):
        if (self.epochs > 0) == (self.steps > 0):
            raise ValueError(f"TrainingConfig needs exactly one of epochs ({self.epochs}) and steps ({self.steps}) > 0")
        if self.batch_size < 1:
            raise ValueError(f"TrainingConfig.batch_size must be >= 1, got {self.batch_size}")
        for name in ("log_every", "checkpoint_every", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainingConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"TrainingConfig.learning_rate must be > 0, got {self.learning_rate}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"TrainingConfig.warmup is a fraction of the steps in [0, 1), got {self.warmup}")
        if self.lr_schedule == "one_cycle" and self.warmup <= 0:
            raise ValueError("TrainingConfig.warmup must be > 0 for lr_schedule one_cycle (its pct_start)")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"TrainingConfig.ema_decay must be in [0, 1) (0: no EMA), got {self.ema_decay}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"TrainingConfig.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"TrainingConfig.mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")

    def as_dict(self) -> dict:
        return asdict(self)
