"""TrajectoryStore: the chunked Zarr store of episodes (the only module that imports zarr).

Layout and rules are in DESIGN.md "The store". Writes follow one protocol: arrays
grow beyond the committed sizes, data is written there, and the group attributes
`n_steps`/`n_episodes` are updated last, in one atomic file replace. Readers never
look past the committed sizes, so a writer killed at any moment leaves a store
that opens at its last commit.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import zarr
from zarr.codecs import BloscCodec

from ssorl_data import __version__, layout
from ssorl_data.episodes import EpisodeBatch, validate_batch
from ssorl_data.errors import (
    ReadOnlyStoreError,
    StoreExistsError,
    StoreFormatError,
    StoreNotFoundError,
)
from ssorl_data.lock import WriterLock
from ssorl_data.metadata import StoreMetadata, check_box

Mode = Literal["r", "a"]
Compression = Literal["zstd", "lz4", "none"]

STEP_KEYS = {
    "actions": layout.ACTIONS,
    "action_mask": layout.ACTION_MASK,
    "rewards": layout.REWARDS,
    "terminations": layout.TERMINATIONS,
    "truncations": layout.TRUNCATIONS,
}


@dataclass(frozen=True)
class EpisodeTable:
    """The committed episode table, in RAM (it is small: a few numbers per episode)."""

    step_start: np.ndarray  # [E] int64
    length: np.ndarray  # [E] int64
    returns: np.ndarray  # [E] float64
    labelled: np.ndarray  # [E] bool

    @property
    def n_episodes(self) -> int:
        return int(self.length.shape[0])


class TrajectoryStore:
    """A store opened read-only (`mode="r"`) or for appending (`mode="a"`, holds the lock).

    Enter write mode through `create()` or `open(path, mode="a")`; use it as a
    context manager so the lock is released deterministically.
    """

    def __init__(self, path: Path, group: zarr.Group, mode: Mode, lock: WriterLock | None):
        self.path = path
        self.mode: Mode = mode
        self._group = group
        self._lock = lock
        self.metadata = StoreMetadata.from_dict(dict(group.attrs), str(path))

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        observation_space: gym.spaces.Box,
        action_space: gym.spaces.Box,
        *,
        env_id: str | None = None,
        chunk_steps: int = layout.DEFAULT_CHUNK_STEPS,
        compression: Compression = "zstd",
        compression_level: int = layout.DEFAULT_COMPRESSION_LEVEL,
        ref_min_score: float | None = None,
        ref_max_score: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> TrajectoryStore:
        """Create an empty store and open it for appending.

        The store is built in a hidden sibling directory and renamed into place, so
        a crash during creation never leaves a half-made store at `path`.
        """
        path = Path(path)
        if path.exists():
            raise StoreExistsError(
                f"{path}: already exists. Open it with mode='a' (CLI: --append) to add "
                "episodes, or choose another path."
            )
        check_box(observation_space, "observation")
        check_box(action_space, "action")
        if chunk_steps < 1:
            raise ValueError(f"Expected chunk_steps >= 1. Got {chunk_steps!r} instead.")
        metadata = StoreMetadata(
            observation_space=observation_space,
            action_space=action_space,
            env_id=env_id,
            ref_min_score=ref_min_score,
            ref_max_score=ref_max_score,
            chunk_steps=chunk_steps,
            created_by=f"ssorl {__version__}",
            created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            extra=extra or {},
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.parent / f".{path.name}.creating-{uuid.uuid4().hex[:8]}"
        try:
            group = zarr.open_group(staging, mode="w-", zarr_format=3)
            _create_arrays(group, metadata, compression, compression_level)
            group.update_attributes(metadata.to_dict())
            os.rename(staging, path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls.open(path, mode="a")

    @classmethod
    def open(cls, path: str | os.PathLike[str], mode: Mode = "r") -> TrajectoryStore:
        """Open an existing store; `mode="a"` takes the writer lock or fails clearly."""
        path = Path(path)
        if mode not in ("r", "a"):
            raise ValueError(f"Expected mode 'r' or 'a'. Got {mode!r} instead.")
        if not (path / "zarr.json").is_file():
            if path.exists():
                raise StoreFormatError(
                    f"{path}: not an ssorl store (no zarr.json). Create one with "
                    "`ssorl data import SOURCE STORE`."
                )
            raise StoreNotFoundError(
                f"{path}: no store here. Create one with `ssorl data import SOURCE STORE`."
            )
        lock = None
        if mode == "a":
            lock = WriterLock(path / layout.LOCK_FILE)
            lock.acquire()
        try:
            group = zarr.open_group(path, mode="r+" if mode == "a" else "r", zarr_format=3)
            return cls(path, group, mode, lock)
        except BaseException:
            if lock is not None:
                lock.release()
            raise

    def close(self) -> None:
        """Release the writer lock (if held). Reading after close is not supported."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> TrajectoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"TrajectoryStore({str(self.path)!r}, mode={self.mode!r}, "
            f"n_episodes={self.n_episodes}, n_steps={self.n_steps})"
        )

    # ------------------------------------------------------------------ metadata
    @property
    def n_steps(self) -> int:
        return self.metadata.n_steps

    @property
    def n_episodes(self) -> int:
        return self.metadata.n_episodes

    @property
    def observation_space(self) -> gym.spaces.Box:
        return self.metadata.observation_space

    @property
    def action_space(self) -> gym.spaces.Box:
        return self.metadata.action_space

    @property
    def env_id(self) -> str | None:
        return self.metadata.env_id

    @property
    def chunk_steps(self) -> int:
        return int(self._group[layout.REWARDS].chunks[0])

    # ------------------------------------------------------------------ reading
    def episode_table(self) -> EpisodeTable:
        """The committed episode table, read whole."""
        e = self.n_episodes
        return EpisodeTable(
            step_start=self._group[layout.STEP_START][:e],
            length=self._group[layout.LENGTH][:e],
            returns=self._group[layout.RETURN][:e],
            labelled=self._group[layout.LABELLED][:e],
        )

    def read_observations(self, start: int, stop: int) -> np.ndarray:
        """Observation rows [start, stop) (row g+e holds step g of episode e)."""
        self._check_range("observations", start, stop, self.n_steps + self.n_episodes)
        return self._group[layout.OBSERVATIONS][start:stop]

    def read_steps(self, key: str, start: int, stop: int) -> np.ndarray:
        """Per-step column `key` (actions, action_mask, rewards, terminations, truncations)."""
        if key not in STEP_KEYS:
            raise KeyError(f"Expected one of {sorted(STEP_KEYS)}. Got {key!r} instead.")
        self._check_range(key, start, stop, self.n_steps)
        return self._group[STEP_KEYS[key]][start:stop]

    def read_episodes(
        self, start: int, stop: int, table: EpisodeTable | None = None
    ) -> EpisodeBatch:
        """Episodes [start, stop) as one batch, read with one slice per column."""
        table = table or self.episode_table()
        self._check_range("episodes", start, stop, self.n_episodes)
        step_lo = int(table.step_start[start]) if start < self.n_episodes else self.n_steps
        step_hi = (
            int(table.step_start[stop - 1] + table.length[stop - 1]) if stop > start else step_lo
        )
        return EpisodeBatch(
            observations=self._group[layout.OBSERVATIONS][step_lo + start : step_hi + stop],
            actions=self._group[layout.ACTIONS][step_lo:step_hi],
            rewards=self._group[layout.REWARDS][step_lo:step_hi],
            terminations=self._group[layout.TERMINATIONS][step_lo:step_hi],
            truncations=self._group[layout.TRUNCATIONS][step_lo:step_hi],
            lengths=table.length[start:stop].astype(np.int64),
        )

    def episode(self, index: int) -> EpisodeBatch:
        """Episode `index` as a batch of one."""
        if not 0 <= index < self.n_episodes:
            raise IndexError(
                f"{self.path}: episode {index} does not exist; the store has "
                f"{self.n_episodes} episodes."
            )
        return self.read_episodes(index, index + 1)

    def iter_batches(self, max_steps: int | None = None) -> Iterator[EpisodeBatch]:
        """Whole episodes in order, in batches of about `max_steps` steps (at least one episode)."""
        table = self.episode_table()
        max_steps = max_steps or 4 * self.chunk_steps
        ends = np.cumsum(table.length)
        start = 0
        while start < table.n_episodes:
            base = ends[start - 1] if start else 0
            stop = max(start + 1, int(np.searchsorted(ends, base + max_steps, side="right")))
            yield self.read_episodes(start, stop, table)
            start = stop

    def raw_array_info(self, name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(stored shape, chunk shape) of array `name`, beyond the committed sizes; for verify."""
        array = self._group[name]
        return tuple(array.shape), tuple(array.chunks)

    def _check_range(self, what: str, start: int, stop: int, size: int) -> None:
        if not 0 <= start <= stop <= size:
            raise IndexError(
                f"{self.path}: {what} range [{start}, {stop}) is outside the committed [0, {size})."
            )

    # ------------------------------------------------------------------ writing
    @contextmanager
    def appending(
        self, source: str = "episodes", provenance: dict[str, Any] | None = None
    ) -> Iterator[Appender]:
        """A transaction: episodes added inside become visible together on clean exit.

        On an exception nothing is committed; the rows written past the committed
        sizes are ignored by readers and overwritten by the next append.
        `provenance` (where the episodes came from) is appended to the store's
        `extra["imports"]` in the same atomic commit.
        """
        if self.mode != "a" or self._lock is None:
            raise ReadOnlyStoreError(
                f"{self.path}: opened read-only. Use TrajectoryStore.open(path, mode='a') "
                "or TrajectoryStore.create(...) to append."
            )
        appender = Appender(self, source)
        try:
            yield appender
            n_steps, n_episodes = appender.finish()
            extra = self.metadata.extra
            if provenance is not None:
                extra = {**extra, "imports": [*extra.get("imports", []), provenance]}
            # The commit: one atomic replace of the group's zarr.json.
            self._group.update_attributes(
                {"n_steps": n_steps, "n_episodes": n_episodes, "extra": extra}
            )
            self.metadata = replace(
                self.metadata, n_steps=n_steps, n_episodes=n_episodes, extra=extra
            )
        finally:
            appender.close()

    def append(self, batch: EpisodeBatch, source: str = "episodes") -> range:
        """Append a batch in one transaction; returns the new episode indices."""
        first = self.n_episodes
        with self.appending(source) as appender:
            appender.add(batch)
        return range(first, self.n_episodes)


class _ColumnWriter:
    """Appends rows to one array in whole, chunk-aligned blocks.

    Rows that do not fill a chunk wait in a small tail until they do (or until the
    transaction ends), so every chunk is encoded once and large batches are written
    straight from the caller's arrays without a copy.
    """

    def __init__(self, array: zarr.Array, start: int) -> None:
        self.array = array
        self.next = start  # first row not yet handed to a write
        self.chunk = int(array.chunks[0])
        self._tail: list[np.ndarray] = []
        self._tail_rows = 0

    def push(self, data: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Take `data` as the next rows; return the (row, block) writes now due."""
        writes = []
        if self._tail_rows or self.next % self.chunk:
            need = -(self.next + self._tail_rows) % self.chunk
            self._tail.append(data[:need].copy())
            self._tail_rows += min(need, data.shape[0])
            data = data[need:]
            if (self.next + self._tail_rows) % self.chunk:
                return writes  # the chunk is still not full
            writes.append(self._take_tail())
        full = data.shape[0] - data.shape[0] % self.chunk
        if full:
            writes.append((self.next, data[:full]))
            self.next += full
        if full < data.shape[0]:
            self._tail.append(data[full:].copy())
            self._tail_rows += data.shape[0] - full
        return writes

    def flush(self) -> list[tuple[int, np.ndarray]]:
        """The remaining tail as a final (partial-chunk) write."""
        return [self._take_tail()] if self._tail_rows else []

    def _take_tail(self) -> tuple[int, np.ndarray]:
        block = np.concatenate(self._tail) if len(self._tail) > 1 else self._tail[0]
        write = (self.next, block)
        self.next += self._tail_rows
        self._tail, self._tail_rows = [], 0
        return write


class Appender:
    """Validates batches and streams their columns to the arrays (see `appending`)."""

    def __init__(self, store: TrajectoryStore, source: str) -> None:
        self._source = source
        self._added = 0
        self._n_steps, self._n_episodes = store.n_steps, store.n_episodes
        space = store.observation_space
        self._obs = (tuple(space.shape), np.dtype(space.dtype))
        self._act_shape = tuple(store.action_space.shape)
        group = store._group
        starts = {layout.OBSERVATIONS: store.n_steps + store.n_episodes}
        starts |= {name: store.n_steps for name in layout.STEP_ARRAYS}
        starts |= {name: store.n_episodes for name in layout.EPISODE_ARRAYS}
        self._columns = {name: _ColumnWriter(group[name], at) for name, at in starts.items()}
        # Columns are independent: encode and write them concurrently (Blosc releases the GIL).
        self._pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1)

    def add(self, batch: EpisodeBatch) -> None:
        """Validate episodes and write every chunk they complete.

        Errors number episodes from the start of this transaction (the source's own
        numbering when one file is imported).
        """
        validate_batch(
            batch, self._obs[0], self._obs[1], self._act_shape, self._source, self._added
        )
        data = {
            layout.OBSERVATIONS: batch.observations,
            layout.ACTIONS: batch.actions,
            layout.ACTION_MASK: batch.action_mask,
            layout.REWARDS: batch.rewards,
            layout.TERMINATIONS: batch.terminations,
            layout.TRUNCATIONS: batch.truncations,
            layout.STEP_START: batch.step_start + self._n_steps,
            layout.LENGTH: batch.lengths,
            layout.RETURN: batch.episode_returns(),
            layout.LABELLED: batch.episode_labelled(),
        }
        self._write({name: self._columns[name].push(rows) for name, rows in data.items()})
        self._added += batch.n_episodes
        self._n_steps += batch.n_steps
        self._n_episodes += batch.n_episodes

    def finish(self) -> tuple[int, int]:
        """Write the tails, size every array exactly; return the sizes to commit."""
        self._write({name: column.flush() for name, column in self._columns.items()})
        for column in self._columns.values():
            if column.array.shape[0] != column.next:
                column.array.resize((column.next, *column.array.shape[1:]))
        return self._n_steps, self._n_episodes

    def close(self) -> None:
        self._pool.shutdown()

    def _write(self, writes: dict[str, list[tuple[int, np.ndarray]]]) -> None:
        jobs = []
        for name, blocks in writes.items():
            if not blocks:
                continue
            array = self._columns[name].array
            end = blocks[-1][0] + blocks[-1][1].shape[0]
            if array.shape[0] < end:
                array.resize((end, *array.shape[1:]))
            jobs += [(array, lo, block) for lo, block in blocks]
        list(self._pool.map(_write_block, jobs))


def _write_block(job: tuple[zarr.Array, int, np.ndarray]) -> None:
    array, lo, block = job
    array[lo : lo + block.shape[0]] = block


def _create_arrays(
    group: zarr.Group, metadata: StoreMetadata, compression: Compression, level: int
) -> None:
    if compression == "none":
        compressors: Any = None
    elif compression in ("zstd", "lz4"):
        compressors = BloscCodec(cname=compression, clevel=level, shuffle="shuffle")
    else:
        raise ValueError(f"Expected compression 'zstd', 'lz4' or 'none'. Got {compression!r}.")
    obs_space, act_space = metadata.observation_space, metadata.action_space
    chunk = metadata.chunk_steps
    step_arrays: list[tuple[str, tuple[int, ...], Any, Any]] = [
        (layout.OBSERVATIONS, tuple(obs_space.shape), obs_space.dtype, 0),
        (layout.ACTIONS, tuple(act_space.shape), np.float32, np.nan),
        (layout.ACTION_MASK, (), bool, False),
        (layout.REWARDS, (), np.float32, 0.0),
        (layout.TERMINATIONS, (), bool, False),
        (layout.TRUNCATIONS, (), bool, False),
    ]
    for name, shape, dtype, fill in step_arrays:
        group.create_array(
            name,
            shape=(0, *shape),
            chunks=(chunk, *shape),
            dtype=dtype,
            fill_value=fill,
            compressors=compressors,
        )
    episode_arrays = [
        (layout.STEP_START, np.int64),
        (layout.LENGTH, np.int64),
        (layout.RETURN, np.float64),
        (layout.LABELLED, bool),
    ]
    for name, dtype in episode_arrays:
        group.create_array(
            name,
            shape=(0,),
            chunks=(layout.DEFAULT_EPISODE_CHUNK,),
            dtype=dtype,
            fill_value=0,
            compressors=compressors,
        )
