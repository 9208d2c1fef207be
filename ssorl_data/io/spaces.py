"""Spaces of imported data: the registered gymnasium env's when there is one, else from shapes."""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np

from ssorl_data.errors import ImportFormatError


@functools.lru_cache(maxsize=32)
def env_spaces(env_id: str | None) -> tuple[gym.spaces.Box, gym.spaces.Box] | None:
    """(observation, action) spaces of a registered env (observations as float32), or None.

    Cached: building a MuJoCo env to read its spaces costs tens of milliseconds.
    """
    if not env_id:
        return None
    try:
        gym.spec(env_id)
    except gym.error.Error:
        return None
    env = gym.make(env_id)
    try:
        obs, act = env.observation_space, env.action_space
    finally:
        env.close()
    if not isinstance(obs, gym.spaces.Box) or not isinstance(act, gym.spaces.Box):
        return None
    return as_store_observation_space(obs), gym.spaces.Box(
        act.low.astype(np.float32), act.high.astype(np.float32), dtype=np.float32
    )


def as_store_observation_space(space: gym.spaces.Box) -> gym.spaces.Box:
    """The store keeps float observations as float32 (uint8 images stay uint8)."""
    if space.dtype == np.uint8:
        return space
    return gym.spaces.Box(
        space.low.astype(np.float32), space.high.astype(np.float32), dtype=np.float32
    )


def unbounded_box(shape: tuple[int, ...], dtype: type = np.float32) -> gym.spaces.Box:
    """A Box of the given shape with no known bounds (data from an unregistered env)."""
    if dtype == np.uint8:
        return gym.spaces.Box(0, 255, shape, dtype=np.uint8)
    return gym.spaces.Box(-np.inf, np.inf, shape, dtype=np.float32)


def resolve_spaces(
    env_id: str | None,
    obs_shape: tuple[int, ...],
    obs_dtype: np.dtype,
    act_shape: tuple[int, ...] | None,
    description: str,
) -> tuple[gym.spaces.Box, gym.spaces.Box]:
    """Spaces of the env if registered (checked against the data), else unbounded boxes."""
    spaces = env_spaces(env_id)
    if spaces is not None:
        obs_space, act_space = spaces
        if tuple(obs_space.shape) != obs_shape:
            raise ImportFormatError(
                f"{description}: observations have shape {obs_shape} per step but env "
                f"{env_id!r} observes {tuple(obs_space.shape)}. Pass the right env id."
            )
        if act_shape is not None and tuple(act_space.shape) != act_shape:
            raise ImportFormatError(
                f"{description}: actions have shape {act_shape} per step but env {env_id!r} "
                f"acts with {tuple(act_space.shape)}. Pass the right env id."
            )
        return obs_space, act_space
    if act_shape is None:
        raise ImportFormatError(
            f"{description}: has no actions and no registered env id ({env_id!r}), so the "
            "action space is unknown. Pass env_id (CLI: --env-id) of a registered gymnasium env."
        )
    obs_type = np.uint8 if obs_dtype == np.uint8 else np.float32
    return unbounded_box(obs_shape, obs_type), unbounded_box(act_shape)
