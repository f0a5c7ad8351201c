"""Where this process sits in a `torchrun` launch: rank, world size, local rank.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; a plain `python` run has none of them and is
rank 0 of 1. The trainer shards data by these numbers; it synchronises gradients (DDP) only when
a process group is also initialised: `uniscene` does that for every command it runs under
torchrun (`torchrun_process_group`), so `torchrun --nproc_per_node N -m uniscene.cli train-...`
trains on N processes.
"""

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import distributed as dist


@dataclass(frozen=True)
class RankInfo:
    rank: int = 0  # this process among all of them
    world_size: int = 1  # number of processes
    local_rank: int = 0  # this process among those of its node: its GPU index

    @classmethod
    def from_env(cls) -> "RankInfo":
        info = cls(*(int(os.environ.get(name, default)) for name, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0))))
        if not 0 <= info.rank < info.world_size:
            raise ValueError(f"RANK={info.rank} is outside WORLD_SIZE={info.world_size}: launch with torchrun")
        return info

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and shows progress."""
        return self.rank == 0


def process_group_ready(info: RankInfo) -> bool:
    """True when gradients must be synchronised: several processes and an initialised process group."""
    return info.world_size > 1 and dist.is_available() and dist.is_initialized()


# NVLink multicast (NVLS) off in NCCL, PyTorch's symmetric memory and NVSHMEM: on shared multi-GPU hosts a
# program using it can take the host's GPUs out of service; DDP's all-reduce does not need it.
NVLINK_MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


@contextmanager
def torchrun_process_group(device: str = "cpu"):
    """Under torchrun (WORLD_SIZE > 1), the run's process group: NCCL with one GPU per process (LOCAL_RANK) when
    `device` is CUDA, gloo otherwise; torchrun's environment gives the rendezvous. A plain run gets none."""
    info = RankInfo.from_env()
    if info.world_size == 1 or dist.is_initialized():
        yield
        return
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    if backend == "nccl":
        for name, value in NVLINK_MULTICAST_OFF.items():  # unless the user set them: see NVLINK_MULTICAST_OFF
            os.environ.setdefault(name, value)
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend)
    try:
        yield
    finally:
        dist.destroy_process_group()


def collective_device(device: torch.device) -> torch.device:
    """Where tensors for collectives live: NCCL needs the GPU, gloo the CPU."""
    return device if dist.get_backend() == "nccl" else torch.device("cpu")


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (read `.config` and attributes from it)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
