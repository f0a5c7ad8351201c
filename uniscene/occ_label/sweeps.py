"""A scene's LiDAR sweeps as the labeller reads them: a few whole sweeps at a time, never all at once.

The aggregation (aggregate.py) asks for consecutive ranges of whole sweeps and keeps what it
makes of them on its device, so the host holds a chunk or two of sweeps whatever the scene's
length. Two sources with one interface:

- `SweepArrays`: sweeps already in memory (tests, benchmarks);
- `SweepFiles`: the `.pcd.bin` and lidarseg files of a frames store, read by a few threads one
  chunk ahead of the aggregation (file reads release the GIL; on a GPU the aggregation of one
  chunk overlaps the reading of the next).

Letters: S sweeps, N points, n points of a chunk.
"""

import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uniscene.data.files import POINT_BYTES, read_lidarseg, read_sweep
from uniscene.errors import UserError
from uniscene.occ_label.semantics import UNLABELLED, occ_classes_of_lidarseg

READ_THREADS = 8  # at most; sweep files are read this many at a time


@dataclass
class SweepChunk:
    """Sweeps first .. last - 1 of a scene: points [n, 3] float32 sensor frame, ring [n] uint8, classes [n] uint8
    (occupancy class 0..16 or semantics.UNLABELLED)."""

    first: int
    last: int
    points: np.ndarray
    ring: np.ndarray
    classes: np.ndarray


@dataclass
class SweepArrays:
    """Sweeps held in memory. points_lidar: [N, 3] float32 sensor frame, sweeps concatenated in order;
    ring: [N] uint8; lidarseg: [N] uint8 occupancy class 0..16 or UNLABELLED; sweep_offsets: [S + 1] int64."""

    points_lidar: np.ndarray
    ring: np.ndarray
    lidarseg: np.ndarray
    sweep_offsets: np.ndarray

    @property
    def num_points(self) -> int:
        return int(self.sweep_offsets[-1])

    def chunks(self, ranges: Iterable[tuple[int, int]]) -> Iterator[SweepChunk]:
        """The sweeps of each (first, last) range, in order."""
        for first, last in ranges:
            rows = slice(int(self.sweep_offsets[first]), int(self.sweep_offsets[last]))
            yield SweepChunk(first, last, self.points_lidar[rows, :3], self.ring[rows], self.lidarseg[rows])


class SweepFiles:
    """Sweeps read from their files on demand. sweep_paths, lidarseg_paths: [S] relative to `dataroot`
    ("" where a sweep has no lidarseg: its points are UNLABELLED).

    Every file's size is checked when the source is made (a missing, empty or truncated sweep stops
    with a message naming it, before any work), which also gives `sweep_offsets`.
    """

    def __init__(self, dataroot, sweep_paths, lidarseg_paths, threads: int | None = None):
        self.dataroot = Path(dataroot)
        self.sweep_paths = [self.dataroot / path for path in sweep_paths]
        self.lidarseg_paths = [self.dataroot / path if path else None for path in lidarseg_paths]
        self.threads = threads or max(1, min(READ_THREADS, os.cpu_count() or 1))
        counts = [_point_count(path) for path in self.sweep_paths]
        self.sweep_offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)

    @property
    def num_points(self) -> int:
        return int(self.sweep_offsets[-1])

    def chunks(self, ranges: Iterable[tuple[int, int]]) -> Iterator[SweepChunk]:
        """The sweeps of each (first, last) range, in order; the next range's files are read while one is used."""
        ranges = list(ranges)
        with ThreadPoolExecutor(self.threads, thread_name_prefix="read-sweeps") as pool:
            reading = self._submit(pool, *ranges[0]) if ranges else []
            for index, (first, last) in enumerate(ranges):
                current, reading = reading, self._submit(pool, *ranges[index + 1]) if index + 1 < len(ranges) else []
                sweeps = [future.result() for future in current]  # re-raises a reader's UserError
                points, ring, classes = (np.concatenate(column) for column in zip(*sweeps))
                del current, sweeps
                yield SweepChunk(first, last, points, ring, classes)

    def _submit(self, pool: ThreadPoolExecutor, first: int, last: int) -> list:
        return [pool.submit(self._read, s) for s in range(first, last)]

    def _read(self, s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sweep = read_sweep(self.sweep_paths[s])
        expected = int(self.sweep_offsets[s + 1] - self.sweep_offsets[s])
        if len(sweep) != expected:
            raise UserError(f"LiDAR sweep {self.sweep_paths[s]} changed while occ_label read it ({len(sweep)} points, {expected} before): rerun")
        points, ring = sweep[:, :3], sweep[:, 4].astype(np.uint8)  # the view goes into the chunk's copy
        source = self.lidarseg_paths[s]
        if source is None:
            return points, ring, np.full(len(sweep), UNLABELLED, np.uint8)
        return points, ring, occ_classes_of_lidarseg(read_lidarseg(source, len(sweep)), str(source))


def _point_count(path: Path) -> int:
    """Points in a sweep file, from its size; a missing, empty or truncated file raises read_sweep's UserError."""
    size = path.stat().st_size if path.is_file() else 0
    if size == 0 or size % POINT_BYTES:
        read_sweep(path)  # raises the UserError that names the file and the fix
    return size // POINT_BYTES
