"""Tiny episode and store factories for the data tests."""

from __future__ import annotations

import gc
import warnings
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


# ---------------------------------------------------------------- Minari datasets
# Made with minari's own API from the real gymnasium Hopper-v5 (float64 observations).


def hopper_rollouts(n_episodes: int, max_steps: int, seed: int = 0, env: gym.Env | None = None):
    """Random-action episodes of Hopper-v5 (or `env`) as Minari EpisodeBuffers."""
    from minari.data_collector import EpisodeBuffer

    env = env or gym.make("Hopper-v5", max_episode_steps=max_steps)
    env.action_space.seed(seed)
    buffers = []
    for episode in range(n_episodes):
        obs, _ = env.reset(seed=seed + episode)
        observations, actions, rewards, terms, truncs = [obs], [], [], [], []
        while True:
            action = env.action_space.sample()
            obs, reward, terminated, truncated, _ = env.step(action)
            observations.append(obs)
            actions.append(action)
            rewards.append(reward)
            terms.append(terminated)
            truncs.append(truncated)
            if terminated or truncated:
                break
        buffers.append(
            EpisodeBuffer(
                id=episode,
                observations=np.stack(observations),
                actions=np.stack(actions),
                rewards=np.asarray(rewards),
                terminations=np.asarray(terms),
                truncations=np.asarray(truncs),
            )
        )
    env.close()
    return buffers


def collect_minari(dataset_id: str, env: gym.Env, n_episodes: int, data_format: str, seed: int = 0):
    """A dataset recorded by minari.DataCollector around `env`, random actions."""
    import minari

    collector = minari.DataCollector(env, data_format=data_format)
    collector.action_space.seed(seed)
    for episode in range(n_episodes):
        collector.reset(seed=seed + episode)
        while True:
            _, _, terminated, truncated, _ = collector.step(collector.action_space.sample())
            if terminated or truncated:
                break
    # DataCollector moves its TemporaryDirectory's files into the dataset and drops the
    # object, which then warns that it was cleaned up implicitly (a ResourceWarning);
    # close() rmtree's the next one, which warns alike. Nothing leaks: silence just that.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Implicitly cleaning up", ResourceWarning)
        dataset = collector.create_dataset(dataset_id, algorithm_name="random")
        collector.close()
        del collector  # its last TemporaryDirectory warns when collected
        gc.collect()
    return dataset


class DictHopper(gym.ObservationWrapper):
    """Hopper-v5 observing a Dict like Minari's robotics datasets; `nested` adds a sub-Dict
    with a uint8 entry, to exercise gymnasium's depth-first flatten order."""

    def __init__(self, env: gym.Env, nested: bool = False) -> None:
        super().__init__(env)
        box = env.observation_space  # float64 (11,)
        spaces_ = {
            "observation": gym.spaces.Box(box.low[2:], box.high[2:], dtype=np.float64),
            "achieved_goal": gym.spaces.Box(-np.inf, np.inf, (2,), dtype=np.float64),
            "desired_goal": gym.spaces.Box(-5.0, 5.0, (2,), dtype=np.float32),
        }
        if nested:
            spaces_["sensors"] = gym.spaces.Dict(
                {
                    "velocity": gym.spaces.Box(-np.inf, np.inf, (2, 3), dtype=np.float64),
                    "contact": gym.spaces.Box(0, 255, (2,), dtype=np.uint8),
                }
            )
        self.nested = nested
        self.observation_space = gym.spaces.Dict(spaces_)

    def observation(self, obs: np.ndarray) -> dict:
        out = {
            "observation": obs[2:],
            "achieved_goal": obs[:2],
            "desired_goal": np.array([1.5, -0.5], np.float32),
        }
        if self.nested:
            contact = (np.abs(obs[5:7]) * 100).clip(0, 255).astype(np.uint8)
            out["sensors"] = {"velocity": obs[5:11].reshape(2, 3), "contact": contact}
        return out


def write_minari_hopper(
    dataset_id: str,
    n_steps: int,
    *,
    data_format: str = "hdf5",
    episode_steps: int = 1000,
    seed: int = 0,
):
    """A Hopper-v5 Minari dataset of `n_steps` steps in `episode_steps`-step episodes, fast.

    For benchmarks (~1M steps in seconds): the values are random walks of Hopper's float64
    shapes, not rollouts, written by minari.create_dataset_from_buffers with the real env's
    spaces and spec. The dataset goes under MINARI_DATASETS_PATH.
    """
    import minari
    from minari.data_collector import EpisodeBuffer

    rng = np.random.default_rng(seed)
    buffers = []
    for episode, start in enumerate(range(0, n_steps, episode_steps)):
        length = min(episode_steps, n_steps - start)
        steps = rng.normal(0.0, 0.05, (length + 1, 11))
        observations = np.cumsum(steps, axis=0) + np.r_[1.25, np.zeros(10)]
        terminations = np.zeros(length, bool)
        terminations[-1] = episode % 2 == 1  # every other episode falls, the others time out
        buffers.append(
            EpisodeBuffer(
                id=episode,
                observations=observations,
                actions=rng.uniform(-1, 1, (length, 3)).astype(np.float32),
                rewards=rng.normal(1.0, 0.1, length),
                terminations=terminations,
                truncations=~terminations & (np.arange(length) == length - 1),
            )
        )
    return minari.create_dataset_from_buffers(
        dataset_id, buffers, env="Hopper-v5", algorithm_name="synthetic", data_format=data_format
    )


def hopper_shaped_store(
    path: Path, n_steps: int = 40, ends: tuple[int, ...] = (14, 29), chunk_steps: int | None = None
) -> Path:
    """A tiny store with Hopper-v5's spaces (random data: the point is the plumbing); episodes
    end at the steps in `ends` and at the end of the data."""
    from ssorl_data.io.flat import from_arrays
    from ssorl_data.io.importing import import_dataset

    rng = np.random.default_rng(0)
    terminals = np.zeros(n_steps, bool)
    terminals[list(ends)] = True
    arrays = {
        "observations": rng.normal(size=(n_steps, 11)).astype(np.float32),
        "next_observations": rng.normal(size=(n_steps, 11)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n_steps, 3)).astype(np.float32),
        "rewards": rng.normal(size=n_steps).astype(np.float32),
        "terminals": terminals,
        "timeouts": np.zeros(n_steps, bool),
    }
    sizes = {} if chunk_steps is None else {"chunk_steps": chunk_steps}
    import_dataset(from_arrays(arrays, env_id="Hopper-v5"), path, progress=False, **sizes)
    return path
