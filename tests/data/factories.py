"""Tiny episode and store factories for the data tests."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np

from ssorl_data.episodes import EpisodeBatch, concat_batches, make_episode
from ssorl_data.store import TrajectoryStore


def spaces(obs_shape=(3,), act_shape=(2,), obs_dtype=np.float32):
    if obs_dtype == np.uint8:
        obs = gym.spaces.Box(0, 255, obs_shape, dtype=np.uint8)
    else:
        obs = gym.spaces.Box(-np.inf, np.inf, obs_shape, dtype=np.float32)
    return obs, gym.spaces.Box(-1.0, 1.0, act_shape, dtype=np.float32)


def random_episode(
    rng: np.random.Generator,
    length: int,
    obs_shape=(3,),
    act_shape=(2,),
    labelling: str = "all",  # all | none | partial
    obs_dtype=np.float32,
    terminated: bool = False,
) -> EpisodeBatch:
    if obs_dtype == np.uint8:
        obs = rng.integers(0, 256, (length + 1, *obs_shape), dtype=np.uint8)
    else:
        obs = rng.standard_normal((length + 1, *obs_shape)).astype(np.float32)
    actions = rng.uniform(-1, 1, (length, *act_shape)).astype(np.float32)
    if labelling == "none":
        actions[:] = np.nan
    elif labelling == "partial":
        actions[rng.random(length) < 0.5] = np.nan
    terminations = np.zeros(length, bool)
    terminations[-1] = terminated
    return make_episode(
        obs, actions, rng.standard_normal(length).astype(np.float32), terminations, None
    )


def random_batch(rng, lengths, **kwargs) -> EpisodeBatch:
    return concat_batches([random_episode(rng, int(t), **kwargs) for t in lengths])


def make_store(path: Path, batch: EpisodeBatch | None = None, **create_kwargs) -> Path:
    """Create a store at `path` holding `batch` (closed again, lock released)."""
    obs_shape = create_kwargs.pop("obs_shape", (3,))
    act_shape = create_kwargs.pop("act_shape", (2,))
    obs_dtype = create_kwargs.pop("obs_dtype", np.float32)
    obs_space, act_space = spaces(obs_shape, act_shape, obs_dtype)
    with TrajectoryStore.create(path, obs_space, act_space, **create_kwargs) as store:
        if batch is not None:
            store.append(batch)
    return path
