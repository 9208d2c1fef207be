"""Fixtures for ssorl_train tests: small synthetic training data."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from ssorl_train.dataset import TrainingData


def make_training_data(
    episode_lengths: tuple[int, ...] = (12, 7, 15),
    obs_dim: int = 3,
    act_dim: int = 2,
    seed: int = 0,
    env_id: str | None = None,
    **kwargs,
) -> TrainingData:
    """Random episodes in the T+1 layout; rewards favour actions close to -obs[:A]."""
    rng = np.random.default_rng(seed)
    lengths = np.asarray(episode_lengths)
    n, e = int(lengths.sum()), len(lengths)
    observations = rng.normal(size=(n + e, obs_dim)).astype(np.float32)
    actions = rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32)
    episode = np.repeat(np.arange(e), lengths)
    rows = np.arange(n) + episode
    rewards = -np.square(actions + observations[rows, :act_dim]).sum(1)
    terminations = np.zeros(n, bool)
    terminations[np.cumsum(lengths) - 1] = True
    return TrainingData.from_arrays(
        observations,
        actions,
        rewards,
        terminations,
        lengths,
        action_low=-np.ones(act_dim),
        action_high=np.ones(act_dim),
        env_id=env_id,
        **kwargs,
    )


@pytest.fixture
def make_data() -> Callable[..., TrainingData]:
    """Factory of small synthetic training data (see `make_training_data`)."""
    return make_training_data


@pytest.fixture
def tiny_data() -> TrainingData:
    return make_training_data()
