"""Where each process is in the stream of training rows: DATA_DIR's Parquet row groups, a disjoint share per
process, read one shuffle window at a time.

Each epoch permutes the units (row groups, or slices of them when there are fewer row groups than processes)
with (seed, epoch); process r takes every world-th of them, from the r-th on, and packs them in that order into
windows of at most `buffer_rows` rows (0: the whole share in one window, i.e. in memory). A window's rows are
ordered by `sampler.mixed_order` under the key (seed, epoch, rank, window). So the whole stream is a function of
(seed, epoch) and the position is three integers (epoch, window, cursor), which a checkpoint keeps: a resumed
run reads the same windows in the same order and draws the same next batch. While a window is consumed, the
next one is read in the background.
"""

from __future__ import annotations

from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from eclip.data.store import SHARDS
from eclip.errors import EclipError
from eclip.runs.provenance import data_report


@dataclass(frozen=True, order=True)
class Unit:
    """Rows [start, stop) of a row group's `split` rows; `first`: the index of row `start` in the whole split
    (shards in name order), which addresses the split-wide text features file."""
    path: Path
    row_group: int
    start: int
    stop: int
    first: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


def find_units(data_dir: Path, split: str, columns: list[str], world: int) -> list[Unit]:
    """The row groups holding `split` rows, cut into `world` slices each when there are fewer than `world` of
    them, or EclipError for an unfinished or empty DATA_DIR or one lacking `columns`."""
    data_dir = Path(data_dir)
    data_report(data_dir)
    units, first = [], 0
    for path in sorted((data_dir / SHARDS).glob("part-*.parquet")):
        parquet = pq.ParquetFile(path)
        missing = sorted(set(columns) - set(parquet.schema_arrow.names))
        if missing:
            raise EclipError(f"{path}: no column(s) {', '.join(missing)}; it has "
                             f"{', '.join(parquet.schema_arrow.names)}: re-run `eclip prepare`")
        for row_group in range(parquet.num_row_groups):
            in_split = pc.sum(pc.equal(parquet.read_row_group(row_group, columns=["split"]).column("split"), split))
            rows = in_split.as_py() or 0
            if rows:
                units.append(Unit(path, row_group, 0, rows, first))
                first += rows
    if not units:
        raise EclipError(f"{data_dir}: no products in split {split!r}: prepare a larger catalogue")
    if len(units) < world:
        units = [Unit(u.path, u.row_group, start, stop, u.first + start) for u in units
                 for start, stop in zip(np.linspace(0, u.rows, world + 1).astype(int)[:-1],
                                        np.linspace(0, u.rows, world + 1).astype(int)[1:]) if stop > start]
    if len(units) < world:
        raise EclipError(f"{data_dir}: {first} {split} products cannot give each of {world} processes a share")
    return units


def epoch_windows(units: list[Unit], seed: int, epoch: int, rank: int, world: int, buffer_rows: int) -> list[list[Unit]]:
    """Process `rank`'s windows in `epoch`: its share of the permuted units, packed in order into windows of at most
    `buffer_rows` rows (a larger unit is a window of its own). Within a window the units are in file order: the
    window's own shuffle mixes them."""
    order = np.random.default_rng([seed, epoch]).permutation(len(units))
    windows, current, rows = [], [], 0
    for index in order[rank::world]:
        unit = units[index]
        if current and buffer_rows and rows + unit.rows > buffer_rows:
            windows.append(sorted(current))
            current, rows = [], 0
        current.append(unit)
        rows += unit.rows
    return windows + [sorted(current)]


# A batch's rows: (the window being read, first and last position in its order).
Piece = tuple[Future, int, int]


class PairStream:
    """One process's endless stream of rows over epochs; `open_window(key, units)` reads a window (`key` =
    (epoch, window)) and runs in `reader`, a window ahead of the rows being drawn."""

    def __init__(self, units: list[Unit], seed: int, rank: int, world: int, buffer_rows: int,
                 open_window: Callable[[tuple[int, int], list[Unit]], object], reader: Executor):
        self.units, self.seed, self.rank, self.world, self.buffer_rows = units, seed, rank, world, buffer_rows
        self.open_window, self.reader = open_window, reader
        self.epoch, self.window, self.cursor = 0, 0, 0
        self._plans: dict[int, list[list[Unit]]] = {}
        self._windows: dict[tuple[int, int], Future] = {}

    @property
    def size(self) -> int:
        """Rows in the whole split (all processes)."""
        return sum(unit.rows for unit in self.units)

    def _plan(self, epoch: int) -> list[list[Unit]]:
        if epoch not in self._plans:
            self._plans = {e: p for e, p in self._plans.items() if e >= self.epoch}
            self._plans[epoch] = epoch_windows(self.units, self.seed, epoch, self.rank, self.world, self.buffer_rows)
        return self._plans[epoch]

    def _successor(self, key: tuple[int, int]) -> tuple[int, int]:
        epoch, window = key
        return (epoch, window + 1) if window + 1 < len(self._plan(epoch)) else (epoch + 1, 0)

    def _read(self, key: tuple[int, int]) -> Future:
        """The window `key`, with the next one read ahead; windows before it are let go (batches still being
        made from them hold their own reference)."""
        ahead = self._successor(key)
        self._windows = {k: f for k, f in self._windows.items() if k in (key, ahead)}
        # A window of the same units (a share held whole: the next epoch's window) is not read twice: the reader
        # re-orders the rows it holds when the stream gets there.
        same = self._plan(ahead[0])[ahead[1]] == self._plan(key[0])[key[1]]
        for wanted in (key,) if same else (key, ahead):
            if wanted not in self._windows:
                self._windows[wanted] = self.reader.submit(self.open_window, wanted, self._plan(wanted[0])[wanted[1]])
        return self._windows[key]

    def next(self, size: int) -> list[Piece]:
        """The next `size` rows, running on into the next window and epoch."""
        pieces = []
        while size:
            rows = sum(unit.rows for unit in self._plan(self.epoch)[self.window])
            take = min(size, rows - self.cursor)
            pieces.append((self._read((self.epoch, self.window)), self.cursor, self.cursor + take))
            size -= take
            self.cursor += take
            if self.cursor == rows:
                (self.epoch, self.window), self.cursor = self._successor((self.epoch, self.window)), 0
        return pieces

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "window": self.window, "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"epoch", "window", "cursor"}:
            raise EclipError("the checkpoint's data position was written by an older eclip (whole split in memory): "
                             "start a new run, it cannot be resumed exactly")
        self.epoch, self.window, self.cursor = int(state["epoch"]), int(state["window"]), int(state["cursor"])
        self._windows = {}
