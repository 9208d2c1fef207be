"""Checks made when a store, or one of its groups and arrays, is opened.

The committed sizes (`n_steps`, `n_episodes` in the root `zarr.json`) say which
rows readers see. An edit that makes them disagree with what is stored (rows past
an array's end, an episode table that does not end at `n_steps`) would silently
train on fewer episodes or on rows never written, and an unparsable `zarr.json`
would surface as a JSONDecodeError deep inside zarr; so opening refuses both with
a StoreFormatError that names the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ssorl_data import layout
from ssorl_data.errors import (
    CorruptChunkError,
    MissingChunkError,
    SsorlError,
    StoreFormatError,
)
from ssorl_data.metadata import EDITED

if TYPE_CHECKING:
    from ssorl_data.store.trajectory_store import TrajectoryStore


@contextmanager
def metadata_errors(root: Path, path: str) -> Iterator[None]:
    """Turn zarr's error on an unreadable `zarr.json` at or around node `path` into a
    StoreFormatError naming the file (JSONDecodeError is a ValueError; zarr raises
    ValueError or TypeError on metadata it cannot parse)."""
    try:
        yield
    except SsorlError:
        raise
    except (ValueError, TypeError, KeyError) as error:
        if isinstance(error, KeyError) and not (root / path / "zarr.json").is_file():
            raise  # the node is absent (callers ask for that); a KeyError from a file that
            # exists is a missing field, e.g. a group's zarr.json edited to say "array"
        file = _unreadable_file(root, path)
        raise StoreFormatError(
            f"{file}: cannot be read as zarr metadata ({type(error).__name__}: {error}). {EDITED}"
        ) from None


def check_committed_sizes(store: TrajectoryStore) -> None:
    """The arrays hold the committed rows, and the episode table ends at `n_steps`."""
    for group in {name.split("/")[0] for name in layout.STEP_ARRAYS + layout.EPISODE_ARRAYS}:
        store._node(group)  # the arrays' parent groups: their zarr.json must parse too
    n, e = store.n_steps, store.n_episodes
    file = store.path / "zarr.json"
    expected = {layout.OBSERVATIONS: n + e}
    expected |= {name: n for name in layout.STEP_ARRAYS}
    expected |= {name: e for name in layout.EPISODE_ARRAYS}
    for name, size in expected.items():
        held = store.raw_array_info(name)[0][0]
        if held < size:
            raise StoreFormatError(
                f"{file}: n_steps={n} and n_episodes={e} commit {size} rows of {name}, but "
                f"{store.path / name} holds {held}. {EDITED}"
            )
    end = 0
    if e:
        try:
            start = int(store._read(layout.STEP_START, e - 1, e)[0])
            end = start + int(store._read(layout.LENGTH, e - 1, e)[0])
        except (MissingChunkError, CorruptChunkError):
            return  # every read of the table refuses that chunk; verify reports it
    if end != n:
        raise StoreFormatError(
            f"{file}: n_episodes={e} and n_steps={n} disagree with the episode table, whose "
            f"first {e} episodes end at step {end}. {EDITED}"
        )


def _unreadable_file(root: Path, path: str) -> Path:
    """The first `zarr.json` on the way to node `path`, or of its children, that is not JSON;
    the node's own file when they all parse (then the JSON holds bad values)."""
    parts = [p for p in path.split("/") if p]
    nodes = [root.joinpath(*parts[:i]) for i in range(len(parts) + 1)]
    children = sorted(nodes[-1].glob("*/zarr.json"))
    for file in [node / "zarr.json" for node in nodes] + children:
        try:
            json.loads(file.read_bytes())
        except FileNotFoundError:
            continue
        except ValueError:
            return file
    return nodes[-1] / "zarr.json"
