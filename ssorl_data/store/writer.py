"""The append path: the store's arrays, and the writer that streams batches into them.

`Appender` validates each batch and hands its columns to one `_ColumnWriter`
per array, which cuts them into whole, chunk-aligned blocks; the blocks due are
written concurrently, past the committed sizes, growing the arrays as needed.
Nothing here commits: `TrajectoryStore.appending` does, after `finish()`.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from ssorl_data import layout
from ssorl_data.episodes import EpisodeBatch, validate_batch
from ssorl_data.metadata import StoreMetadata

if TYPE_CHECKING:
    from ssorl_data.store.trajectory_store import TrajectoryStore

Compression = Literal["zstd", "lz4", "none"]


def create_arrays(
    group: zarr.Group,
    metadata: StoreMetadata,
    chunk_steps: int,
    compression: Compression,
    level: int,
) -> None:
    """The empty arrays of a new store: step arrays chunked by `chunk_steps` rows."""
    if compression == "none":
        compressors: Any = None
    elif compression in ("zstd", "lz4"):
        compressors = BloscCodec(cname=compression, clevel=level, shuffle="shuffle")
    else:
        raise ValueError(f"Expected compression 'zstd', 'lz4' or 'none'. Got {compression!r}.")
    obs_space, act_space = metadata.observation_space, metadata.action_space
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
            chunks=(chunk_steps, *shape),
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
        starts = {layout.OBSERVATIONS: store.n_steps + store.n_episodes}
        starts |= {name: store.n_steps for name in layout.STEP_ARRAYS}
        starts |= {name: store.n_episodes for name in layout.EPISODE_ARRAYS}
        # Store every chunk, even one of fill values only (zarr skips those by default),
        # so that an absent chunk inside the committed sizes is known to be lost.
        self._columns = {
            name: _ColumnWriter(store._array(name).with_config({"write_empty_chunks": True}), at)
            for name, at in starts.items()
        }
        self._blocks = _BlockWriter()

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
            layout.STEP_START: batch.index.step_start + self._n_steps,
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

    def close(self) -> None:
        """Stop the writer's event loop; the transaction ends with it, committed or not."""
        self._blocks.close()

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
            self._blocks.write(jobs)


class _BlockWriter:
    """Writes blocks of many arrays at once, so the columns are encoded concurrently.

    The writes are gathered on an event loop of the writer's own, run in a helper
    thread: that works whether or not the caller's thread runs a loop (a notebook
    does), and keeping the loop and its worker threads for the whole transaction
    spares starting them for every flush.
    """

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="ssorl-writer")
        self._loop = asyncio.new_event_loop()

    def write(self, jobs: list[tuple[zarr.Array, int, np.ndarray]]) -> None:
        """Write every (array, first row, block) and wait for all of them."""

        async def write_all() -> None:
            await asyncio.gather(
                *(
                    array.async_array.setitem(slice(lo, lo + block.shape[0]), block)
                    for array, lo, block in jobs
                )
            )

        self._thread.submit(self._loop.run_until_complete, write_all()).result()

    def close(self) -> None:
        def shut_down() -> None:
            self._loop.run_until_complete(self._loop.shutdown_default_executor())
            self._loop.close()

        self._thread.submit(shut_down).result()
        self._thread.shutdown()
