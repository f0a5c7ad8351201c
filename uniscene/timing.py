"""Seconds per step of a stage's loop: the split a command prints and keeps in its store's attributes."""

import time
from contextlib import contextmanager


class StepTimes:
    """Wall seconds summed per named step.

        times = StepTimes(device)
        with times.step("render"):
            maps = render_occupancy(...)
    On CUDA a step ends with a synchronisation, so that the GPU work it launched counts in it and
    not in the next step that waits for it. Steps timed in other threads (a read-ahead, the store
    writer) add their sums with `add`.
    """

    def __init__(self, device: str = "cpu"):
        self.seconds = {}
        self._cuda = str(device).startswith("cuda")

    @contextmanager
    def step(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            if self._cuda:
                import torch

                torch.cuda.synchronize()
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def rounded(self, digits: int = 3) -> dict:
        return {name: round(seconds, digits) for name, seconds in self.seconds.items()}

    def __str__(self) -> str:
        return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in self.seconds.items())


def seconds_per_call(fn, device: str, repeats: int, warmup: int = 1) -> float:
    """Seconds per call of fn after `warmup` untimed calls (on CUDA each phase ends with a synchronisation): benchmarks."""
    times = StepTimes(device)
    with times.step("warm-up"):
        for _ in range(warmup):
            fn()
    with times.step("timed"):
        for _ in range(repeats):
            fn()
    return times.seconds["timed"] / repeats
