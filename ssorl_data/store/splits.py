"""Split I/O: the `splits/<name>/` groups of a store (making a split is `ssorl_data.splits`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ssorl_data import layout
from ssorl_data.errors import SplitError, SplitExistsError, SplitNotFoundError
from ssorl_data.names import check_name

if TYPE_CHECKING:
    from ssorl_data.store.trajectory_store import TrajectoryStore


@dataclass(frozen=True)
class Split:
    """A complete split: which episodes' recorded actions training may see."""

    name: str
    visible: np.ndarray  # [E] bool over the store's current episodes (later ones: False)
    attrs: dict[str, Any]  # the protocol it was made with, `n_episodes` at creation, status


def read_split(store: TrajectoryStore, name: str) -> Split:
    """The complete split `name`; episodes appended after it was made are not visible."""
    check_name(name, "split")
    path = layout.split_path(name)
    if path not in store._group:
        raise SplitNotFoundError(
            f"{store.path}: no split {name!r}; the store has {store.list_splits() or 'none'}. "
            "Make one with `ssorl data split`."
        )
    group = store._group[path]
    attrs = dict(group.attrs)
    if attrs.get("status") != layout.STATUS_COMPLETE:
        raise SplitNotFoundError(
            f"{store.path}/{path}: the split was never finished (status "
            f"{attrs.get('status')!r}). Write it again with overwrite=True (CLI: --overwrite)."
        )
    stored = group[layout.SPLIT_VISIBLE][:]
    visible = np.zeros(store.n_episodes, dtype=bool)
    visible[: stored.shape[0]] = stored
    return Split(name, visible, attrs)


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
    store._make_room(path, overwrite, SplitExistsError, "split", "ssorl data split")
    group = store._group.require_group(layout.SPLITS).create_group(
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
    attrs = {**protocol, "n_episodes": store.n_episodes, "status": layout.STATUS_COMPLETE}
    group.update_attributes(attrs)
    return Split(name, visible.copy(), attrs)
