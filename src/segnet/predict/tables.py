"""``counts.csv`` and ``objects.csv``: written row by row, or in shares merged once under several processes.

A single process writes both tables directly, flushing after each image, so an interrupted run
keeps the rows of its finished images. Under ``torchrun`` each process (:class:`Shard`) takes
every ``world_size``-th input and writes its rows, each keyed by the input's position, to hidden
share files; once every process is done, rank 0 merges the shares in input order (a streaming
merge: no table is held in memory), writes each table once and removes the shares. The merged
tables are byte for byte those of a one-process run.
"""

from __future__ import annotations

import csv
import heapq
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segnet.core.outputs import open_replacing


def _alone(value: Any) -> list[Any]:
    return [value]


@dataclass(frozen=True)
class Shard:
    """This process's part of a run over several processes.

    Attributes:
        rank, world_size: this process takes the inputs at positions ``rank, rank + world_size, ...``.
        gather: returns every process's value of its argument, in rank order, once all have
            called it (``torch.distributed.all_gather_object``); it is also the barrier.
    """

    rank: int = 0
    world_size: int = 1
    gather: Callable[[Any], list[Any]] = _alone

    def takes(self, position: int) -> bool:
        return position % self.world_size == self.rank

    def share_of(self, total: int) -> int:
        """How many of ``total`` inputs this process takes."""
        return len(range(self.rank, total, self.world_size))


SINGLE_PROCESS = Shard()


class ResultTables:
    """The run's two tables (``counts.csv`` one row per image, ``objects.csv`` one per object)."""

    def __init__(self, paths: Sequence[Path], headers: Sequence[Sequence[str]], shard: Shard = SINGLE_PROCESS) -> None:
        self.paths, self.headers, self.shard = list(paths), headers, shard
        self.sharded = shard.world_size > 1
        targets = [self._share_path(path, shard.rank) for path in self.paths] if self.sharded else self.paths
        self.files = [open_replacing(target) for target in targets]
        self.writers = [csv.writer(handle) for handle in self.files]
        if not self.sharded:
            for writer, header in zip(self.writers, headers):
                writer.writerow(header)

    @staticmethod
    def _share_path(path: Path, rank: int) -> Path:
        return path.with_name(f".{path.stem}.rank{rank}{path.suffix}")

    def add(self, position: int, rows_per_table: Sequence[Sequence[Sequence[Any]]]) -> None:
        """Append one image's rows (one list of rows per table); ``position`` is its place among the inputs."""
        for writer, handle, rows in zip(self.writers, self.files, rows_per_table):
            writer.writerows([[position, *row] for row in rows] if self.sharded else rows)
            handle.flush()

    def close(self) -> None:
        for handle in self.files:
            handle.close()

    def merge(self) -> None:
        """Under several processes, rank 0 writes each table once from every process's share.

        Every process must call this after :meth:`close`; the others wait until rank 0 is done.
        """
        if not self.sharded:
            return
        self.shard.gather(None)  # every share is complete
        if self.shard.rank == 0:
            for path, header in zip(self.paths, self.headers):
                shares = [self._share_path(path, rank) for rank in range(self.shard.world_size)]
                with open_replacing(path) as handle:
                    writer = csv.writer(handle)
                    writer.writerow(header)
                    writer.writerows(
                        row[1:] for row in heapq.merge(*map(_read_share, shares), key=lambda row: int(row[0]))
                    )
                for share in shares:
                    share.unlink()
        self.shard.gather(None)  # the tables exist before any process returns


def _read_share(path: Path) -> Iterator[list[str]]:
    with path.open(newline="") as handle:
        yield from csv.reader(handle)
