"""Synthetic stores for the scale benchmark, written block by block through the public API.

Episodes follow a small linear system driven by a tanh policy, so actions are
recoverable from consecutive states (an IDM has something to learn): velocities
`v' = 0.9 v + 0.1 a - 0.02 p`, positions `p' = p + 0.05 v'`, 17 observation dims (6 positions,
6 velocities, 5 slow sinusoids), 6 action dims. Each episode has a skill drawn
uniformly; its rewards are skill plus noise, so returns spread and the lowest-50%
quantile of a split holds labelled and action-free episodes alike. Every second
episode is action-free (NaN actions). Image stores render the same states as a
coloured Gaussian blob moving over a fixed textured background (uint8 frames that
compress like frames, not noise, and from which the blob's motion gives the action).

Generation holds one block of episodes (about `block_mb` of observations) at a time;
block `b` is seeded by `(seed, b)`, so a store is the same whatever the block count.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

from ssorl_data.episodes import EpisodeBatch

OBS_DIM, ACT_DIM = 17, 6
GENERATOR = "benchmarks.scale_data v1"  # recorded in the store; change it when data changes


@dataclass(frozen=True)
class StoreSpec:
    """What a synthetic store holds; equal specs give equal stores."""

    kind: str  # "lowdim" (17 float32) or "image" (uint8 frames of image_shape)
    n_steps: int
    episode_length: int = 1000
    image_shape: tuple[int, int, int] = (64, 64, 3)
    chunk_steps: int | None = None  # None: the store's default
    seed: int = 0
    block_mb: float = 64.0

    @property
    def n_episodes(self) -> int:
        return -(-self.n_steps // self.episode_length)

    def observation_space(self) -> gym.spaces.Box:
        if self.kind == "image":
            return gym.spaces.Box(0, 255, self.image_shape, np.uint8)
        return gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)

    def obs_row_bytes(self) -> int:
        space = self.observation_space()
        return int(np.prod(space.shape)) * space.dtype.itemsize

    def episodes_per_block(self) -> int:
        episode_bytes = (self.episode_length + 1) * self.obs_row_bytes()
        return max(1, int(self.block_mb * 1e6 // episode_bytes))

    def stamp(self) -> dict:
        """The store attribute that says which spec made it (`extra.bench_scale`)."""
        return {
            "generator": GENERATOR,
            "kind": self.kind,
            "n_steps": self.n_steps,
            "episode_length": self.episode_length,
            "image_shape": list(self.image_shape) if self.kind == "image" else None,
            "seed": self.seed,
        }


def lengths_of(spec: StoreSpec) -> np.ndarray:
    """Episode lengths: `episode_length` each, the last one shorter to hit n_steps exactly."""
    lengths = np.full(spec.n_episodes, spec.episode_length, np.int64)
    lengths[-1] = spec.n_steps - spec.episode_length * (spec.n_episodes - 1)
    return lengths


def _states(rng: np.random.Generator, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """States [E, T+1, 17] and actions [E, T, 6] of episodes of equal length T (the first)."""
    n, t_max = len(lengths), int(lengths.max())
    weights = rng.normal(0, 0.5, (n, 12, ACT_DIM)).astype(np.float32)
    p = rng.normal(0, 0.5, (n, 6)).astype(np.float32)
    v = np.zeros((n, 6), np.float32)
    phase = rng.uniform(0, 2 * np.pi, (n, 5)).astype(np.float32)
    states = np.empty((n, t_max + 1, OBS_DIM), np.float32)
    actions = np.empty((n, t_max, ACT_DIM), np.float32)
    noise = rng.normal(0, 0.3, (n, t_max, ACT_DIM)).astype(np.float32)
    freq = np.linspace(0.01, 0.05, 5, dtype=np.float32)
    for t in range(t_max + 1):
        states[:, t, :6], states[:, t, 6:12] = p, v
        states[:, t, 12:] = np.sin(phase + freq * t)
        if t == t_max:
            break
        a = np.tanh(np.einsum("ei,eia->ea", states[:, t, :12], weights) + noise[:, t])
        actions[:, t] = a
        v = 0.9 * v + 0.1 * a - 0.02 * p  # a spring keeps the blob in view
        p = np.clip(p + 0.05 * v, -3, 3)
    return states, actions


def _render(rng: np.random.Generator, states: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """uint8 frames [E, T+1, H, W, C]: a blob at (p0, p1) of radius from p2, over a texture."""
    h, w, c = shape
    n, rows = states.shape[:2]
    ys, xs = np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32)
    frames = np.empty((n, rows, h, w, c), np.uint8)
    for e in range(n):
        cy = (np.tanh(states[e, :, 0] / 2) + 1) / 2 * (h - 1)  # [R]
        cx = (np.tanh(states[e, :, 1] / 2) + 1) / 2 * (w - 1)
        sigma = 2.0 + 1.5 * (np.tanh(states[e, :, 2]) + 1)
        gy = np.exp(-((ys[None] - cy[:, None]) ** 2) / (2 * sigma[:, None] ** 2))  # [R, H]
        gx = np.exp(-((xs[None] - cx[:, None]) ** 2) / (2 * sigma[:, None] ** 2))  # [R, W]
        blob = gy[:, :, None] * gx[:, None, :]  # [R, H, W]
        colour = rng.uniform(120, 255, c).astype(np.float32)
        texture = (
            20 + 15 * np.sin(ys[:, None] / rng.uniform(2, 6)) * np.cos(xs[None] / rng.uniform(2, 6))
        )[:, :, None] + rng.integers(0, 4, (h, w, c))  # [H, W, C] fixed per episode
        frames[e] = np.clip(texture + blob[..., None] * colour, 0, 255).astype(np.uint8)
    return frames


def blocks(spec: StoreSpec) -> Iterator[EpisodeBatch]:
    """The store's episodes as batches of about `block_mb` of observations, in order."""
    lengths = lengths_of(spec)
    per_block = spec.episodes_per_block()
    for b, first in enumerate(range(0, spec.n_episodes, per_block)):
        rng = np.random.default_rng((spec.seed, b))
        block_lengths = lengths[first : first + per_block]
        states, actions = _states(rng, block_lengths)
        skill = rng.uniform(0, 1, len(block_lengths)).astype(np.float32)
        rewards = skill[:, None] + rng.normal(0, 0.1, actions.shape[:2]).astype(np.float32)
        free = (first + np.arange(len(block_lengths))) % 2 == 1  # every second is action-free
        actions[free] = np.nan
        obs = _render(rng, states, spec.image_shape) if spec.kind == "image" else states
        yield _concat(obs, actions, rewards, block_lengths)


def _concat(obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, lengths: np.ndarray):
    """Episodes of padded arrays [E, T(+1), ...] cut to `lengths` and laid end to end."""
    truncations = [np.zeros(t, bool) for t in lengths]
    for flags in truncations:
        flags[-1] = True
    return EpisodeBatch(
        observations=np.concatenate([o[: t + 1] for o, t in zip(obs, lengths, strict=True)]),
        actions=np.concatenate([a[:t] for a, t in zip(actions, lengths, strict=True)]),
        rewards=np.concatenate([r[:t] for r, t in zip(rewards, lengths, strict=True)]),
        terminations=np.zeros(int(lengths.sum()), bool),
        truncations=np.concatenate(truncations),
        lengths=lengths.astype(np.int64),
    )


def is_complete(path: Path, spec: StoreSpec) -> bool:
    """Whether `path` holds the whole store of `spec` (made by this generator, committed)."""
    from ssorl_data.errors import SsorlError
    from ssorl_data.store import TrajectoryStore

    if not (path / "zarr.json").exists():
        return False
    try:
        with TrajectoryStore.open(path) as store:
            return (
                store.metadata.extra.get("bench_scale") == spec.stamp()
                and store.n_steps == spec.n_steps
            )
    except (SsorlError, OSError):
        return False


def write_store(path: Path, spec: StoreSpec) -> dict:
    """Create the store of `spec` at `path`; one append transaction per block.

    Returns the seconds spent in the store's append path and in generating the data.
    """
    import time

    from ssorl_data.store import TrajectoryStore

    sizes = {} if spec.chunk_steps is None else {"chunk_steps": spec.chunk_steps}
    act_space = gym.spaces.Box(-1, 1, (ACT_DIM,), np.float32)
    append_s = generate_s = 0.0
    with TrajectoryStore.create(
        path, spec.observation_space(), act_space, extra={"bench_scale": spec.stamp()}, **sizes
    ) as store:
        source = blocks(spec)
        while True:
            start = time.perf_counter()
            batch = next(source, None)
            generate_s += time.perf_counter() - start
            if batch is None:
                break
            start = time.perf_counter()
            with store.appending("bench_scale") as appender:
                appender.add(batch)
            append_s += time.perf_counter() - start
            del batch
    return {"seconds": append_s, "generate_seconds": generate_s}
