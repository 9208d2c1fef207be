"""EpisodeIndex: where each episode lies in the time-major arrays, in one place.

Episodes are concatenated time-major (DESIGN.md "The store"): episode e holds
the global steps [step_start[e], step_stop[e]) and, keeping T+1 observations,
the observation rows [obs_start[e], obs_stop[e]) = [step_start[e] + e,
step_stop[e] + e + 1). So global step g of episode e has observation row g + e
and its next observation g + e + 1. Every range here is half-open [start, stop).

Pure NumPy (no zarr, no torch): the store's episode table, in-memory batches,
samplers, IDM windows and the training data all do their index arithmetic here.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EpisodeIndex:
    """The start and length of every episode; derived positions are computed once, on use."""

    step_start: np.ndarray  # [E] int64, first global step of each episode
    lengths: np.ndarray  # [E] int64, steps per episode (T)

    @classmethod
    def from_lengths(cls, lengths: np.ndarray) -> EpisodeIndex:
        """Contiguous episodes from step 0: each starts where the previous one stops."""
        lengths = np.asarray(lengths, dtype=np.int64)
        step_start = np.zeros_like(lengths)
        np.cumsum(lengths[:-1], out=step_start[1:])
        return cls(step_start, lengths)

    @property
    def n_episodes(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def n_steps(self) -> int:
        """Steps covered: one past the last episode's last step (0 without episodes)."""
        return int(self.step_stop[-1]) if self.n_episodes else 0

    @functools.cached_property
    def step_stop(self) -> np.ndarray:
        """[E] int64: one past the last global step of each episode."""
        return self.step_start + self.lengths

    @functools.cached_property
    def obs_start(self) -> np.ndarray:
        """[E] int64: the observation row of each episode's first step."""
        return self.step_start + np.arange(self.n_episodes, dtype=np.int64)

    @functools.cached_property
    def obs_stop(self) -> np.ndarray:
        """[E] int64: one past each episode's final observation row (T+1 rows per episode)."""
        return self.obs_start + self.lengths + 1

    def episode_at(self, steps: np.ndarray | int) -> np.ndarray:
        """The episode holding each global step in `steps` (same shape)."""
        return np.searchsorted(self.step_stop, steps, side="right")

    def episode_at_row(self, rows: np.ndarray | int) -> np.ndarray:
        """The episode holding each observation row in `rows` (same shape)."""
        return np.searchsorted(self.obs_stop, rows, side="right")

    def episodes_covering(self, start: int, stop: int) -> tuple[int, int]:
        """Episodes [first, last) holding the steps [start, stop) (a non-empty range)."""
        return int(self.episode_at(start)), int(self.episode_at(stop - 1)) + 1

    def episode_of_step(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """[stop - start] int64: the episode of each global step in [start, stop) (default: all)."""
        stop = self.n_steps if stop is None else stop
        if stop <= start:
            return np.zeros(0, dtype=np.int64)
        first, last = self.episodes_covering(start, stop)
        counts = np.minimum(self.step_stop[first:last], stop) - np.maximum(
            self.step_start[first:last], start
        )
        return np.repeat(np.arange(first, last, dtype=np.int64), counts)

    def obs_rows(self) -> np.ndarray:
        """[N] int64: the observation row of every global step (row g + e of step g)."""
        return np.arange(self.n_steps, dtype=np.int64) + self.episode_of_step()

    def step_range(self, first: int, last: int) -> tuple[int, int]:
        """Global steps [lo, hi) of the episodes [first, last)."""
        lo = int(self.step_start[first]) if first < self.n_episodes else self.n_steps
        return lo, int(self.step_stop[last - 1]) if last > first else lo

    def obs_range(self, first: int, last: int) -> tuple[int, int]:
        """Observation rows [lo, hi) of the episodes [first, last), T+1 per episode."""
        lo, hi = self.step_range(first, last)
        return lo + first, hi + last

    def steps_of(self, episodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(episode, global step) of every step of `episodes`, episode by episode, in order."""
        episodes = np.asarray(episodes, dtype=np.int64)
        counts = self.lengths[episodes]
        episode = np.repeat(episodes, counts)
        first_of_each = np.repeat(np.cumsum(counts) - counts, counts)
        offset = np.arange(episode.shape[0], dtype=np.int64) - first_of_each
        return episode, self.step_start[episode] + offset

    def per_step(self, values: np.ndarray) -> np.ndarray:
        """[N, ...]: each episode's value repeated over its steps."""
        return np.repeat(values, self.lengths, axis=0)

    def runs(self, max_steps: int) -> Iterator[tuple[int, int]]:
        """Episodes [first, last) in order, in runs of about `max_steps` steps (at least one)."""
        first = 0
        while first < self.n_episodes:
            base = int(self.step_start[first])
            last = np.searchsorted(self.step_stop, base + max_steps, side="right")
            last = max(first + 1, int(last))
            yield first, last
            first = last
