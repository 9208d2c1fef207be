"""Checks that an env id names a registered gymnasium env whose spaces fit the data.

Import, training and evaluation call these before their first expensive step, so a
typo in `--env-id` or the env of another dataset fails at once, not after training.
"""

from __future__ import annotations

import difflib

import gymnasium as gym
import numpy as np

from ssorl_data.errors import SpaceMismatchError, UnknownEnvError
from ssorl_data.io.spaces import env_spaces

LIST_ENVS = 'python -c "import gymnasium; gymnasium.pprint_registry()"'


def check_env_id(env_id: str) -> None:
    """Raise UnknownEnvError unless gymnasium has `env_id` registered."""
    try:
        gym.spec(env_id)
    except gym.error.Error:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownEnvError(
            f"Expected a registered gymnasium env id. Got {env_id!r}, which gymnasium does "
            f"not know.{hint} List the ids with `{LIST_ENVS}` (MuJoCo envs such as "
            "'Hopper-v5' need the mujoco package)."
        ) from None


def check_env_spaces(
    env_id: str, obs_dim: int, act_dim: int, what: str = "the data"
) -> tuple[gym.spaces.Box, gym.spaces.Box]:
    """The env's (observation, action) spaces, after checking that the env exists, can be
    made, and observes and acts with `obs_dim` and `act_dim` values per step (flattened)."""
    check_env_id(env_id)
    try:
        spaces = env_spaces(env_id)
    except (gym.error.Error, ImportError, OSError) as error:
        raise UnknownEnvError(f"Env {env_id!r} is registered but cannot be made: {error}") from None
    if spaces is None:
        raise UnknownEnvError(
            f"Env {env_id!r} does not have Box observation and action spaces; only Box "
            "spaces can be trained and evaluated on."
        )
    obs_space, act_space = spaces
    env_dims = (int(np.prod(obs_space.shape)), int(np.prod(act_space.shape)))
    if env_dims != (obs_dim, act_dim):
        raise SpaceMismatchError(
            f"Expected env {env_id!r} to fit {what}: {what} has {obs_dim} observation and "
            f"{act_dim} action values per step, the env {env_dims[0]} and {env_dims[1]}. "
            "Pass the env id the data came from (--env-id)."
        )
    return obs_space, act_space
