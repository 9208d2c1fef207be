"""Training data: the arrays an offline RL algorithm trains on, in RAM or memory-mapped.

An algorithm never opens a store. `TrainingData` holds torch tensors in the store's
time-major layout (episodes concatenated, T+1 observations per episode), and
`select_actions` (ssorl_train.action_selection) is the pure rule that decides which action
each step trains on for a mode (full / labelled-only / semi-supervised) and uncertainty
filter. `load_training_data` reads the view into RAM, or with `cache` materialises it
once as a training cache on disk (ssorl_train.training_cache) and maps that.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssorl_data.episode_index import EpisodeIndex
from ssorl_data.streaming_stats import Moments
from ssorl_train.action_selection import (
    MODES,
    VIEW_ARGS,
    Mode,
    Selection,
    check_view_args,
    select_actions,
)
from ssorl_train.common import Normalizer
from ssorl_train.errors import (
    EmptyTrainingDataError,
    MissingRelabelError,
    TrainingDataError,
)

__all__ = [
    "MODES",
    "VIEW_ARGS",
    "Mode",
    "Selection",
    "TrainingData",
    "check_view_args",
    "load_training_data",
    "normalisation",
    "select_actions",
]
OBS_DTYPES = (np.float32, np.uint8)  # the store's observation dtypes, kept as they are


def normalisation(moments: Moments) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) float32 [D] that training normalises observations with: the population
    std from exact float64 moments, 1 where a dimension is (nearly) constant."""
    std = np.sqrt(moments.m2 / moments.count)
    return moments.mean.astype(np.float32), np.where(std < 1e-3, 1.0, std).astype(np.float32)


@dataclass(frozen=True)
class TrainingData:
    """Everything an algorithm trains on, as torch tensors (in RAM, or mapping a training
    cache's files: `torch.from_numpy` over a memmap, no copy).

    Global step g of episode e has observation row g + e and next observation g + e + 1.
    Observations keep the store's dtype and shape (uint8 frames stay uint8 [H, W, C]);
    samplers normalise the rows they gather, flattened to [B, D].
    """

    observations: torch.Tensor  # [N + E, *obs_shape] float32 or uint8, T+1 rows per episode
    actions: torch.Tensor  # [N, A] float32, finite (0 where step_mask is False)
    rewards: torch.Tensor  # [N] float32
    terminations: torch.Tensor  # [N] bool, true terminal states (not time limits)
    step_start: torch.Tensor  # [E] int64, first global step of each episode
    lengths: torch.Tensor  # [E] int64, steps per episode (T)
    obs_mean: torch.Tensor  # [D] float32 (D: flattened obs_shape), for normalising
    obs_std: torch.Tensor  # [D] float32, > 0
    action_low: torch.Tensor  # [A] float32, lower bound of the action space
    action_high: torch.Tensor  # [A] float32, upper bound of the action space
    step_mask: torch.Tensor  # [N] bool, steps usable for training
    step_weight: torch.Tensor | None  # [N] float32 sampling weights, None = uniform
    n_recorded: int  # usable steps with a recorded action
    n_proxy: int  # usable steps with a proxy action
    env_id: str | None = None  # gymnasium id to evaluate in, when known
    ref_min_score: float | None = None  # reference returns for normalised scores, when
    ref_max_score: float | None = None  # the data carries them (else D4RL's by env id)
    # What it was read from (`load_training_data`): the store's identity and committed sizes,
    # the split's and relabel run's identities; an agent's checkpoint and summary record it.
    source: dict[str, Any] | None = None

    @property
    def n_steps(self) -> int:
        return int(self.actions.shape[0])

    @property
    def n_episodes(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def obs_dim(self) -> int:
        """Size of a flattened observation: what a network takes."""
        return int(np.prod(self.observations.shape[1:]))

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    def normalizer(self) -> Normalizer:
        """The data's observation and action normalisation, on the CPU."""
        return Normalizer(self.obs_mean, self.obs_std, self.action_low, self.action_high)

    @classmethod
    def from_arrays(
        cls,
        observations: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminations: np.ndarray,
        lengths: np.ndarray,
        *,
        step_mask: np.ndarray | None = None,
        step_weight: np.ndarray | None = None,
        action_low: np.ndarray | None = None,
        action_high: np.ndarray | None = None,
        n_recorded: int | None = None,
        n_proxy: int = 0,
        env_id: str | None = None,
        ref_min_score: float | None = None,
        ref_max_score: float | None = None,
        source: dict[str, Any] | None = None,
    ) -> TrainingData:
        """Check and copy NumPy arrays into tensors; normalisation statistics come from them
        (`normalisation` of their exact moments, as the training cache computes them).

        Without a step mask every step is usable and counted as recorded; without
        action bounds the usable actions' range is taken.
        """
        lengths = np.asarray(lengths, dtype=np.int64)
        n_steps, n_episodes = int(lengths.sum()), lengths.shape[0]
        observations = np.asarray(observations)
        if observations.dtype not in OBS_DTYPES:
            observations = observations.astype(np.float32)
        actions = np.asarray(actions, dtype=np.float32)
        if n_episodes == 0 or (lengths < 1).any():
            raise TrainingDataError(
                f"Expected at least one episode, each of length >= 1. Got lengths {lengths!r}."
            )
        expected = {
            "observations": (n_steps + n_episodes, *observations.shape[1:]),
            "actions": (n_steps, actions.shape[-1]),
            "rewards": (n_steps,),
            "terminations": (n_steps,),
        }
        got = {
            "observations": observations.shape,
            "actions": actions.shape,
            "rewards": np.shape(rewards),
            "terminations": np.shape(terminations),
        }
        if step_mask is not None:
            expected["step_mask"], got["step_mask"] = (n_steps,), np.shape(step_mask)
        if step_weight is not None:
            expected["step_weight"], got["step_weight"] = (n_steps,), np.shape(step_weight)
        for name, shape in expected.items():
            if tuple(got[name]) != shape:
                raise TrainingDataError(
                    f"Expected {name} of shape {shape!r} for {n_episodes} episodes of "
                    f"{n_steps} steps in all (T+1 observations each). Got {tuple(got[name])!r}."
                )
        mask = np.ones(n_steps, bool) if step_mask is None else np.asarray(step_mask, bool)
        if not mask.any():
            raise EmptyTrainingDataError("Expected at least one usable step. Got none.")
        if not np.isfinite(actions[mask]).all() or not np.isfinite(observations).all():
            raise TrainingDataError(
                "Expected finite observations and finite actions on usable steps. Got NaN or "
                "inf: mask unusable steps out with step_mask (select_actions does this)."
            )
        actions = np.where(mask[:, None], actions, 0.0).astype(np.float32)
        low = actions[mask].min(0) if action_low is None else np.asarray(action_low, np.float32)
        high = actions[mask].max(0) if action_high is None else np.asarray(action_high, np.float32)
        if not (high > low).all():
            raise TrainingDataError(
                f"Expected action_high > action_low in every dimension. Got low {low!r} and "
                f"high {high!r}: pass the action space's bounds."
            )
        mean, std = normalisation(Moments.of(observations))
        step_start = EpisodeIndex.from_lengths(lengths).step_start
        return cls(
            observations=torch.from_numpy(observations.copy()),
            actions=torch.from_numpy(actions),
            rewards=torch.as_tensor(np.asarray(rewards, np.float32).copy()),
            terminations=torch.as_tensor(np.asarray(terminations, bool).copy()),
            step_start=torch.from_numpy(step_start),
            lengths=torch.from_numpy(lengths.copy()),
            obs_mean=torch.from_numpy(mean),
            obs_std=torch.from_numpy(std),
            action_low=torch.as_tensor(low, dtype=torch.float32),
            action_high=torch.as_tensor(high, dtype=torch.float32),
            step_mask=torch.from_numpy(mask.copy()),
            step_weight=None
            if step_weight is None
            else torch.as_tensor(np.asarray(step_weight, np.float32).copy()),
            n_recorded=int(mask.sum()) - n_proxy if n_recorded is None else n_recorded,
            n_proxy=n_proxy,
            env_id=env_id,
            ref_min_score=ref_min_score,
            ref_max_score=ref_max_score,
            source=source,
        )

    @classmethod
    def from_selection(
        cls,
        observations: np.ndarray,
        rewards: np.ndarray,
        terminations: np.ndarray,
        lengths: np.ndarray,
        selection: Selection,
        *,
        action_low: np.ndarray | None = None,
        action_high: np.ndarray | None = None,
        env_id: str | None = None,
        ref_min_score: float | None = None,
        ref_max_score: float | None = None,
        source: dict[str, Any] | None = None,
    ) -> TrainingData:
        """`from_arrays` with the actions, mask, weights and counts of `select_actions`."""
        return cls.from_arrays(
            observations,
            selection.actions,
            rewards,
            terminations,
            lengths,
            step_mask=selection.step_mask,
            step_weight=selection.step_weight,
            n_recorded=selection.n_recorded,
            n_proxy=selection.n_proxy,
            action_low=action_low,
            action_high=action_high,
            env_id=env_id,
            ref_min_score=ref_min_score,
            ref_max_score=ref_max_score,
            source=source,
        )


def view_data(
    arrays: dict[str, np.ndarray], info: dict[str, Any], source: dict[str, Any] | None
) -> TrainingData:
    """`TrainingData` over a streamed view's arrays (`ssorl_train.view.stream_view`, or the
    training cache's files), without copying them: memory-mapped arrays stay mapped.
    `info` holds the episode table, statistics, action bounds, counts and env fields."""
    low, high = (np.asarray(info[k], np.float32) for k in ("action_low", "action_high"))
    if not (high > low).all():
        raise TrainingDataError(
            f"Expected action_high > action_low in every dimension. Got low {low!r} and "
            f"high {high!r}: pass the action space's bounds."
        )
    weight = arrays.get("step_weight")
    return TrainingData(
        observations=torch.from_numpy(arrays["observations"]),
        actions=torch.from_numpy(arrays["actions"]),
        rewards=torch.from_numpy(arrays["rewards"]),
        terminations=torch.from_numpy(arrays["terminations"]),
        step_start=torch.from_numpy(np.asarray(info["step_start"], np.int64)),
        lengths=torch.from_numpy(np.asarray(info["lengths"], np.int64)),
        obs_mean=torch.from_numpy(np.asarray(info["obs_mean"], np.float32)),
        obs_std=torch.from_numpy(np.asarray(info["obs_std"], np.float32)),
        action_low=torch.from_numpy(low),
        action_high=torch.from_numpy(high),
        step_mask=torch.from_numpy(arrays["step_mask"]),
        step_weight=None if weight is None else torch.from_numpy(weight),
        n_recorded=int(info["n_recorded"]),
        n_proxy=int(info["n_proxy"]),
        env_id=info.get("env_id"),
        ref_min_score=info.get("ref_min_score"),
        ref_max_score=info.get("ref_max_score"),
        source=source,
    )


def load_training_data(
    store_path: str | Path,
    mode: Mode = "full",
    split: str | None = None,
    relabel: str | None = None,
    drop_uncertain: float = 0.0,
    weight_beta: float | None = None,
    cache: str | Path | None = None,
    progress: bool = False,
) -> TrainingData:
    """The dataset view: a store, an optional split and relabel run, joined by `select_actions`.

    `labelled-only` and `semi-supervised` hide the actions of the episodes a split does not
    make visible. Without a split every recorded action is visible: `labelled-only` would
    then train exactly as `full` and is refused, and so is `semi-supervised` on a store
    where every episode has its actions; on a corpus with action-free episodes it is the
    natural view (recorded actions where recorded, proxy actions elsewhere).
    `semi-supervised` also needs a relabel run, which must be complete. Stale data is
    refused (`StaleDataError`, naming the command that extends it): a split that covers
    fewer episodes than the store, unless `mode` is full (which ignores splits), and in
    semi-supervised mode a relabel run that covers fewer steps, or whose IDM was trained
    on this split before it was made again with other visible episodes.

    Without `cache` the view is read whole into RAM. With `cache` (a directory) it is
    materialised there once, streamed a few chunks at a time, and memory-mapped: reused
    while its stamp matches the store, split and relabel run, rebuilt when they change
    (see ssorl_train.training_cache); the batches are bit-identical either way.
    """
    from ssorl_data.store import TrajectoryStore
    from ssorl_train.view import read_relabel_rows, resolve_view

    check_view_args(mode, drop_uncertain, weight_beta)
    if mode == "semi-supervised" and relabel is None:
        raise MissingRelabelError(
            "Semi-supervised training needs proxy actions. Got no relabel run: pass "
            "relabel=NAME (CLI: --relabel NAME; `ssorl relabel` writes one)."
        )
    path = Path(store_path)
    if path.suffix in (".hdf5", ".h5", ".npz"):
        raise TrainingDataError(
            f"Expected an ssorl store. Got the file {str(path)!r}: import it first with "
            f"`ssorl data import {path} STORE` and train on STORE."
        )
    with TrajectoryStore.open(path) as store:
        view = resolve_view(store, mode, split, relabel, drop_uncertain, weight_beta)
        if cache is not None:
            from ssorl_train.training_cache import cached_training_data

            return cached_training_data(store, view, cache, progress)
        table = view.table
        episodes = store.read_episodes(0, store.n_episodes, table)
        proxy_actions = uncertainty = None
        if view.relabel is not None:
            proxy_actions, uncertainty = read_relabel_rows(view.relabel, 0, store.n_steps)
        selection = select_actions(
            episodes.actions,
            episodes.action_mask,
            view.visible,
            table.lengths,
            mode,
            proxy_actions=proxy_actions,
            uncertainty=uncertainty,
            drop_uncertain=drop_uncertain,
            weight_beta=weight_beta,
        )
        space = store.action_space
        return TrainingData.from_selection(
            episodes.observations,
            episodes.rewards,
            episodes.terminations,
            table.lengths,
            selection,
            action_low=space.low if np.isfinite(space.low).all() else None,
            action_high=space.high if np.isfinite(space.high).all() else None,
            env_id=store.env_id,
            ref_min_score=store.metadata.ref_min_score,
            ref_max_score=store.metadata.ref_max_score,
            source=view.source,
        )
