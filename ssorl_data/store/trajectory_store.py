"""TrajectoryStore, the front class: opening and creating a store, its properties and reads.

Writes follow one protocol: arrays grow beyond the committed sizes, data is
written there (`writer`), and the group attributes `n_steps`/`n_episodes` are
updated last, in one atomic file replace (`appending`). Readers never look past
the committed sizes, so a writer killed at any moment leaves a store that opens
at its last commit. Splits and relabel runs live in their own modules; the
methods here delegate to them so that callers see one object.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import zarr

from ssorl_data import __version__, layout
from ssorl_data.episode_index import EpisodeIndex
from ssorl_data.episodes import EpisodeBatch
from ssorl_data.errors import (
    ReadOnlyStoreError,
    StoreExistsError,
    StoreFormatError,
    StoreNotFoundError,
)
from ssorl_data.metadata import StoreMetadata, check_box
from ssorl_data.store import chunks, ranges, relabels, splits
from ssorl_data.store.lock import WriterLock
from ssorl_data.store.open_checks import check_committed_sizes, metadata_errors
from ssorl_data.store.relabels import RelabelRun
from ssorl_data.store.splits import Split
from ssorl_data.store.writer import Appender, Compression, create_arrays

Mode = Literal["r", "a"]

STEP_KEYS = {
    "actions": layout.ACTIONS,
    "action_mask": layout.ACTION_MASK,
    "rewards": layout.REWARDS,
    "terminations": layout.TERMINATIONS,
    "truncations": layout.TRUNCATIONS,
}


@dataclass(frozen=True)
class EpisodeTable(EpisodeIndex):
    """The committed episode table, in RAM (it is small: a few numbers per episode).

    `step_start` and `lengths` are the stored columns, so the index arithmetic of
    `EpisodeIndex` applies to the store's arrays directly.
    """

    returns: np.ndarray  # [E] float64
    labelled: np.ndarray  # [E] bool


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
        check_committed_sizes(self)

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
            created_by=f"ssorl {__version__}",
            created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            extra=extra or {},
            every_chunk_written=True,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.parent / f".{path.name}.creating-{uuid.uuid4().hex[:8]}"
        try:
            group = zarr.open_group(staging, mode="w-", zarr_format=3)
            create_arrays(group, metadata, chunk_steps, compression, compression_level)
            # `chunk_steps` records the step arrays' chunk shape for readers outside
            # ssorl; ssorl itself reads the chunk shape from the arrays.
            group.update_attributes({**metadata.to_dict(), "chunk_steps": chunk_steps})
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
            with metadata_errors(path, ""):
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
        """Rows per chunk of the step arrays: their chunk shape is the one source of it."""
        return int(self._array(layout.REWARDS).chunks[0])

    # ------------------------------------------------------------------ reading
    def episode_table(self) -> EpisodeTable:
        """The committed episode table, read whole."""
        e = self.n_episodes
        return EpisodeTable(
            step_start=self._read(layout.STEP_START, 0, e),
            lengths=self._read(layout.LENGTH, 0, e),
            returns=self._read(layout.RETURN, 0, e),
            labelled=self._read(layout.LABELLED, 0, e),
        )

    def read_observations(self, start: int, stop: int) -> np.ndarray:
        """Observation rows [start, stop) (row g+e holds step g of episode e)."""
        self._check_range("observations", start, stop, self.n_steps + self.n_episodes)
        return self._read(layout.OBSERVATIONS, start, stop)

    def read_steps(self, key: str, start: int, stop: int) -> np.ndarray:
        """Per-step column `key` (actions, action_mask, rewards, terminations, truncations)."""
        if key not in STEP_KEYS:
            raise KeyError(f"Expected one of {sorted(STEP_KEYS)}. Got {key!r} instead.")
        self._check_range(key, start, stop, self.n_steps)
        return self._read(STEP_KEYS[key], start, stop)

    def iter_rows(self, key: str, block_chunks: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        """(start, rows) of column `key` ("observations" or a step key) over its committed rows,
        `block_chunks` chunks at a time: a whole-array pass that holds one block."""
        name, size = self._column(key)
        read = functools.partial(self._read, name)
        return ranges.iter_blocks(read, size, block_chunks * int(self._array(name).chunks[0]))

    def read_ranges(
        self, key: str, starts: np.ndarray, stops: np.ndarray, out: np.ndarray, block_chunks=4
    ) -> np.ndarray:
        """`out` filled with the rows of column `key` in the sorted, disjoint ranges
        [starts[i], stops[i]), concatenated (cast to `out`'s dtype); each chunk is decoded
        at most once, and `block_chunks` chunks are held at a time besides `out`."""
        name, size = self._column(key)
        if len(starts) and (int(np.min(starts)) < 0 or int(np.max(stops)) > size):
            raise IndexError(f"{self.path}: {key} ranges outside the committed [0, {size}).")
        chunk = int(self._array(name).chunks[0])
        read = functools.partial(self._read, name)
        return ranges.gather_ranges(read, starts, stops, out, block_chunks * chunk, chunk)

    def read_episodes(
        self, start: int, stop: int, table: EpisodeTable | None = None
    ) -> EpisodeBatch:
        """Episodes [start, stop) as one batch, read with one slice per column."""
        table = table or self.episode_table()
        self._check_range("episodes", start, stop, self.n_episodes)
        step_lo, step_hi = table.step_range(start, stop)
        obs_lo, obs_hi = table.obs_range(start, stop)
        return EpisodeBatch(
            observations=self._read(layout.OBSERVATIONS, obs_lo, obs_hi),
            actions=self._read(layout.ACTIONS, step_lo, step_hi),
            rewards=self._read(layout.REWARDS, step_lo, step_hi),
            terminations=self._read(layout.TERMINATIONS, step_lo, step_hi),
            truncations=self._read(layout.TRUNCATIONS, step_lo, step_hi),
            lengths=table.lengths[start:stop].astype(np.int64),
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
        for first, last in table.runs(max_steps or 4 * self.chunk_steps):
            yield self.read_episodes(first, last, table)

    def raw_array_info(self, name: str, with_dtype: bool = False) -> tuple[Any, ...]:
        """(stored shape, chunk shape[, dtype]) of array `name`, beyond the committed sizes."""
        array = self._array(name)
        info = (tuple(array.shape), tuple(array.chunks))
        return (*info, np.dtype(array.dtype)) if with_dtype else info

    def chunk_ranges(self) -> list[tuple[int, int]]:
        """Half-open step ranges [start, stop) of the step arrays' chunks, in order."""
        c = self.chunk_steps
        return [(lo, min(lo + c, self.n_steps)) for lo in range(0, self.n_steps, c)]

    def chunk_problems(self, progress: bool = False) -> list[str]:
        """Every chunk inside the committed sizes, of every array (splits and relabel runs
        included), that is missing, cut short or does not decode: one line each."""
        return chunks.store_chunk_problems(self, progress)

    # ------------------------------------------------------------------ splits
    def list_splits(self) -> list[str]:
        """Names of the splits in the store (complete or not; `read_split` checks)."""
        return self._children(layout.SPLITS)

    def read_split(self, name: str) -> Split:
        """The complete split `name`; episodes appended after it was made are not visible."""
        return splits.read_split(self, name)

    def write_split(
        self, name: str, visible: np.ndarray, protocol: dict[str, Any], *, overwrite: bool = False
    ) -> Split:
        """Store split `name`: `visible` [E] bool, True only on fully labelled episodes."""
        return splits.write_split(self, name, visible, protocol, overwrite=overwrite)

    # ------------------------------------------------------------------ relabel runs
    def list_relabels(self) -> list[str]:
        """Names of the relabel runs in the store (partial or complete)."""
        return self._children(layout.RELABELS)

    def create_relabel(
        self, name: str, provenance: dict[str, Any], *, overwrite: bool = False
    ) -> RelabelRun:
        """Create the empty, `partial` relabel run `name` over the committed steps."""
        return relabels.create_relabel(self, name, provenance, overwrite=overwrite)

    def relabel_run(self, name: str) -> RelabelRun:
        """Relabel run `name` (writable only when the store is open with mode="a")."""
        return relabels.relabel_run(self, name)

    def complete_relabel(self, name: str, metrics: dict[str, Any]) -> None:
        """Mark run `name` complete with its metrics, once every chunk is done."""
        relabels.complete_relabel(self, name, metrics)

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
        self._require_writer("append")
        appender = Appender(self, source)
        try:
            yield appender
            n_steps, n_episodes = appender.finish()
        finally:
            appender.close()
        extra = self.metadata.extra
        if provenance is not None:
            extra = {**extra, "imports": [*extra.get("imports", []), provenance]}
        # The commit: one atomic replace of the group's zarr.json.
        self._group.update_attributes(
            {"n_steps": n_steps, "n_episodes": n_episodes, "extra": extra}
        )
        self.metadata = replace(self.metadata, n_steps=n_steps, n_episodes=n_episodes, extra=extra)

    def append(self, batch: EpisodeBatch, source: str = "episodes") -> range:
        """Append a batch in one transaction; returns the new episode indices."""
        first = self.n_episodes
        with self.appending(source) as appender:
            appender.add(batch)
        return range(first, self.n_episodes)

    # ------------------------------------------------------------------ for the package
    def _children(self, parent: str) -> list[str]:
        with metadata_errors(self.path, parent):
            # `in` reads an unparsable group as absent: its file tells (then zarr's error)
            if parent not in self._group and not (self.path / parent / "zarr.json").is_file():
                return []
            with warnings.catch_warnings():
                # a folder without zarr.json: a split or run whose creation was killed before
                # its first file (its rerun writes it); zarr skips it, and so do we, unwarned
                warnings.filterwarnings("ignore", "Object at .* is not recognized", UserWarning)
                return sorted(self._group[parent].group_keys())

    def _node(self, path: str) -> Any:
        """The group or array at `path` (KeyError when absent), its zarr.json checked."""
        with metadata_errors(self.path, path):
            return self._group[path]

    def _has(self, path: str) -> bool:
        with metadata_errors(self.path, path):
            return path in self._group

    def _column(self, key: str) -> tuple[str, int]:
        """(array name, committed rows) of "observations" or a step key."""
        if key == "observations":
            return layout.OBSERVATIONS, self.n_steps + self.n_episodes
        if key not in STEP_KEYS:
            raise KeyError(f"Expected observations or {sorted(STEP_KEYS)}. Got {key!r} instead.")
        return STEP_KEYS[key], self.n_steps

    def _array(self, name: str) -> zarr.Array:
        return self._node(name)

    def _read(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of store array `name`, inside the committed sizes, checked."""
        array = self._array(name)
        required = range(chunks.n_chunks(array, stop)) if self.metadata.every_chunk_written else ()
        return chunks.read_rows(array, start, stop, required, chunks.STORE_REMEDY)

    def _make_room(
        self, path: str, overwrite: bool, error: type[Exception], what: str, command: str
    ) -> None:
        """Delete the group at `path` if `overwrite`, else refuse when it exists."""
        if path not in self._group:
            return
        if not overwrite:
            raise error(
                f"{self.path}/{path}: a {what} of that name exists. Pass overwrite=True "
                f"(`{command} --overwrite`) to replace it, or choose another name."
            )
        del self._group[path]

    def _require_writer(self, action: str) -> None:
        if self.mode != "a" or self._lock is None:
            raise ReadOnlyStoreError(
                f"{self.path}: opened read-only, cannot {action}. Use "
                "TrajectoryStore.open(path, mode='a') or TrajectoryStore.create(...)."
            )

    def _check_range(self, what: str, start: int, stop: int, size: int) -> None:
        if not 0 <= start <= stop <= size:
            raise IndexError(
                f"{self.path}: {what} range [{start}, {stop}) is outside the committed [0, {size})."
            )
