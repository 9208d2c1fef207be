"""`drop_actions`: a physical copy of a store with some episodes' actions removed.

A split is the usual way to hide actions (it keeps them recorded, so every
baseline stays possible); a copy is for handing data to someone who must not
see them, or for tools that read only the store.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from ssorl_data.store import TrajectoryStore


def drop_actions(
    store_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    episodes: np.ndarray | list[int],
) -> Path:
    """Copy the store at `store_path` to a new store at `out_path`, with the recorded
    actions of `episodes` (indices) replaced by missing ones (NaN, mask False)."""
    with TrajectoryStore.open(store_path) as source:
        drop = np.zeros(source.n_episodes, dtype=bool)
        drop[np.asarray(episodes, dtype=np.int64)] = True
        meta = source.metadata
        target = TrajectoryStore.create(
            out_path,
            meta.observation_space,
            meta.action_space,
            env_id=meta.env_id,
            chunk_steps=source.chunk_steps,
            ref_min_score=meta.ref_min_score,
            ref_max_score=meta.ref_max_score,
            extra=meta.extra,
        )
        provenance = {"source": str(Path(store_path).resolve()), "dropped": int(drop.sum())}
        with target, target.appending("drop-actions", provenance) as appender:
            first = 0
            for batch in source.iter_batches():
                stop = first + batch.n_episodes
                steps = batch.index.per_step(drop[first:stop])
                actions = np.array(batch.actions)  # a writable copy
                actions[steps] = np.nan
                appender.add(dataclasses.replace(batch, actions=actions))
                first = stop
    return Path(out_path)
