"""Relabel-run arrays: the `relabels/<name>/` groups of a store (computing them is `relabel`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import zarr

from ssorl_data import layout
from ssorl_data.errors import RelabelExistsError, RelabelNotFoundError, StoreFormatError
from ssorl_data.metadata import committed_size
from ssorl_data.names import check_name
from ssorl_data.store.chunks import n_chunks, read_rows
from ssorl_data.store.open_checks import metadata_errors

if TYPE_CHECKING:
    from ssorl_data.store.trajectory_store import TrajectoryStore


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
        attrs, file = self.attrs, f"{self.where}/zarr.json"
        self.n_steps = committed_size(attrs, "n_steps", file)
        self.chunk_steps = committed_size(attrs, "chunk_steps", file)
        self.n_chunks = committed_size(attrs, "n_chunks", file)

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._group.attrs)

    @property
    def status(self) -> str:
        return str(self._group.attrs.get("status"))

    def done(self) -> np.ndarray:
        """[n_chunks] bool: chunks whose actions and uncertainty are written."""
        return self._done(0, self.n_chunks)

    def _done(self, start: int, stop: int) -> np.ndarray:
        """Done flags of chunks [start, stop); an absent flag file is a chunk not done yet."""
        return read_rows(self._array(layout.RELABEL_DONE), start, stop, (), self.remedy)

    def _array(self, key: str) -> zarr.Array:
        with metadata_errors(self.store_path, f"{layout.relabel_path(self.name)}/{key}"):
            return self._group[key]

    @property
    def remedy(self) -> str:
        """What to do about a damaged chunk of this run."""
        return (
            f"Relabel again: `ssorl relabel {self.store_path} --name {self.name} --overwrite` "
            "with the IDM it was made with."
        )

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
        # Every chunk is stored, even one of NaN only, so an absent done chunk is lost data.
        act, unc = (
            self._array(key).with_config({"write_empty_chunks": True})
            for key in (layout.RELABEL_ACTIONS, layout.RELABEL_UNCERTAINTY)
        )
        expected = ((stop - start, *act.shape[1:]), (stop - start,))
        if actions.shape != expected[0] or uncertainty.shape != expected[1]:
            raise ValueError(
                f"{self.where}: chunk {index} expects actions {expected[0]} and uncertainty "
                f"{expected[1]}. Got {actions.shape} and {uncertainty.shape} instead."
            )
        act[start:stop] = actions
        unc[start:stop] = uncertainty
        self._group[layout.RELABEL_DONE][index] = True

    def read(self, key: Literal["actions", "uncertainty"], start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of `actions` or `uncertainty` (NaN in chunks not yet written)."""
        if key not in (layout.RELABEL_ACTIONS, layout.RELABEL_UNCERTAINTY):
            raise KeyError(f"Expected 'actions' or 'uncertainty'. Got {key!r} instead.")
        if not 0 <= start <= stop <= self.n_steps:
            raise IndexError(f"{self.where}: rows [{start}, {stop}) outside [0, {self.n_steps}).")
        array = self._array(key)
        for name, held, size in ((key, array.shape[0], self.n_steps),
                                 (layout.RELABEL_DONE, self._array(layout.RELABEL_DONE).shape[0],
                                  self.n_chunks)):  # fmt: skip
            if held < size:  # an edited zarr.json: the run's rows or flags would not fit
                raise StoreFormatError(
                    f"{self.where}/{name}/zarr.json: holds {held} rows, but the run commits "
                    f"{size}; the file was edited. Relabel again with --overwrite."
                )
        first = start // int(array.chunks[0])
        done = self._done(first, min(n_chunks(array, stop), self.n_chunks))
        required = set((first + np.flatnonzero(done)).tolist())
        return read_rows(array, start, stop, required, self.remedy)

    def array_info(self, key: str) -> tuple[tuple[int, ...], tuple[int, ...], np.dtype]:
        """(shape, chunk shape, dtype) of array `key`; for verify."""
        array = self._array(key)
        return tuple(array.shape), tuple(array.chunks), np.dtype(array.dtype)

    @property
    def where(self) -> str:
        return f"{self.store_path}/{layout.relabel_path(self.name)}"


def create_relabel(
    store: TrajectoryStore, name: str, provenance: dict[str, Any], *, overwrite: bool = False
) -> RelabelRun:
    """Create the empty, `partial` relabel run `name` over the committed steps."""
    store._require_writer("create a relabel run")
    check_name(name, "relabel run")
    path = layout.relabel_path(name)
    store._make_room(path, overwrite, RelabelExistsError, "relabel run", "ssorl relabel")
    n, c = store.n_steps, store.chunk_steps
    n_chunks = -(-n // c)
    attrs = {
        **provenance,
        "n_steps": n,
        "chunk_steps": c,
        "n_chunks": n_chunks,
        "status": layout.STATUS_PARTIAL,
    }
    group = store._group.require_group(layout.RELABELS).create_group(name, attributes=attrs)
    compressors = store._group[layout.ACTIONS].compressors
    act_shape = tuple(store.action_space.shape)
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
    return RelabelRun(store.path, name, group)


def extend_relabel(store: TrajectoryStore, name: str) -> RelabelRun:
    """Grow run `name` over the steps appended since it was made; returns it `partial`.

    The chunk that held the old end is flagged not done when it was cut short, so it
    is computed again whole; the new chunks start unflagged; chunks already done stay
    done. Every step is safe to kill and redo: the status turns `partial` first, the
    arrays grow next, and the attributes that say what the run covers change last.
    """
    store._require_writer("extend a relabel run")
    run = relabel_run(store, name)
    n, c = store.n_steps, run.chunk_steps
    if c != store.chunk_steps or run.n_steps > n:
        raise RelabelExistsError(
            f"{run.where}: the run has {run.chunk_steps}-step chunks over {run.n_steps} steps; "
            f"the store has {store.chunk_steps}-step chunks over {n}. It cannot be extended: "
            "relabel again with overwrite=True (`ssorl relabel --overwrite`)."
        )
    group = run._group
    group.update_attributes({"status": layout.STATUS_PARTIAL})
    if run.n_steps % c and run.n_chunks:
        group[layout.RELABEL_DONE][run.n_chunks - 1] = False
    n_chunks = -(-n // c)
    act_shape = tuple(store.action_space.shape)
    group[layout.RELABEL_ACTIONS].resize((n, *act_shape))
    group[layout.RELABEL_UNCERTAINTY].resize((n,))
    group[layout.RELABEL_DONE].resize((n_chunks,))
    extension = {"from_steps": run.n_steps, "to_steps": n}
    group.update_attributes(
        {
            "n_steps": n,
            "n_chunks": n_chunks,
            "extended": [*run.attrs.get("extended", []), extension],
        }
    )
    return RelabelRun(store.path, name, group)


def relabel_run(store: TrajectoryStore, name: str) -> RelabelRun:
    """Relabel run `name` (writable only when the store is open with mode="a")."""
    check_name(name, "relabel run")
    path = layout.relabel_path(name)
    if not store._has(path):
        raise RelabelNotFoundError(
            f"{store.path}: no relabel run {name!r}; the store has "
            f"{store.list_relabels() or 'none'}. Make one with `ssorl relabel`."
        )
    return RelabelRun(store.path, name, store._node(path))


def complete_relabel(store: TrajectoryStore, name: str, metrics: dict[str, Any]) -> None:
    """Mark run `name` complete with its metrics, once every chunk is done."""
    store._require_writer("complete a relabel run")
    run = relabel_run(store, name)
    missing = np.flatnonzero(~run.done())
    if missing.size:
        raise ValueError(
            f"{store.path}/{layout.relabel_path(name)}: chunks {missing[:8].tolist()} are not "
            "written yet. Run the relabel again to finish them."
        )
    run._group.update_attributes({"metrics": metrics, "status": layout.STATUS_COMPLETE})


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
