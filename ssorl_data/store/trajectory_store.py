"""TrajectoryStore: the chunked Zarr store of episodes (the only module that imports zarr).

Layout and rules are in DESIGN.md "The store". Writes follow one protocol: arrays
grow beyond the committed sizes, data is written there, and the group attributes
`n_steps`/`n_episodes` are updated last, in one atomic file replace. Readers never
look past the committed sizes, so a writer killed at any moment leaves a store
that opens at its last commit.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import zarr
from zarr.codecs import BloscCodec
from zarr.core.sync import sync as zarr_sync

from ssorl_data import __version__, layout
from ssorl_data.episodes import EpisodeBatch, validate_batch
from ssorl_data.errors import (
    ReadOnlyStoreError,
    RelabelExistsError,
    RelabelNotFoundError,
    SplitError,
    SplitExistsError,
    SplitNotFoundError,
    StoreExistsError,
    StoreFormatError,
    StoreNotFoundError,
)
from ssorl_data.lock import WriterLock
from ssorl_data.metadata import StoreMetadata, check_box
from ssorl_data.names import check_name

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


@dataclass(frozen=True)
class Split:
    """A complete split: which episodes' recorded actions training may see."""

    name: str
    visible: np.ndarray  # [E] bool over the store's current episodes (later ones: False)
    attrs: dict[str, Any]  # the protocol it was made with, `n_episodes` at creation, status


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

    def raw_array_info(self, name: str, with_dtype: bool = False) -> tuple[Any, ...]:
        """(stored shape, chunk shape[, dtype]) of array `name`, beyond the committed sizes."""
        array = self._group[name]
        info = (tuple(array.shape), tuple(array.chunks))
        return (*info, np.dtype(array.dtype)) if with_dtype else info

    def chunk_ranges(self) -> list[tuple[int, int]]:
        """Half-open step ranges [start, stop) of the step arrays' chunks, in order."""
        c = self.chunk_steps
        return [(lo, min(lo + c, self.n_steps)) for lo in range(0, self.n_steps, c)]

    # ------------------------------------------------------------------ splits
    def list_splits(self) -> list[str]:
        """Names of the splits in the store (complete or not; `read_split` checks)."""
        return self._children(layout.SPLITS)

    def read_split(self, name: str) -> Split:
        """The complete split `name`; episodes appended after it was made are not visible."""
        check_name(name, "split")
        path = layout.split_path(name)
        if path not in self._group:
            raise SplitNotFoundError(
                f"{self.path}: no split {name!r}; the store has {self.list_splits() or 'none'}. "
                "Make one with `ssorl data split`."
            )
        group = self._group[path]
        attrs = dict(group.attrs)
        if attrs.get("status") != layout.STATUS_COMPLETE:
            raise SplitNotFoundError(
                f"{self.path}/{path}: the split was never finished (status "
                f"{attrs.get('status')!r}). Write it again with overwrite=True (CLI: --overwrite)."
            )
        stored = group[layout.SPLIT_VISIBLE][:]
        visible = np.zeros(self.n_episodes, dtype=bool)
        visible[: stored.shape[0]] = stored
        return Split(name, visible, attrs)

    def write_split(
        self, name: str, visible: np.ndarray, protocol: dict[str, Any], *, overwrite: bool = False
    ) -> Split:
        """Store split `name`: `visible` [E] bool, only on episodes whose every action was recorded.

        The group is marked complete only after the array is written, so a split
        half-written by a killed process is never read.
        """
        self._require_writer("write a split")
        check_name(name, "split")
        visible = np.asarray(visible)
        if visible.dtype != np.bool_ or visible.shape != (self.n_episodes,):
            raise SplitError(
                f"{self.path}: expected split {name!r} as a bool array of shape "
                f"({self.n_episodes},). Got {visible.dtype} of shape {visible.shape} instead."
            )
        no_actions = visible & ~self.episode_table().labelled
        if no_actions.any():
            e = int(np.argmax(no_actions))
            raise SplitError(
                f"{self.path}, episode {e}: split {name!r} makes it visible, but not every step "
                "of it has a recorded action. Only labelled episodes can be visible."
            )
        path = layout.split_path(name)
        self._make_room(path, overwrite, SplitExistsError, "split", "ssorl data split")
        group = self._group.require_group(layout.SPLITS).create_group(
            name, attributes={"status": layout.STATUS_WRITING}
        )
        array = group.create_array(
            layout.SPLIT_VISIBLE,
            shape=visible.shape,
            chunks=(layout.DEFAULT_EPISODE_CHUNK,),
            dtype=bool,
            fill_value=False,
        )
        array[:] = visible
        attrs = {**protocol, "n_episodes": self.n_episodes, "status": layout.STATUS_COMPLETE}
        group.update_attributes(attrs)
        return Split(name, visible.copy(), attrs)

    # ------------------------------------------------------------------ relabel runs
    def list_relabels(self) -> list[str]:
        """Names of the relabel runs in the store (partial or complete)."""
        return self._children(layout.RELABELS)

    def create_relabel(
        self, name: str, provenance: dict[str, Any], *, overwrite: bool = False
    ) -> RelabelRun:
        """Create the empty, `partial` relabel run `name` over the committed steps."""
        self._require_writer("create a relabel run")
        check_name(name, "relabel run")
        path = layout.relabel_path(name)
        self._make_room(path, overwrite, RelabelExistsError, "relabel run", "ssorl relabel")
        n, c = self.n_steps, self.chunk_steps
        n_chunks = -(-n // c)
        attrs = {
            **provenance,
            "n_steps": n,
            "chunk_steps": c,
            "n_chunks": n_chunks,
            "status": layout.STATUS_PARTIAL,
        }
        group = self._group.require_group(layout.RELABELS).create_group(name, attributes=attrs)
        compressors = self._group[layout.ACTIONS].compressors
        act_shape = tuple(self.action_space.shape)
        for key, shape in ((layout.RELABEL_ACTIONS, act_shape), (layout.RELABEL_UNCERTAINTY, ())):
            group.create_array(
                key,
                shape=(n, *shape),
                chunks=(c, *shape),
                dtype=np.float32,
                fill_value=np.nan,
                compressors=compressors,
            )
        group.create_array(
            layout.RELABEL_DONE, shape=(n_chunks,), chunks=(1,), dtype=bool, fill_value=False
        )
        return RelabelRun(self.path, name, group)

    def relabel_run(self, name: str) -> RelabelRun:
        """Relabel run `name` (writable only when the store is open with mode="a")."""
        check_name(name, "relabel run")
        path = layout.relabel_path(name)
        if path not in self._group:
            raise RelabelNotFoundError(
                f"{self.path}: no relabel run {name!r}; the store has "
                f"{self.list_relabels() or 'none'}. Make one with `ssorl relabel`."
            )
        return RelabelRun(self.path, name, self._group[path])

    def complete_relabel(self, name: str, metrics: dict[str, Any]) -> None:
        """Mark run `name` complete with its metrics, once every chunk is done."""
        self._require_writer("complete a relabel run")
        run = self.relabel_run(name)
        missing = np.flatnonzero(~run.done())
        if missing.size:
            raise ValueError(
                f"{self.path}/{layout.relabel_path(name)}: chunks {missing[:8].tolist()} are not "
                "written yet. Run the relabel again to finish them."
            )
        run._group.update_attributes({"metrics": metrics, "status": layout.STATUS_COMPLETE})

    def _children(self, parent: str) -> list[str]:
        if parent not in self._group:
            return []
        return sorted(self._group[parent].group_keys())

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
        yield appender
        n_steps, n_episodes = appender.finish()
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


class RelabelRun:
    """The arrays of one relabel run: proxy actions, uncertainty and the finished-chunk flags.

    Each chunk is written whole and then flagged in `done`, whose chunk size is 1,
    so every flag is its own file: a run killed mid-chunk leaves that chunk
    unflagged, to be recomputed on resume.
    """

    def __init__(self, store_path: Path, name: str, group: zarr.Group) -> None:
        self.store_path = store_path
        self.name = name
        self._group = group
        attrs = self.attrs
        self.n_steps = int(attrs["n_steps"])
        self.chunk_steps = int(attrs["chunk_steps"])
        self.n_chunks = int(attrs["n_chunks"])

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._group.attrs)

    @property
    def status(self) -> str:
        return str(self._group.attrs.get("status"))

    def done(self) -> np.ndarray:
        """[n_chunks] bool: chunks whose actions and uncertainty are written."""
        return self._group[layout.RELABEL_DONE][:]

    def chunk_range(self, index: int) -> tuple[int, int]:
        """Step range [start, stop) of chunk `index`."""
        if not 0 <= index < self.n_chunks:
            raise IndexError(
                f"{self.where}: chunk {index} does not exist; the run has {self.n_chunks} chunks."
            )
        start = index * self.chunk_steps
        return start, min(start + self.chunk_steps, self.n_steps)

    def write_chunk(self, index: int, actions: np.ndarray, uncertainty: np.ndarray) -> None:
        """Write chunk `index` whole, then flag it done."""
        start, stop = self.chunk_range(index)
        act = self._group[layout.RELABEL_ACTIONS]
        expected = ((stop - start, *act.shape[1:]), (stop - start,))
        if actions.shape != expected[0] or uncertainty.shape != expected[1]:
            raise ValueError(
                f"{self.where}: chunk {index} expects actions {expected[0]} and uncertainty "
                f"{expected[1]}. Got {actions.shape} and {uncertainty.shape} instead."
            )
        act[start:stop] = actions
        self._group[layout.RELABEL_UNCERTAINTY][start:stop] = uncertainty
        self._group[layout.RELABEL_DONE][index] = True

    def read(self, key: Literal["actions", "uncertainty"], start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of `actions` or `uncertainty` (NaN in chunks not yet written)."""
        if key not in (layout.RELABEL_ACTIONS, layout.RELABEL_UNCERTAINTY):
            raise KeyError(f"Expected 'actions' or 'uncertainty'. Got {key!r} instead.")
        if not 0 <= start <= stop <= self.n_steps:
            raise IndexError(f"{self.where}: rows [{start}, {stop}) outside [0, {self.n_steps}).")
        return self._group[key][start:stop]

    def array_info(self, key: str) -> tuple[tuple[int, ...], tuple[int, ...], np.dtype]:
        """(shape, chunk shape, dtype) of array `key`; for verify."""
        array = self._group[key]
        return tuple(array.shape), tuple(array.chunks), np.dtype(array.dtype)

    @property
    def where(self) -> str:
        return f"{self.store_path}/{layout.relabel_path(self.name)}"


def open_relabel_for_worker(store_path: str | os.PathLike[str], name: str) -> RelabelRun:
    """Open run `name` for writing chunks WITHOUT the writer lock: for distributed workers only.

    The coordinating process holds the store's writer lock for the whole run and
    gives each worker distinct chunks. A chunk and its done flag are separate
    files that only that worker writes, and no worker touches attributes or the
    committed sizes, so the workers need no lock among themselves.
    """
    check_name(name, "relabel run")
    path = Path(store_path) / layout.relabel_path(name)
    if not (path / "zarr.json").is_file():
        raise RelabelNotFoundError(f"{path}: no relabel run here; the coordinator creates it.")
    return RelabelRun(Path(store_path), name, zarr.open_group(path, mode="r+", zarr_format=3))


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
        """Write the tails; return the sizes to commit.

        Arrays may stay longer than the committed sizes (they grow geometrically);
        readers never look past the committed sizes, and the next append overwrites
        those rows, so shrinking them would only cost metadata writes.
        """
        self._write({name: column.flush() for name, column in self._columns.items()})
        return self._n_steps, self._n_episodes

    def _write(self, writes: dict[str, list[tuple[int, np.ndarray]]]) -> None:
        jobs = []
        for name, blocks in writes.items():
            if not blocks:
                continue
            array = self._columns[name].array
            end = blocks[-1][0] + blocks[-1][1].shape[0]
            if array.shape[0] < end:
                # Grow geometrically: each resize rewrites the array's metadata file.
                array.resize((max(end, 2 * array.shape[0]), *array.shape[1:]))
            jobs += [(array, lo, block) for lo, block in blocks]
        if jobs:
            # One round trip to zarr's event loop for every block of every column, so
            # the columns are encoded and written concurrently.
            zarr_sync(_write_blocks(jobs))


async def _write_blocks(jobs: list[tuple[zarr.Array, int, np.ndarray]]) -> None:
    await asyncio.gather(
        *(
            array._async_array.setitem(slice(lo, lo + block.shape[0]), block)
            for array, lo, block in jobs
        )
    )


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
