"""`collect`: roll out a policy in vectorised gymnasium envs and write episodes into a store.

The named collection policies (`POLICIES`: uniform random, and a noisy Hopper
controller for data of mixed quality) live here too; a policy from a file is in
`sb3_policy`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from ssorl_data.episodes import EpisodeBatch, concat_batches, make_episode
from ssorl_data.io.spaces import as_store_observation_space
from ssorl_data.reference_scores import reference_returns
from ssorl_data.store import TrajectoryStore

Policy = Callable[[np.ndarray], np.ndarray]  # [n_envs, *obs] -> [n_envs, *act]


def random_policy(action_space: gym.spaces.Box, seed: int) -> Policy:
    """Uniform random actions from the env's action space (seeded)."""
    rng = np.random.default_rng(seed)

    def act(obs: np.ndarray) -> np.ndarray:
        shape = (obs.shape[0], *action_space.shape)
        return rng.uniform(action_space.low, action_space.high, shape).astype(np.float32)

    return act


def hopper_balance_policy(action_space: gym.spaces.Box, seed: int) -> Policy:
    """PD control of Hopper's joints towards standing, mixed with uniform random actions in
    a share that grows from 0 (the first env) to 1 (the last env).

    Episodes range from falling at once to standing for long, so returns vary
    widely: a cheap stand-in for the mixed-quality data of real corpora.
    """
    rng = np.random.default_rng(seed)
    low, high = action_space.low, action_space.high

    def act(obs: np.ndarray) -> np.ndarray:
        n = obs.shape[0]
        pd = -2.0 * obs[:, 2:5] - 0.3 * obs[:, 8:11]  # joint angles and velocities
        noise_scale = np.linspace(0.0, 1.0, n)[:, None]
        noise = rng.uniform(low, high, pd.shape)
        actions = (1 - noise_scale) * pd + noise_scale * noise
        return np.clip(actions, low, high).astype(np.float32)

    return act


# the policies a config names (`ssorl run` [data] policy): name -> (action space, seed) -> Policy
POLICIES: dict[str, Callable[[gym.spaces.Box, int], Policy]] = {
    "random": random_policy,
    "hopper-balance": hopper_balance_policy,
}


def collect(
    env_id: str,
    store_path: str | os.PathLike[str],
    n_steps: int,
    policy: Policy | None = None,
    *,
    n_envs: int = 4,
    seed: int = 0,
    record_actions: bool = True,
    progress: bool = True,
    policy_description: Mapping[str, Any] | None = None,
) -> Path:
    """Collect at least `n_steps` steps of whole episodes into a new store.

    Episodes still running when the budget is reached are truncated there. The env
    id, spaces and seed are recorded in the store's attributes, and so is
    `policy_description` (JSON-able, e.g. `Sb3Policy.description`) as
    `extra.collect.policy`, so a store says which policy made it; without a policy
    it is `{"spec": "random"}`.
    """
    envs = gym.make_vec(
        env_id,
        num_envs=n_envs,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
    )
    obs_space = as_store_observation_space(envs.single_observation_space)
    act_space = envs.single_action_space
    if policy is None:
        policy, policy_description = random_policy(act_space, seed), {"spec": "random"}
    refs = reference_returns(env_id)
    store = TrajectoryStore.create(
        store_path,
        obs_space,
        act_space,
        env_id=env_id,
        ref_min_score=refs[0] if refs else None,
        ref_max_score=refs[1] if refs else None,
        extra={
            "collect": {
                "seed": seed,
                "n_envs": n_envs,
                "record_actions": record_actions,
                "policy": dict(policy_description) if policy_description else None,
            }
        },
    )
    buffers: list[dict[str, list]] = [_empty() for _ in range(n_envs)]
    done: list[EpisodeBatch] = []
    steps = 0
    obs, _ = envs.reset(seed=seed)
    with (
        store,
        store.appending(f"collect {env_id}") as appender,
        tqdm(total=n_steps, unit="step", disable=not progress, desc=f"collect {env_id}") as bar,
    ):
        while steps < n_steps:
            actions = policy(obs)
            next_obs, rewards, terms, truncs, info = envs.step(actions)
            for i in range(n_envs):
                buf = buffers[i]
                buf["obs"].append(obs[i])
                buf["act"].append(actions[i])
                buf["rew"].append(rewards[i])
                buf["term"].append(terms[i])
                buf["trunc"].append(truncs[i] or steps + n_envs >= n_steps)
                if terms[i] or buf["trunc"][-1]:
                    final = info["final_obs"][i] if terms[i] or truncs[i] else next_obs[i]
                    done.append(_episode(buf, final, obs_space.dtype, record_actions))
                    buffers[i] = _empty()
            obs = next_obs
            steps += n_envs
            bar.update(n_envs)
            if sum(b.n_steps for b in done) >= 4 * store.chunk_steps:
                appender.add(concat_batches(done))
                done = []
        if done:
            appender.add(concat_batches(done))
    envs.close()
    return Path(store_path)


def _empty() -> dict[str, list]:
    return {"obs": [], "act": [], "rew": [], "term": [], "trunc": []}


def _episode(buf: dict[str, list], final: np.ndarray, obs_dtype, record_actions: bool):
    observations = np.asarray(buf["obs"] + [final]).astype(obs_dtype)
    return make_episode(
        observations,
        np.asarray(buf["act"]) if record_actions else None,
        np.asarray(buf["rew"]),
        np.asarray(buf["term"]),
        np.asarray(buf["trunc"]),
        action_shape=np.shape(buf["act"][0]),
    )
