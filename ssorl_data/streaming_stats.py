"""Per-dimension mean and std of arrays too large for memory, merged block by block.

`Moments` holds exact float64 moments (count, mean, M2 = the summed squared deviations
from the mean) and merges two of them with the parallel formula of Chan, Golub and
LeVeque (1979), which stays accurate where sum-of-squares formulas cancel. A block is
accumulated in row slices of about `SLICE_BYTES` of float64, so a chunk of uint8 frames
(64x64x3 is 12 KB a row) never gets a float64 copy of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssorl_data.episode_index import EpisodeIndex
from ssorl_data.store import TrajectoryStore

SLICE_BYTES = 8 << 20  # float64 temporaries per slice of a block
STD_FLOOR = 1e-6  # std of a constant dimension, so that normalising never divides by zero


@dataclass
class Moments:
    """count, mean [D] and M2 [D] (float64) of the rows seen so far, flattened per row."""

    count: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> Moments:
        return cls(0, np.zeros(dim), np.zeros(dim))

    @classmethod
    def of(cls, rows: np.ndarray) -> Moments:
        """The moments of `rows` [n, ...], accumulated slice by slice."""
        flat = rows.reshape(rows.shape[0], -1)
        moments = cls.empty(flat.shape[1])
        moments.update(flat)
        return moments

    def update(self, rows: np.ndarray) -> None:
        """Merge in the rows [n, ...] (any real dtype), in float64 slices of SLICE_BYTES."""
        flat = rows.reshape(rows.shape[0], -1)
        step = max(1, SLICE_BYTES // (8 * max(1, flat.shape[1])))
        for lo in range(0, flat.shape[0], step):
            part = flat[lo : lo + step].astype(np.float64)
            mean = part.mean(0)
            part -= mean
            np.square(part, out=part)
            self.merge(Moments(part.shape[0], mean, part.sum(0)))

    def merge(self, other: Moments) -> None:
        """Add `other`'s rows to these (Chan et al.'s pairwise update)."""
        if other.count == 0:
            return
        if self.count == 0:
            self.count, self.mean, self.m2 = other.count, other.mean.copy(), other.m2.copy()
            return
        count = self.count + other.count
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.count / count)
        self.m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / count)
        self.count = count

    def mean_std(self, floor: float = STD_FLOOR) -> tuple[np.ndarray, np.ndarray]:
        """(mean, population std floored at `floor`), float32 [D]."""
        if self.count == 0:
            raise ValueError("Expected at least one row for a mean and std. Got none.")
        std = np.sqrt(self.m2 / self.count)
        return self.mean.astype(np.float32), np.maximum(std, floor).astype(np.float32)


def observation_stats(observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std [D] of observation rows [n, ...] (std floored at 1e-6)."""
    return Moments.of(observations).mean_std()


def store_observation_stats(store: TrajectoryStore) -> tuple[np.ndarray, np.ndarray]:
    """`observation_stats` of every observation row of `store` (labelled and action-free),
    streamed one chunk at a time: memory is one chunk, whatever the store's size."""
    moments = Moments.empty(int(np.prod(store.observation_space.shape)))
    for _, rows in store.iter_rows("observations"):
        moments.update(rows)
    return moments.mean_std()


def difference_std(observations: np.ndarray, index: EpisodeIndex) -> np.ndarray:
    """Per-dimension std [D] (floored) of s_{t+1} - s_t over the episodes of `index`, whose
    rows `observations` [N + E, D] are laid out as `EpisodeIndex` says (T+1 rows each);
    computed in float32 slices of about SLICE_BYTES, so uint8 frames are never widened
    whole. What an IDM's difference input is scaled by (`IdmTrainConfig.delta`)."""
    rows, dim = observations.shape[0], int(np.prod(observations.shape[1:]))
    flat = observations.reshape(rows, dim)
    first = index.step_start + np.arange(index.n_episodes)  # each episode's first row
    pairs = np.ones(max(rows - 1, 0), bool)  # (r, r + 1) within one episode
    pairs[first[1:] - 1] = False
    moments = Moments.empty(dim)
    step = max(1, SLICE_BYTES // (4 * max(1, dim)))
    for lo in range(0, pairs.size, step):
        hi = min(lo + step, pairs.size)
        part = flat[lo + 1 : hi + 1].astype(np.float32) - flat[lo:hi].astype(np.float32)
        moments.update(part[pairs[lo:hi]])
    return moments.mean_std()[1]
