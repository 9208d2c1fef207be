"""Episodes in memory: one episode, or many concatenated column-wise, with validation.

A batch keeps T+1 observations per episode (the Minari convention) and actions as
float32 rows that are NaN where no action was recorded, which is exactly what the
store writes; importers build batches, the store validates and appends them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ssorl_data.episode_index import EpisodeIndex
from ssorl_data.errors import EpisodeValidationError


@dataclass(frozen=True)
class EpisodeBatch:
    """Episodes concatenated time-major; see DESIGN.md "The store" for the index rules."""

    observations: np.ndarray  # [N + E, *obs_shape]
    actions: np.ndarray  # [N, *act_shape] float32, NaN rows where no action was recorded
    rewards: np.ndarray  # [N] float32
    terminations: np.ndarray  # [N] bool
    truncations: np.ndarray  # [N] bool
    lengths: np.ndarray  # [E] int64, T of each episode

    @property
    def n_steps(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def n_episodes(self) -> int:
        return int(self.lengths.shape[0])

    @functools.cached_property
    def index(self) -> EpisodeIndex:
        """Where each episode lies inside this batch (steps and observation rows from 0)."""
        return EpisodeIndex.from_lengths(self.lengths)

    @functools.cached_property
    def action_mask(self) -> np.ndarray:
        """True where an action was recorded (a fully finite row), [N] bool; computed once.

        Validation rejects rows that are neither fully finite nor fully NaN, so on a
        valid batch this is exactly "the row is not NaN".
        """
        return _finite_rows(self.actions) if self.n_steps else np.zeros(0, bool)

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of each episode, summed in float64, [E]."""
        if self.n_episodes == 0:
            return np.zeros(0, np.float64)
        return np.add.reduceat(self.rewards.astype(np.float64), self.index.step_start)

    def episode_labelled(self) -> np.ndarray:
        """True for episodes where every step has a recorded action, [E]."""
        if self.n_episodes == 0:
            return np.zeros(0, bool)
        return np.logical_and.reduceat(self.action_mask, self.index.step_start)

    def episode(self, index: int) -> EpisodeBatch:
        """Episode `index` of this batch, as a batch of one (views, no copies)."""
        start, stop = self.index.step_range(index, index + 1)
        obs_start, obs_stop = self.index.obs_range(index, index + 1)
        return EpisodeBatch(
            observations=self.observations[obs_start:obs_stop],
            actions=self.actions[start:stop],
            rewards=self.rewards[start:stop],
            terminations=self.terminations[start:stop],
            truncations=self.truncations[start:stop],
            lengths=self.lengths[index : index + 1],
        )


def make_episode(
    observations: np.ndarray,
    actions: np.ndarray | None,
    rewards: np.ndarray,
    terminations: np.ndarray | None = None,
    truncations: np.ndarray | None = None,
    *,
    action_shape: Sequence[int] | None = None,
    source: str = "episode",
) -> EpisodeBatch:
    """Build a one-episode batch from per-episode arrays, coercing dtypes where lossless enough.

    `actions=None` makes an action-free episode (needs `action_shape`). An episode
    whose last step carries neither flag is recorded as truncated, as Minari does.
    """
    rewards = _as_float32(rewards, "rewards", source)
    n_steps = rewards.shape[0]
    if actions is None:
        if action_shape is None:
            raise EpisodeValidationError(
                f"{source}: an action-free episode needs action_shape (the store's action shape)."
            )
        actions = np.full((n_steps, *action_shape), np.nan, np.float32)
    terminations = _as_flags(terminations, n_steps, "terminations", source)
    truncations = _as_flags(truncations, n_steps, "truncations", source)
    if n_steps and not (terminations[-1] or truncations[-1]):
        truncations = truncations.copy()
        truncations[-1] = True
    return EpisodeBatch(
        observations=np.asarray(observations),
        actions=_as_float32(actions, "actions", source),
        rewards=rewards,
        terminations=terminations,
        truncations=truncations,
        lengths=np.array([n_steps], np.int64),
    )


def concat_batches(batches: Sequence[EpisodeBatch]) -> EpisodeBatch:
    """Concatenate batches in order (one copy of each column)."""
    if len(batches) == 1:
        return batches[0]
    return EpisodeBatch(
        observations=np.concatenate([b.observations for b in batches]),
        actions=np.concatenate([b.actions for b in batches]),
        rewards=np.concatenate([b.rewards for b in batches]),
        terminations=np.concatenate([b.terminations for b in batches]),
        truncations=np.concatenate([b.truncations for b in batches]),
        lengths=np.concatenate([b.lengths for b in batches]),
    )


def validate_batch(
    batch: EpisodeBatch,
    obs_shape: tuple[int, ...],
    obs_dtype: np.dtype,
    act_shape: tuple[int, ...],
    source: str,
    first_episode: int = 0,
) -> None:
    """Raise EpisodeValidationError for the first broken invariant (names source and episode)."""
    problems = find_problems(batch, obs_shape, obs_dtype, act_shape, source, first_episode)
    if problems:
        raise EpisodeValidationError(problems[0])


def find_problems(
    batch: EpisodeBatch,
    obs_shape: tuple[int, ...],
    obs_dtype: np.dtype,
    act_shape: tuple[int, ...],
    source: str,
    first_episode: int = 0,
) -> list[str]:
    """Every broken per-episode invariant of the store, as messages; empty when all hold.

    `first_episode` offsets the episode numbers in messages (a batch read from the
    middle of a store).
    """
    structure = _structure_problems(batch, source)
    if structure:
        return structure
    columns = [
        (batch.observations, obs_dtype, obs_shape, "observations"),
        (batch.actions, np.dtype(np.float32), act_shape, "actions"),
        (batch.rewards, np.dtype(np.float32), (), "rewards"),
        (batch.terminations, np.dtype(bool), (), "terminations"),
        (batch.truncations, np.dtype(bool), (), "truncations"),
    ]
    problems = [
        p for a, d, s, name in columns if (p := _dtype_shape_problem(a, d, s, name, source))
    ]
    if problems:
        return problems
    index = batch.index

    def where(step: int) -> str:
        return f"{source}, episode {first_episode + int(index.episode_at(step))}"

    return _value_problems(batch, index, where) + _flag_problems(batch, index, where)


def _structure_problems(batch: EpisodeBatch, source: str) -> list[str]:
    n, e = batch.n_steps, batch.n_episodes
    if batch.lengths.dtype != np.int64 or batch.lengths.ndim != 1:
        return [f"{source}: lengths must be a 1-D int64 array. Got {batch.lengths.dtype}."]
    if e and batch.lengths.min() < 1:
        bad = int(np.argmin(batch.lengths))
        return [
            f"{source}, episode {bad}: expected at least one step. Got length "
            f"{int(batch.lengths[bad])}. Drop empty episodes before importing."
        ]
    if int(batch.lengths.sum()) != n:
        return [
            f"{source}: episode lengths sum to {int(batch.lengths.sum())} but there are {n} "
            "rewards. Every step needs one reward, action row and flag."
        ]
    for name in ("actions", "terminations", "truncations"):
        rows = getattr(batch, name).shape[0]
        if rows != n:
            return [f"{source}: expected {n} rows of {name} (one per step). Got {rows}."]
    if batch.observations.shape[0] != n + e:
        return [
            f"{source}: expected {n + e} observation rows (T+1 per episode: {n} steps, {e} "
            f"episodes). Got {batch.observations.shape[0]}. Keep the final observation of "
            "each episode."
        ]
    return []


def _dtype_shape_problem(
    array: np.ndarray, dtype: np.dtype, shape: tuple[int, ...], name: str, source: str
) -> str | None:
    if array.dtype != dtype:
        return f"{source}: expected {name} of dtype {dtype}. Got {array.dtype} instead."
    if tuple(array.shape[1:]) != tuple(shape):
        return (
            f"{source}: expected {name} rows of shape {tuple(shape)}. "
            f"Got {tuple(array.shape[1:])} instead."
        )
    return None


def _value_problems(
    batch: EpisodeBatch, index: EpisodeIndex, where: Callable[[int], str]
) -> list[str]:
    problems = []
    if batch.observations.dtype.kind == "f":
        finite_rows = _finite_rows(batch.observations)
        if not finite_rows.all():
            row = int(np.argmin(finite_rows))
            episode = int(index.episode_at_row(row))
            step = int(index.step_start[episode]) if episode < index.n_episodes else 0
            problems.append(
                f"{where(step)}: observation row {row} holds NaN or inf. "
                "Clean or drop that episode."
            )
    finite_rewards = np.isfinite(batch.rewards)
    if not finite_rewards.all():
        step = int(np.argmin(finite_rewards))
        problems.append(f"{where(step)}: reward at step {step} is NaN or inf.")
    flat = batch.actions.reshape(batch.n_steps, -1)
    suspect = np.flatnonzero(~batch.action_mask)  # missing actions, or broken ones
    rows = flat[suspect]
    nan = np.isnan(rows)
    action_checks = (
        (nan.any(1) & ~nan.all(1), "is partly NaN"),
        (np.isinf(rows).any(1), "holds inf"),
    )
    for bad, what in action_checks:
        if bad.any():
            step = int(suspect[np.argmax(bad)])
            problems.append(
                f"{where(step)}: action at step {step} {what}. A step's action must be "
                "either fully recorded (finite) or fully NaN (missing)."
            )
    return problems


def _finite_rows(array: np.ndarray) -> np.ndarray:
    """[rows] bool: every value of the row is finite.

    A row's sum is finite only if its values are (NaN and inf propagate), so one
    reduction settles almost every row; rows whose sum overflowed are rechecked.
    """
    flat = array.reshape(array.shape[0], -1)
    with np.errstate(over="ignore", invalid="ignore"):
        finite = np.isfinite(flat.sum(axis=1))
    overflowed = np.flatnonzero(~finite)
    if overflowed.size:
        finite[overflowed] = np.isfinite(flat[overflowed]).all(axis=1)
    return finite


def _flag_problems(
    batch: EpisodeBatch, index: EpisodeIndex, where: Callable[[int], str]
) -> list[str]:
    if batch.n_steps == 0:
        return []
    last = index.step_stop - 1
    flags = batch.terminations | batch.truncations
    inner = flags.copy()
    inner[last] = False
    problems = []
    if inner.any():
        step = int(np.argmax(inner))
        problems.append(
            f"{where(step)}: step {step} is marked terminated or truncated but is not the "
            "episode's last step. Split episodes at their flags."
        )
    if not flags[last].all():
        step = int(last[np.argmin(flags[last])])
        problems.append(
            f"{where(step)}: the last step is neither terminated nor truncated. "
            "Mark how the episode ended (truncated if unknown)."
        )
    return problems


def _as_float32(array: np.ndarray, name: str, source: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind not in "fiu":
        raise EpisodeValidationError(
            f"{source}: expected numeric {name}. Got dtype {array.dtype} instead."
        )
    return array.astype(np.float32, copy=False)


def _as_flags(flags: np.ndarray | None, n_steps: int, name: str, source: str) -> np.ndarray:
    if flags is None:
        return np.zeros(n_steps, bool)
    flags = np.asarray(flags)
    if flags.dtype != bool:
        if flags.dtype.kind not in "iu" or not np.isin(flags, (0, 1)).all():
            raise EpisodeValidationError(
                f"{source}: expected {name} as booleans (or 0/1). Got dtype {flags.dtype}."
            )
        flags = flags.astype(bool)
    return flags
