"""Checked reads: every chunk a read needs must be stored, and stored whole.

Zarr reads an absent chunk as the array's fill value, and Blosc decodes a cut-short
chunk into garbage without an error, so a plain read notices neither a deleted nor a
truncated file. Every read of the store goes through `read_rows`: it looks at the
file of each chunk the read touches (one stat, and for Blosc a 16-byte header read,
per chunk, never per row), reads, and turns a decoding error into
`CorruptChunkError` naming the chunk. `chunk_problems` makes the same checks for
`verify`, decoding every chunk, and lists what it finds instead of raising.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import zarr
from tqdm.auto import tqdm
from zarr.codecs import BloscCodec

from ssorl_data import layout
from ssorl_data.errors import CorruptChunkError, MissingChunkError, SsorlError

if TYPE_CHECKING:
    from ssorl_data.store.trajectory_store import TrajectoryStore

# The Blosc 1 frame header: version, versionlz, flags, typesize, then the uncompressed
# size, the block size and the compressed size of the whole frame (header included).
_BLOSC_HEADER = struct.Struct("<BBBBIII")

STORE_REMEDY = (
    "Restore the store from a backup, or import its source again into a new store "
    "(`ssorl data import SOURCE NEW_STORE`)."
)


def n_chunks(array: zarr.Array, stop: int) -> int:
    """Chunks along the rows that hold rows [0, stop)."""
    return -(-stop // int(array.chunks[0]))


def read_rows(
    array: zarr.Array, start: int, stop: int, required: Collection[int], remedy: str
) -> np.ndarray:
    """Rows [start, stop) of `array`, refusing absent chunks among `required` and damaged ones.

    `required` holds the indices of the chunks that must be stored (those inside the
    committed sizes); other chunks may be absent and read as the fill value.
    """
    if start >= stop:
        return array[start:stop]
    rows = int(array.chunks[0])
    for index in range(start // rows, n_chunks(array, stop)):
        problem = _file_problem(array, index, index in required)
        if problem is not None:
            error = MissingChunkError if problem == _MISSING else CorruptChunkError
            raise error(describe(array, index, problem, remedy, stop))
    try:
        return array[start:stop]
    except Exception as error:
        for index in range(start // rows, n_chunks(array, stop)):
            problem = _decode_problem(array, index)
            if problem is not None:
                raise CorruptChunkError(describe(array, index, problem, remedy, stop)) from error
        raise


def chunk_problems(
    array: zarr.Array, indices: Iterable[int], required: bool, remedy: str, size: int
) -> list[str]:
    """One line per chunk among `indices` that is cut short or does not decode, or is
    absent when `required`; each stored chunk is decoded. `size`: the committed rows."""
    problems = []
    for index in indices:
        problem = _file_problem(array, index, required)
        if problem is None and _chunk_file(array, index).is_file():
            problem = _decode_problem(array, index)
        if problem is not None:
            problems.append(describe(array, index, problem, remedy, size))
    return problems


def store_chunk_problems(store: TrajectoryStore, progress: bool = False) -> list[str]:
    """`chunk_problems` of every array inside the committed sizes: the store's arrays, the
    `visible` of every complete split, and the chunks of relabel runs flagged done."""
    from ssorl_data.store.splits import split_remedy, written_chunks  # splits imports this

    every = store.metadata.every_chunk_written
    n, e = store.n_steps, store.n_episodes
    rows = {layout.OBSERVATIONS: n + e}
    rows |= {name: n for name in layout.STEP_ARRAYS}
    rows |= {name: e for name in layout.EPISODE_ARRAYS}
    jobs = [
        (array, range(n_chunks(array, size)), every, STORE_REMEDY, size)
        for array, size in ((store._array(name), size) for name, size in rows.items())
    ]
    problems: list[str] = []
    for name in store.list_splits():
        path = layout.split_path(name)
        attrs = dict(store._node(path).attrs)
        if attrs.get("status") != layout.STATUS_COMPLETE:
            continue  # verify reports it as never finished
        array = store._node(f"{path}/{layout.SPLIT_VISIBLE}")
        written = written_chunks(store, array, attrs)
        jobs.append((array, written, True, split_remedy(store, name), array.shape[0]))
    for name in store.list_relabels():
        try:
            run = store.relabel_run(name)
            flags = run._array(layout.RELABEL_DONE)
            problems += chunk_problems(flags, range(run.n_chunks), False, run.remedy, run.n_chunks)
            done = np.flatnonzero(run.done()).tolist()
        except SsorlError as error:
            problems.append(str(error))
            continue
        for key in (layout.RELABEL_ACTIONS, layout.RELABEL_UNCERTAINTY):
            jobs.append((run._array(key), done, True, run.remedy, run.n_steps))
    total = sum(len(job[1]) for job in jobs)
    with tqdm(total=total, unit="chunk", desc="chunks", disable=not progress) as bar:
        for array, indices, required, remedy, size in jobs:
            problems += chunk_problems(array, indices, required, remedy, size)
            bar.update(len(indices))
    return problems


def describe(array: zarr.Array, index: int, problem: str, remedy: str, size: int) -> str:
    """`FILE: chunk I of ARRAY (steps a-b) PROBLEM. REMEDY`, rows up to `size` only."""
    rows = int(array.chunks[0])
    lo, hi = index * rows, min((index + 1) * rows, size)
    return (
        f"{_chunk_file(array, index)}: chunk {index} of {array.path} "
        f"({_unit(array.path)} {lo}-{hi - 1}) {problem}. {remedy}"
    )


_MISSING = "is missing (zarr would read fill values in its place)"


def _file_problem(array: zarr.Array, index: int, required: bool) -> str | None:
    """What is wrong with the file of chunk `index`, judged from its size and header."""
    path = _chunk_file(array, index)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return _MISSING if required else None
    expected = math.prod(array.chunks) * np.dtype(array.dtype).itemsize
    compressors = array.compressors
    if not compressors and size != expected:
        return (
            f"does not decode: {size} bytes on disk, an uncompressed chunk has {expected} "
            "(cut short or padded)"
        )
    if len(compressors) == 1 and isinstance(compressors[0], BloscCodec):
        with path.open("rb") as file:
            header = file.read(_BLOSC_HEADER.size)
        if len(header) < _BLOSC_HEADER.size:
            return f"does not decode: {size} bytes, shorter than a Blosc header (cut short)"
        *_, nbytes, _, cbytes = _BLOSC_HEADER.unpack(header)
        if cbytes != size:
            return (
                f"does not decode: {size} bytes on disk, its Blosc header says {cbytes} "
                "(cut short or padded)"
            )
        if nbytes != expected:
            return f"does not decode: its header says {nbytes} bytes, a chunk holds {expected}"
    return None


def _decode_problem(array: zarr.Array, index: int) -> str | None:
    """Read chunk `index` alone; the decoding error, if any, as a problem."""
    rows = int(array.chunks[0])
    lo, hi = index * rows, min((index + 1) * rows, array.shape[0])
    try:
        array[lo:hi]
    except Exception as error:  # any codec's error: Blosc, Zstd, a reshape of short bytes
        return f"does not decode ({type(error).__name__}: {error})"
    return None


def _chunk_file(array: zarr.Array, index: int) -> Path:
    """The file of chunk `index` (the store is a local directory, `zarr.storage.LocalStore`)."""
    coords = (index, *([0] * (len(array.shape) - 1)))
    key = array.metadata.encode_chunk_key(coords)
    return Path(array.store.root) / array.path / key


def _unit(path: str) -> str:
    if path == layout.OBSERVATIONS:
        return "observation rows"
    if path.startswith(("episodes/", f"{layout.SPLITS}/")):
        return "episodes"
    return "steps"
