"""Batch samplers over an episode table, feeding the ssorl kernels.

`StepSampler` draws global steps (with replacement) from a step set: all
steps, the steps of some episodes, or a boolean step mask; uniformly, or in
proportion to per-step weights. Its generator state round-trips through
`state_dict()`/`load_state_dict()`, so a resumed run draws the same steps.
It is the one place that draws steps, for the kernels and for `ssorl_train`.

The windowed samplers own preallocated output buffers and refill them on
every call, so a training loop allocates nothing per batch. **The tensors a
windowed sampler returns are overwritten by its next `sample()` call**: clone
them to keep them.

Arrays follow the store's layout (DESIGN.md): observations [N + E, *obs_shape]
float32 or uint8 (image frames stay uint8; only the batch is normalised to
float32), per-step arrays [N, ...], episode table `step_start`/`lengths` [E]
int64. NumPy arrays (memory-maps included) are wrapped without copying. Batches
are flattened: windows [B, k+2, D] and states [B, K, D] with D = prod(obs_shape),
normalised by per-dimension mean/std [D].
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ssorl_data import ops
from ssorl_data.episode_index import EpisodeIndex
from ssorl_data.errors import KernelInputError
from ssorl_data.kernels.spec import OBSERVATION_DTYPES

ArrayLike = Tensor | np.ndarray

__all__ = [
    "IdmBatch",
    "IdmWindowSampler",
    "StepSampler",
    "SubtrajectoryBatch",
    "SubtrajectorySampler",
]


def _tensor(x: ArrayLike, dtype: torch.dtype, name: str) -> Tensor:
    """A contiguous CPU tensor of `dtype` sharing memory with `x` when it already fits."""
    t = torch.as_tensor(x)
    if t.dtype != dtype:
        raise KernelInputError(f"Expected {name} of dtype {dtype}. Got {t.dtype} instead.")
    return t.contiguous()


def _observations(x: ArrayLike) -> tuple[Tensor, int]:
    """(observations as a tensor sharing memory, D): float32 or uint8 rows of any shape."""
    t = torch.as_tensor(x)
    if t.dtype not in OBSERVATION_DTYPES or t.dim() < 2:
        raise KernelInputError(
            f"Expected observations [rows, *obs_shape] of dtype "
            f"{' or '.join(map(str, OBSERVATION_DTYPES))}. Got {t.dtype} of shape "
            f"{tuple(t.shape)} instead."
        )
    return t.contiguous(), math.prod(t.shape[1:])


def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    if generator is not None:
        return generator
    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        g.manual_seed(seed)
    return g


def _candidates(keep: Tensor, block: int = 1 << 22) -> Tensor:
    """The indices of `keep`'s true entries, int32 where they fit, found block by block:
    `torch.nonzero` of the whole mask would hold an int64 index per candidate on top."""
    dtype = torch.int32 if keep.shape[0] < 2**31 else torch.int64
    out = torch.empty(int(keep.sum()), dtype=dtype)
    filled = 0
    for lo in range(0, keep.shape[0], block):
        found = torch.nonzero(keep[lo : lo + block]).flatten()
        out[filled : filled + found.shape[0]] = found + lo
        filled += found.shape[0]
    return out


class StepSampler:
    """Random global steps (and their episodes) from a step set, with replacement.

    Uniform over the set, or with `weights` in proportion to a per-step weight
    (drawn through a float64 CDF, since `torch.multinomial` caps categories at 2^24).
    """

    def __init__(
        self,
        step_start: ArrayLike,
        lengths: ArrayLike,
        *,
        episodes: ArrayLike | None = None,
        step_mask: ArrayLike | None = None,
        weights: ArrayLike | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        """Sample from all steps, or only those of `episodes` (indices) and/or where `step_mask`.

        `weights` [N] (finite, >= 0) makes a step's chance proportional to its
        weight; zero-weight steps are never drawn.
        """
        self.step_start = _tensor(step_start, torch.int64, "step_start")
        self.lengths = _tensor(lengths, torch.int64, "lengths")
        n_episodes = self.step_start.shape[0]
        if self.lengths.shape != (n_episodes,) or bool((self.lengths < 1).any()):
            raise KernelInputError(
                f"Expected lengths of shape ({n_episodes},) with every length >= 1. Got shape "
                f"{tuple(self.lengths.shape)} instead."
            )
        # The same arrays, as NumPy views, for the index arithmetic.
        self.index = EpisodeIndex(self.step_start.numpy(), self.lengths.numpy())
        n_steps = int(self.lengths.sum())
        keep: Tensor | None = None
        if episodes is not None:
            chosen = torch.as_tensor(episodes, dtype=torch.int64)
            if chosen.numel() and (int(chosen.min()) < 0 or int(chosen.max()) >= n_episodes):
                raise KernelInputError(
                    f"Expected episodes in [0, {n_episodes}). Got values from "
                    f"{int(chosen.min())} to {int(chosen.max())} instead."
                )
            in_set = torch.zeros(n_episodes, dtype=torch.bool)
            in_set[chosen] = True
            keep = torch.repeat_interleave(in_set, self.lengths)
        if step_mask is not None:
            mask = torch.as_tensor(step_mask)
            if mask.dtype != torch.bool or mask.shape != (n_steps,):
                raise KernelInputError(
                    f"Expected step_mask of dtype torch.bool and shape ({n_steps},). Got "
                    f"{mask.dtype} of shape {tuple(mask.shape)} instead."
                )
            keep = mask if keep is None else keep & mask
        weight: Tensor | None = None
        if weights is not None:
            weight = torch.as_tensor(weights).double()
            if weight.shape != (n_steps,) or not bool(torch.isfinite(weight).all()):
                raise KernelInputError(
                    f"Expected finite weights of shape ({n_steps},). Got shape "
                    f"{tuple(weight.shape)} with {int((~torch.isfinite(weight)).sum())} "
                    "non-finite values instead."
                )
            if bool((weight < 0).any()):
                raise KernelInputError(
                    f"Expected weights >= 0. Got a minimum of {float(weight.min())!r} instead."
                )
            keep = weight > 0 if keep is None else keep & (weight > 0)
        # None means every step: sampling then needs no lookup table (and draws the same
        # values as a table of all steps would). Candidates are int32 where they fit: at
        # 100M steps the table is the sampler's largest array (4 bytes a step). Weighted
        # draws always keep the table: they go through the CDF of its steps.
        if keep is not None and weight is None and bool(keep.all()):
            keep = None
        self.steps: Tensor | None = None if keep is None else _candidates(keep)
        self.n_candidates = n_steps if self.steps is None else int(self.steps.numel())
        if self.n_candidates == 0:
            raise KernelInputError(
                "Expected a non-empty step set. Got no step with a positive weight in the given "
                "episodes/step_mask; check the split, mask or weights you sample from."
            )
        # [n_candidates] float64 cumulative weights of self.steps; None: uniform.
        self.cdf: Tensor | None = None
        if weight is not None:
            self.cdf = torch.cumsum(weight[self.steps], 0)
        self._uniform = torch.empty(0, dtype=torch.float64)  # scratch of weighted draws
        self.generator = _generator(seed, generator)

    def sample_into(self, episode_index: Tensor, step_index: Tensor) -> None:
        """Fill the two int64 [B] tensors with sampled episodes and global steps."""
        if self.steps is None:
            torch.randint(
                self.n_candidates, step_index.shape, generator=self.generator, out=step_index
            )
        else:
            # episode_index holds candidate positions until the last line overwrites it
            if self.cdf is None:
                torch.randint(
                    self.n_candidates, episode_index.shape, generator=self.generator,
                    out=episode_index,
                )  # fmt: skip
            else:
                u = self._uniform.resize_(episode_index.shape)  # reallocates only to grow
                torch.rand(u.shape, generator=self.generator, dtype=torch.float64, out=u)
                u.mul_(self.cdf[-1])
                torch.searchsorted(self.cdf, u, right=True, out=episode_index)
                episode_index.clamp_(max=self.n_candidates - 1)  # u * total may round up
            step_index.copy_(self.steps.index_select(0, episode_index))
        # the episode of each step: a search over the episode starts costs B log E, where a
        # step -> episode table would cost 8 bytes for every step of the corpus
        torch.searchsorted(self.step_start, step_index, right=True, out=episode_index)
        episode_index.sub_(1)

    def sample(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """(episode_index, step_index), both new int64 [batch_size] tensors."""
        episode_index = torch.empty(batch_size, dtype=torch.int64)
        step_index = torch.empty(batch_size, dtype=torch.int64)
        self.sample_into(episode_index, step_index)
        return episode_index, step_index

    def state_dict(self) -> dict[str, Tensor]:
        """The generator's state: restoring it replays the same draws (checkpoints)."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Continue the stream from a `state_dict()`."""
        self.generator.set_state(state["generator"])


class IdmBatch(NamedTuple):
    """One IDM batch; every tensor is a buffer the sampler overwrites on its next call."""

    windows: Tensor  # [B, k + 2, D] float32: s_{t-k} .. s_t, s_{t+1}, normalised, flattened
    valid: Tensor  # [B, k + 2] bool: False where a past row was clamped to the episode start
    actions: Tensor | None  # [B, A] float32 action at s_t, when the sampler was given actions
    action_mask: Tensor | None  # [B] bool, when the sampler was given an action mask
    episode_index: Tensor  # [B] int64
    step_index: Tensor  # [B] int64 global step of s_t


class IdmWindowSampler:
    """Random IDM windows (k past states, current, next) with their actions, into reused buffers.

    For IDM training pass `step_mask=action_mask` (and the visible episodes) so
    only steps with a recorded action are drawn.
    """

    def __init__(
        self,
        observations: ArrayLike,
        step_start: ArrayLike,
        lengths: ArrayLike,
        *,
        k: int,
        batch_size: int,
        mean: ArrayLike | None = None,
        std: ArrayLike | None = None,
        actions: ArrayLike | None = None,
        action_mask: ArrayLike | None = None,
        episodes: ArrayLike | None = None,
        step_mask: ArrayLike | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        backend: str | None = None,
    ) -> None:
        """`mean`/`std` [D] normalise observations (default: none); `backend` forces one.

        `observations` [N + E, *obs_shape] float32 or uint8 stays as given (no float32
        copy of the corpus); only each batch's windows are float32.
        """
        self.steps = StepSampler(
            step_start, lengths, episodes=episodes, step_mask=step_mask, seed=seed,
            generator=generator,
        )  # fmt: skip
        self.observations, n_dim = _observations(observations)
        self.mean = torch.zeros(n_dim) if mean is None else _tensor(mean, torch.float32, "mean")
        self.std = torch.ones(n_dim) if std is None else _tensor(std, torch.float32, "std")
        self.actions = None if actions is None else _tensor(actions, torch.float32, "actions")
        self.action_mask = (
            None if action_mask is None else _tensor(action_mask, torch.bool, "action_mask")
        )
        self.k = k
        self.backend = backend
        self._episode_index = torch.empty(batch_size, dtype=torch.int64)
        self._step_index = torch.empty(batch_size, dtype=torch.int64)
        self._windows = torch.empty(batch_size, k + 2, n_dim)
        self._valid = torch.empty(batch_size, k + 2, dtype=torch.bool)
        self._actions = (
            None if self.actions is None else torch.empty(batch_size, *self.actions.shape[1:])
        )
        self._action_mask = (
            None if self.action_mask is None else torch.empty(batch_size, dtype=torch.bool)
        )

    def sample(self) -> IdmBatch:
        """Draw a batch into the sampler's buffers (overwritten by the next call)."""
        self.steps.sample_into(self._episode_index, self._step_index)
        ops.idm_windows(
            self.observations, self.steps.step_start, self.steps.lengths, self._episode_index,
            self._step_index, self.mean, self.std, self.k, self._windows, self._valid,
            backend=self.backend,
        )  # fmt: skip
        if self.actions is not None:
            torch.index_select(self.actions, 0, self._step_index, out=self._actions)
        if self.action_mask is not None:
            torch.index_select(self.action_mask, 0, self._step_index, out=self._action_mask)
        return IdmBatch(
            self._windows, self._valid, self._actions, self._action_mask, self._episode_index,
            self._step_index,
        )  # fmt: skip


class SubtrajectoryBatch(NamedTuple):
    """One sequence-model batch; every tensor is a buffer overwritten by the next call."""

    states: Tensor  # [B, K, D] float32, normalised, flattened, left-padded with zeros
    actions: Tensor  # [B, K, A] float32
    returns_to_go: Tensor  # [B, K] float32
    timesteps: Tensor  # [B, K] int64 local step index within the episode
    mask: Tensor  # [B, K] bool, True on real steps


class SubtrajectorySampler:
    """Random K-step sub-trajectories for Decision Transformer, into reused buffers.

    A start is a step drawn uniformly from the chosen episodes' steps, i.e. an
    episode weighted by its length, then a uniform start within it (restricted
    by `step_mask` and weighted by `weights` as in `StepSampler`); windows that
    run past the episode end are left-padded.
    """

    def __init__(
        self,
        observations: ArrayLike,
        actions: ArrayLike,
        step_start: ArrayLike,
        lengths: ArrayLike,
        *,
        context: int,
        batch_size: int,
        rewards: ArrayLike | None = None,
        returns_to_go: ArrayLike | None = None,
        gamma: float = 1.0,
        mean: ArrayLike | None = None,
        std: ArrayLike | None = None,
        episodes: ArrayLike | None = None,
        step_mask: ArrayLike | None = None,
        weights: ArrayLike | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        backend: str | None = None,
    ) -> None:
        """Give `returns_to_go` [N], or `rewards` [N] to compute them once with `gamma`."""
        self.steps = StepSampler(
            step_start, lengths, episodes=episodes, step_mask=step_mask, weights=weights,
            seed=seed, generator=generator,
        )  # fmt: skip
        self.observations, n_dim = _observations(observations)
        self.actions = _tensor(actions, torch.float32, "actions")
        n_act = self.actions.shape[1]
        if returns_to_go is not None:
            self.returns_to_go = _tensor(returns_to_go, torch.float32, "returns_to_go")
        elif rewards is not None:
            r = _tensor(rewards, torch.float32, "rewards")
            self.returns_to_go = torch.empty_like(r)
            ops.returns_to_go(
                r, self.steps.step_start, self.steps.lengths, gamma, self.returns_to_go,
                backend=backend,
            )  # fmt: skip
        else:
            raise KernelInputError(
                "Expected rewards or returns_to_go for SubtrajectorySampler. Got neither; pass "
                "the store's steps/rewards."
            )
        self.mean = torch.zeros(n_dim) if mean is None else _tensor(mean, torch.float32, "mean")
        self.std = torch.ones(n_dim) if std is None else _tensor(std, torch.float32, "std")
        self.context = context
        self.backend = backend
        # The last batch's episodes and local start steps (buffers, like the batch).
        self.episode_index = torch.empty(batch_size, dtype=torch.int64)
        self.start = torch.empty(batch_size, dtype=torch.int64)
        self._step_index = torch.empty(batch_size, dtype=torch.int64)
        self._batch = SubtrajectoryBatch(
            torch.empty(batch_size, context, n_dim),
            torch.empty(batch_size, context, n_act),
            torch.empty(batch_size, context),
            torch.empty(batch_size, context, dtype=torch.int64),
            torch.empty(batch_size, context, dtype=torch.bool),
        )

    def sample(self) -> SubtrajectoryBatch:
        """Draw a batch into the sampler's buffers (overwritten by the next call)."""
        self.steps.sample_into(self.episode_index, self._step_index)
        torch.index_select(self.steps.step_start, 0, self.episode_index, out=self.start)
        torch.sub(self._step_index, self.start, out=self.start)  # local start step
        ops.subtrajectories(
            self.observations, self.actions, self.returns_to_go, self.steps.step_start,
            self.steps.lengths, self.episode_index, self.start, self.mean, self.std,
            self.context, *self._batch, backend=self.backend,
        )  # fmt: skip
        return self._batch
