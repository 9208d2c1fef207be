"""Fixtures for ssorl_train tests.

TEMPORARY: `ssorl_data.ops` (the batching kernels) is being written in another
branch. Until it is merged, a plain NumPy stand-in with the agreed signatures is
installed here when the real module cannot be imported; the lead removes it on merge.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable

import numpy as np
import pytest
import torch

import ssorl_data
from ssorl_train.dataset import TrainingData


def _returns_to_go(rewards, step_start, lengths, gamma: float, out) -> None:
    r, o = rewards.numpy(), out.numpy()
    for s, n in zip(step_start.tolist(), lengths.tolist(), strict=True):
        acc = 0.0
        for g in range(s + n - 1, s - 1, -1):
            acc = r[g] + gamma * acc
            o[g] = acc


def _subtrajectories(
    observations,
    actions,
    returns_to_go,
    step_start,
    lengths,
    episode_index,
    start,
    mean,
    std,
    context: int,
    states_out,
    actions_out,
    rtg_out,
    timesteps_out,
    mask_out,
) -> None:
    for out in (states_out, actions_out, rtg_out, timesteps_out, mask_out):
        out.zero_()
    for b, (e, s) in enumerate(zip(episode_index.tolist(), start.tolist(), strict=True)):
        n = min(context, int(lengths[e]) - s)
        g = int(step_start[e]) + s
        states_out[b, context - n :] = (observations[g + e : g + e + n] - mean) / std
        actions_out[b, context - n :] = actions[g : g + n]
        rtg_out[b, context - n :] = returns_to_go[g : g + n]
        timesteps_out[b, context - n :] = torch.arange(s, s + n)
        mask_out[b, context - n :] = True


try:
    import ssorl_data.ops  # noqa: F401  (the real kernels, once merged)
except ImportError:
    _stand_in = types.ModuleType("ssorl_data.ops")
    _stand_in.__doc__ = "TEMPORARY NumPy stand-in for ssorl_data.ops (tests only)."
    _stand_in.returns_to_go = _returns_to_go
    _stand_in.subtrajectories = _subtrajectories
    sys.modules["ssorl_data.ops"] = _stand_in
    ssorl_data.ops = _stand_in


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
