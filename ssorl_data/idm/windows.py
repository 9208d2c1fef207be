"""IDM windows for a contiguous range of steps, from that range's rows plus a halo.

Streaming consumers (relabel, evaluation) read one store chunk of steps at a
time. A step's window reaches k rows back (clamped to its episode's start) and
one row forward, so the rows needed for steps [start, stop) are those of the
steps themselves, up to k earlier rows of the episode already running at
`start` (the halo), and each episode's next observation. `RangeWindows` maps
that slice onto a local episode table and fills the windows with the same
kernel as training (`ops.idm_windows`), into buffers reused across ranges.
The rows may be float32 or uint8 of any observation shape ([n, 64, 64, 3] frames
stay uint8 and are read in place); only the windows are float32, flattened to
[n, k+2, D] with D = prod(obs_shape). `step_windows` builds a one-off set (validation,
pseudo labels) into new tensors instead.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ssorl_data import ops
from ssorl_data.episode_index import EpisodeIndex


class RangeWindows:
    """Builds the normalised windows [n, k+2, D] of steps [start, stop) into reused buffers."""

    def __init__(
        self, index: EpisodeIndex, k: int, mean: Tensor, std: Tensor, max_steps: int, obs_dim: int
    ) -> None:
        """`obs_dim` is D, the flattened observation size (prod(obs_shape)), like mean/std."""
        self.index = index  # the store's episode table, or any index of its episodes
        self.k = k
        self.mean, self.std = mean, std
        self._windows = torch.empty(max_steps, k + 2, obs_dim)
        self._valid = torch.empty(max_steps, k + 2, dtype=torch.bool)

    def rows(self, start: int, stop: int) -> tuple[int, int]:
        """Observation rows [lo, hi) that the windows of steps [start, stop) read."""
        first, last = self.index.episodes_covering(start, stop)
        # lo: the row of the earliest step a window reaches (k back, clamped to episode
        # `first`); hi - 1: the next observation of step stop - 1 (episode last - 1), i.e.
        # row (stop - 1) + (last - 1) + 1.
        lo = max(int(self.index.step_start[first]), start - self.k) + first
        return lo, stop + last

    def build(self, rows: np.ndarray, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """(windows [n, k+2, D], valid [n, k+2]) from `rows`, the slice `rows(start, stop)`.

        `rows` [hi - lo, *obs_shape], float32 or uint8, as read from the store (not
        converted). The tensors are views of buffers that the next call overwrites.
        """
        n = stop - start
        if n > self._windows.shape[0]:
            raise ValueError(f"Expected at most {self._windows.shape[0]} steps. Got {n}.")
        first, last = self.index.episodes_covering(start, stop)
        # Local table: episodes first..last-1 truncated to the rows read. Local step g' of
        # global step g is g - origin, so that local row g' + e' equals global row g + e - lo.
        local_start = np.maximum(self.index.step_start[first:last], start - self.k)
        local_end = np.minimum(self.index.step_stop[first:last], stop)
        origin = int(local_start[0])
        episode_index = self.index.episode_of_step(start, stop) - first
        windows, valid = self._windows[:n], self._valid[:n]
        ops.idm_windows(
            torch.from_numpy(np.ascontiguousarray(rows)),
            torch.from_numpy(local_start - origin),
            torch.from_numpy(local_end - local_start),
            torch.from_numpy(episode_index),
            torch.arange(start - origin, stop - origin, dtype=torch.int64),
            self.mean, self.std, self.k, windows, valid,
        )  # fmt: skip
        return windows, valid


def step_windows(
    observations: np.ndarray,
    index: EpisodeIndex,
    episode: np.ndarray,
    steps: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    k: int,
) -> Tensor:
    """The normalised windows of `steps` (of episodes `episode`, positions in `index`) as one
    new tensor [n, (k+2) * D], the network's input, from all of `index`'s rows in RAM."""
    n, d = steps.size, mean.size
    windows = torch.empty(n, k + 2, d)
    valid = torch.empty(n, k + 2, dtype=torch.bool)
    ops.idm_windows(
        torch.from_numpy(observations), torch.from_numpy(index.step_start),
        torch.from_numpy(index.lengths), torch.from_numpy(episode), torch.from_numpy(steps),
        torch.from_numpy(mean), torch.from_numpy(std), k, windows, valid,
    )  # fmt: skip
    return windows.flatten(1)
