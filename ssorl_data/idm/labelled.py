"""The rows of some episodes, compacted: what IDM training holds instead of the whole store.

An IDM trains on a split's visible episodes (about 10% of a corpus), so it reads only
those: the episodes are merged into runs of adjacent ones, and each run's observation
rows and steps are copied range by range into arrays of their own, with an
`EpisodeIndex` of the compacted episodes. The layout is the store's (T+1 observation
rows per episode), so samplers and window kernels run on them unchanged, and window i
of compacted episode c is window i of store episode `episodes[c]`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssorl_data.episode_index import EpisodeIndex
from ssorl_data.store import TrajectoryStore


@dataclass(frozen=True)
class LabelledSteps:
    """Observation rows and actions of `episodes`, in the store's layout, compacted."""

    episodes: np.ndarray  # [E'] int64, sorted store episode of each compacted episode
    index: EpisodeIndex  # the compacted episodes, contiguous from step 0
    observations: np.ndarray  # [N' + E', D] in the store's dtype (float32 or uint8), flattened
    actions: np.ndarray  # [N', A] float32, flattened per step
    action_mask: np.ndarray  # [N'] bool

    def local(self, episodes: np.ndarray) -> np.ndarray:
        """The compacted index of each store episode in `episodes` (all must be held)."""
        episodes = np.asarray(episodes, dtype=np.int64)
        position = np.searchsorted(self.episodes, episodes)
        held = position < self.episodes.size
        held[held] = self.episodes[position[held]] == episodes[held]
        if not held.all():
            raise KeyError(f"Episode {int(episodes[~held][0])} is not among the rows read.")
        return position


def episode_runs(episodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique `episodes` merged into runs [first, last) of adjacent episodes."""
    episodes = np.unique(np.asarray(episodes, dtype=np.int64))
    if episodes.size == 0:
        return episodes, episodes
    breaks = np.flatnonzero(np.diff(episodes) != 1) + 1
    return episodes[np.r_[0, breaks]], episodes[np.r_[breaks - 1, episodes.size - 1]] + 1


def read_labelled(
    store: TrajectoryStore,
    episodes: np.ndarray,
    table: EpisodeIndex | None = None,
    *,
    recorded_actions: bool = True,
) -> LabelledSteps:
    """The rows of `episodes` (store indices), read run by run of adjacent episodes.

    Memory: the arrays returned plus a few chunks, whatever the store's size.
    Observations keep the store's dtype (uint8 frames stay uint8: the window kernels
    normalise them as they gather) and are flattened per row. Without
    `recorded_actions` the actions are not read (NaN, masked out): for episodes whose
    actions a split hides.
    """
    table = table or store.episode_table()
    episodes = np.unique(np.asarray(episodes, dtype=np.int64))
    first, last = episode_runs(episodes)
    step_lo, step_hi = table.step_start[first], table.step_stop[last - 1]
    obs_lo, obs_hi = step_lo + first, step_hi + last  # T+1 rows per episode (EpisodeIndex)
    index = EpisodeIndex.from_lengths(table.lengths[episodes])
    n_rows, n_steps = int((obs_hi - obs_lo).sum()), index.n_steps
    obs_dim = int(np.prod(store.observation_space.shape))
    act_dim = int(np.prod(store.action_space.shape))
    observations = np.empty((n_rows, obs_dim), store.observation_space.dtype)
    actions = np.empty((n_steps, act_dim), np.float32)
    action_mask = np.empty(n_steps, bool)
    obs_shape, act_shape = store.observation_space.shape, store.action_space.shape
    store.read_ranges("observations", obs_lo, obs_hi, observations.reshape(n_rows, *obs_shape))
    if recorded_actions:
        store.read_ranges("actions", step_lo, step_hi, actions.reshape(n_steps, *act_shape))
        store.read_ranges("action_mask", step_lo, step_hi, action_mask)
    else:
        actions.fill(np.nan)
        action_mask.fill(False)
    return LabelledSteps(episodes, index, observations, actions, action_mask)
