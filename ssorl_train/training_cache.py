"""The training cache: a dataset view materialised once as memory-mapped .npy files.

Training on a store larger than RAM samples from these files, so the page cache, not the
process, holds the hot rows. A cache directory DIR (`ssorl train --out RUN`: RUN/cache)
holds:

    DIR/.ssorl-writer.lock  one builder at a time (an flock: a killed builder frees it)
    DIR/view/               the cache: one .npy per array and cache.json, its stamp
    DIR/view.staging/       a build in progress; a killed build leaves it, the next removes it

A build streams the store a few chunks at a time (`ssorl_train.view.stream_view`) into
view.staging/, flushes and fsyncs every array, writes cache.json last (fsynced, renamed
in whole), then renames view.staging/ to view/. cache.json stamps the store's identity and
committed sizes, the split's and relabel run's identities and the mode and filters; a
view/ is read only when its stamp matches the view asked for and every array it lists
opens with its recorded shape and dtype, and is rebuilt otherwise (after an append, a new
relabel run, a split made again, other filters). Observations keep the store's dtype.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ssorl_data.durable import fsync, write_json
from ssorl_data.store import TrajectoryStore
from ssorl_data.store.lock import DirectoryLock
from ssorl_train.dataset import TrainingData, normalisation, view_data
from ssorl_train.errors import TrainingCacheError
from ssorl_train.view import View, stream_view

CACHE_FORMAT = "ssorl training cache"
CACHE_VERSION = 1
STAMP = "cache.json"
VIEW, STAGING = "view", "view.staging"
MAPPED = ("observations", "actions", "rewards", "terminations", "step_mask", "step_weight")
INFO_KEYS = ("n_recorded", "n_proxy", "env_id", "ref_min_score", "ref_max_score")


def cached_training_data(
    store: TrajectoryStore, view: View, directory: str | Path, progress: bool = False
) -> TrainingData:
    """The view's `TrainingData` mapped from the cache in `directory`, built first when it
    is absent, half-written or stale (its stamp does not match `view`)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise TrainingCacheError(
            f"Expected a directory for the training cache. Got the file {str(directory)!r}: "
            "pass another cache directory (CLI: --cache DIR)."
        )
    key = json.loads(json.dumps(view.key()))  # as a stamp reads back
    with DirectoryLock(directory, "training cache"):
        data, why = open_cache(directory, key, view.source)
        if data is None:
            if progress:
                print(f"{directory}: building the training cache ({why})", file=sys.stderr)
            build_cache(store, view, directory, key, progress)
            data, why = open_cache(directory, key, view.source)
            if data is None:
                raise TrainingCacheError(
                    f"{directory / VIEW}: the training cache just built does not open ({why}). "
                    "Remove the directory and train again."
                )
        return data


def open_cache(
    directory: Path, key: dict[str, Any], source: dict[str, Any] | None
) -> tuple[TrainingData | None, str]:
    """(data, "") from a complete cache whose stamp holds `key`; (None, why) otherwise."""
    where = directory / VIEW
    try:
        stamp = json.loads((where / STAMP).read_text())
    except FileNotFoundError:
        return None, "none yet"
    except (OSError, ValueError) as error:
        return None, f"{STAMP} unreadable: {error}"
    if not isinstance(stamp, dict) or stamp.get("format") != CACHE_FORMAT:
        return None, f"{STAMP} is not a training cache's stamp"
    if stamp.get("version") != CACHE_VERSION:
        return None, f"made by cache version {stamp.get('version')!r}, not {CACHE_VERSION}"
    if stamp.get("key") != key:
        changed = sorted(k for k in key if key[k] != (stamp.get("key") or {}).get(k))
        return None, f"stale: {', '.join(changed) or 'key'} changed"
    arrays: dict[str, np.ndarray] = {}
    try:
        for name, (shape, dtype) in stamp["arrays"].items():
            mode = "c" if name in MAPPED else None  # copy-on-write: writable, never written
            array = np.load(where / f"{name}.npy", mmap_mode=mode, allow_pickle=False)
            if list(array.shape) != shape or array.dtype.str != dtype:
                got = f"{array.dtype.str} {list(array.shape)}"
                return None, f"{name}.npy holds {got}, not {dtype} {shape}"
            arrays[name] = array
        info = {k: stamp["info"][k] for k in INFO_KEYS}
    except (OSError, ValueError, KeyError, TypeError) as error:
        return None, f"an array does not open: {error}"
    small = {k: arrays.pop(k) for k in list(arrays) if k not in MAPPED}
    return view_data(arrays, info | small, source), ""


def build_cache(
    store: TrajectoryStore, view: View, directory: Path, key: dict[str, Any], progress: bool
) -> None:
    """Stream the view into `directory`/view.staging, stamp it, rename it into place.
    The caller holds the directory's lock."""
    staging, target = directory / STAGING, directory / VIEW
    for stale in (staging, target):  # a killed build's leftovers; a stale or torn cache
        if stale.exists():
            shutil.rmtree(stale)
    staging.mkdir()
    maps: dict[str, _NpyAppender] = {}

    def allocate(name: str, shape: tuple[int, ...], dtype: np.dtype) -> _NpyAppender:
        maps[name] = _NpyAppender(staging / f"{name}.npy", shape, dtype)
        return maps[name]

    try:
        _, streamed = stream_view(store, view, allocate, progress)
    except BaseException:
        for array in maps.values():  # the staging folder stays unstamped: never read
            array.abandon()
        raise
    mean, std = normalisation(streamed["moments"])
    space = store.action_space
    small = {
        "step_start": view.table.step_start.astype(np.int64),
        "lengths": view.table.lengths.astype(np.int64),
        "obs_mean": mean,
        "obs_std": std,
        "action_low": np.asarray(space.low if np.isfinite(space.low).all() else streamed["low"],
                                 np.float32),
        "action_high": np.asarray(space.high if np.isfinite(space.high).all()
                                  else streamed["high"], np.float32),
    }  # fmt: skip
    for name, array in small.items():
        np.save(staging / f"{name}.npy", array, allow_pickle=False)
    records = {name: [list(a.shape), a.dtype.str] for name, a in (maps | small).items()}
    for array in maps.values():
        array.close()
    maps.clear()
    for path in staging.iterdir():
        fsync(path)
    metadata = store.metadata
    info = {
        "n_recorded": streamed["n_recorded"],
        "n_proxy": streamed["n_proxy"],
        "env_id": store.env_id,
        "ref_min_score": metadata.ref_min_score,
        "ref_max_score": metadata.ref_max_score,
    }
    stamp = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "key": key, "arrays": records,
             "info": info}  # fmt: skip
    write_json(staging / STAMP, stamp, sync=True)
    os.replace(staging, target)
    fsync(directory)


class _NpyAppender:
    """A .npy file written front to back by slice assignment (`a[lo:hi] = rows`).

    The view streams its ranges in order, so plain file writes suffice; writing through a
    memory map instead would keep every written page in the builder's RSS (10 GB at 100M
    steps), where the page cache alone should hold them.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.shape, self.dtype, self.path = shape, np.dtype(dtype), path
        self.written = 0  # rows
        self._file = open(path, "wb")  # noqa: SIM115 (closed by close())
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": shape}  # fmt: skip
        np.lib.format.write_array_header_1_0(self._file, header)

    def __setitem__(self, rows: slice, values: np.ndarray) -> None:
        if rows.start != self.written or rows.step not in (None, 1):
            raise RuntimeError(
                f"{self.path}: rows written out of order (rows {rows.start}:{rows.stop} after "
                f"{self.written}); the view must stream its ranges front to back."
            )
        block = np.ascontiguousarray(values, dtype=self.dtype)
        if block.shape != (rows.stop - rows.start, *self.shape[1:]):
            raise RuntimeError(f"{self.path}: rows of shape {block.shape} for {rows}.")
        block.tofile(self._file)
        self.written = rows.stop

    def abandon(self) -> None:
        """Close the file of a build that failed before writing every row."""
        self._file.close()

    def close(self) -> None:
        if self.written != self.shape[0]:
            raise RuntimeError(f"{self.path}: {self.written} of {self.shape[0]} rows written.")
        self._file.close()
