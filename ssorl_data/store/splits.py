"""Split I/O: the `splits/<name>/` groups of a store (making a split is `ssorl_data.splits`)."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ssorl_data import layout
from ssorl_data.errors import (
    SplitError,
    SplitExistsError,
    SplitNotFoundError,
    StoreFormatError,
)
from ssorl_data.names import check_name
from ssorl_data.store.chunks import n_chunks, read_rows

if TYPE_CHECKING:
    from ssorl_data.store.trajectory_store import TrajectoryStore


@dataclass(frozen=True)
class Split:
    """A complete split: which episodes' recorded actions training may see."""

    name: str
    visible: np.ndarray  # [E] bool over the store's current episodes (later ones: False)
    # the protocol it was made with, the committed sizes it covers (`n_episodes`, `n_steps`;
    # older splits record `n_episodes` only), `visible_sha256`, status
    attrs: dict[str, Any]


def read_split(store: TrajectoryStore, name: str) -> Split:
    """The complete split `name`; episodes appended after it was made are not visible."""
    check_name(name, "split")
    path = layout.split_path(name)
    if not store._has(path):
        raise SplitNotFoundError(
            f"{store.path}: no split {name!r}; the store has {store.list_splits() or 'none'}. "
            "Make one with `ssorl data split`."
        )
    group = store._node(path)
    attrs = dict(group.attrs)
    if attrs.get("status") != layout.STATUS_COMPLETE:
        raise SplitNotFoundError(
            f"{store.path}/{path}: the split was never finished (status "
            f"{attrs.get('status')!r}). Write it again with overwrite=True (CLI: --overwrite)."
        )
    array = store._node(f"{path}/{layout.SPLIT_VISIBLE}")
    covered = attrs.get("n_episodes")
    if isinstance(covered, int) and array.shape[0] < covered:  # an edited zarr.json
        raise StoreFormatError(
            f"{store.path}/{path}/{layout.SPLIT_VISIBLE}/zarr.json: holds {array.shape[0]} rows, "
            f"but the split covers n_episodes={covered}; the file was edited. Make the split "
            "again with --overwrite."
        )
    written = written_chunks(store, array, attrs)
    stored = read_rows(array, 0, array.shape[0], written, split_remedy(store, name))
    visible = np.zeros(store.n_episodes, dtype=bool)
    visible[: stored.shape[0]] = stored
    recorded = attrs.get("visible_sha256")
    if recorded is not None and recorded != visible_sha256(visible):
        raise StoreFormatError(
            f"{store.path}/{path}: visible does not hold the episodes the split was made with "
            "(its visible_sha256 differs, zarr.json or visible edited). Make the split again "
            "with --overwrite."
        )
    return Split(name, visible, attrs)


def split_remedy(store: TrajectoryStore, name: str) -> str:
    """What to do about a damaged chunk of split `name`."""
    return (
        f"Make the split again: `ssorl data split {store.path} --name {name} --overwrite` "
        "with the options it was made with."
    )


def written_chunks(store: TrajectoryStore, array: Any, attrs: dict[str, Any]) -> range:
    """The chunks of `visible` that must be stored: all that `write_split` wrote, in a store
    that writes every chunk. Entries added by `extend_split` were never written (they read
    as False), so an extended split requires only the chunks it had before."""
    if not store.metadata.every_chunk_written:
        return range(0)
    written = array.shape[0]
    extended = attrs.get("extended")
    if isinstance(extended, list) and extended and isinstance(extended[0], dict):
        first = extended[0].get("from_episodes")
        if isinstance(first, int) and 0 <= first <= written:
            written = first
    return range(n_chunks(array, written))


def write_split(
    store: TrajectoryStore,
    name: str,
    visible: np.ndarray,
    protocol: dict[str, Any],
    *,
    overwrite: bool = False,
) -> Split:
    """Store split `name`: `visible` [E] bool, only on episodes whose every action was recorded.

    The group is marked complete only after the array is written, so a split
    half-written by a killed process is never read.
    """
    store._require_writer("write a split")
    check_name(name, "split")
    visible = np.asarray(visible)
    if visible.dtype != np.bool_ or visible.shape != (store.n_episodes,):
        raise SplitError(
            f"{store.path}: expected split {name!r} as a bool array of shape "
            f"({store.n_episodes},). Got {visible.dtype} of shape {visible.shape} instead."
        )
    no_actions = visible & ~store.episode_table().labelled
    if no_actions.any():
        e = int(np.argmax(no_actions))
        raise SplitError(
            f"{store.path}, episode {e}: split {name!r} makes it visible, but not every step "
            "of it has a recorded action. Only labelled episodes can be visible."
        )
    path = layout.split_path(name)
    # A split left 'writing' by a killed process was never readable: replace it unasked.
    unfinished = name in store.list_splits() and split_attrs(store, name)[0].get("status") == (
        layout.STATUS_WRITING
    )
    store._make_room(path, overwrite or unfinished, SplitExistsError, "split", "ssorl data split")
    group = store._group.require_group(layout.SPLITS).create_group(
        name, attributes={"status": layout.STATUS_WRITING}
    )
    array = group.create_array(
        layout.SPLIT_VISIBLE,
        shape=visible.shape,
        chunks=(layout.DEFAULT_EPISODE_CHUNK,),
        dtype=bool,
        fill_value=False,
        config={"write_empty_chunks": True},  # an absent chunk is then lost data
    )
    array[:] = visible
    attrs = {
        **protocol,
        **_covers(store),
        "visible_sha256": visible_sha256(visible),
        "status": layout.STATUS_COMPLETE,
    }
    group.update_attributes(attrs)
    return Split(name, visible.copy(), attrs)


def visible_sha256(visible: np.ndarray) -> str:
    """The identity of a split's content: sha256 of its visible episode indices.

    Episodes appended later are not visible, so extending a split keeps its identity;
    making it again with other visible episodes changes it.
    """
    indices = np.flatnonzero(np.asarray(visible, dtype=bool)).astype("<i8")
    return hashlib.sha256(indices.tobytes()).hexdigest()


def split_attrs(store: TrajectoryStore, name: str) -> tuple[dict[str, Any], int]:
    """(attributes, stored length of `visible`) of split `name`, without reading the array.

    For `info` and `verify`, which report on splits of any status.
    """
    check_name(name, "split")
    path = layout.split_path(name)
    if path not in store._group:
        raise SplitNotFoundError(f"{store.path}: no split {name!r}.")
    group = store._group[path]
    stored = group[layout.SPLIT_VISIBLE].shape[0] if layout.SPLIT_VISIBLE in group else 0
    return dict(group.attrs), int(stored)


def extend_split(store: TrajectoryStore, name: str) -> Split:
    """Extend complete split `name` over the episodes appended since it was made, as not
    visible (action-free for training), and record the extension.

    `visible` grows first (the new entries read as False), the attributes that say
    what the split covers change last, so a process killed in between leaves the
    split as it was: still stale, and extended by running this again.
    """
    store._require_writer("extend a split")
    split = read_split(store, name)
    group = store._group[layout.split_path(name)]
    covered = int(split.attrs.get("n_episodes", group[layout.SPLIT_VISIBLE].shape[0]))
    if covered >= store.n_episodes:
        return split
    group[layout.SPLIT_VISIBLE].resize((store.n_episodes,))
    extension = {
        "from_episodes": covered,
        "to_episodes": store.n_episodes,
        "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    attrs = {
        **_covers(store),
        "visible_sha256": visible_sha256(split.visible),
        "extended": [*split.attrs.get("extended", []), extension],
    }
    group.update_attributes(attrs)
    return Split(name, split.visible, {**split.attrs, **attrs})


def _covers(store: TrajectoryStore) -> dict[str, int]:
    """The committed sizes a split made now covers."""
    return {"n_episodes": store.n_episodes, "n_steps": store.n_steps}
