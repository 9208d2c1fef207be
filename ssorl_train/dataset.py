"""Training data in RAM: the arrays an offline RL algorithm trains on.

An algorithm never opens a store. `TrainingData` holds torch tensors in the store's
time-major layout (episodes concatenated, T+1 observations per episode), and
`select_actions` is the pure rule that decides which action each step trains on
for a mode (full / labelled-only / semi-supervised) and uncertainty filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ssorl_data.episode_index import EpisodeIndex
from ssorl_data.expect import Expect, check_values
from ssorl_train.common import Normalizer
from ssorl_train.errors import (
    EmptyTrainingDataError,
    MissingRelabelError,
    MissingSplitError,
    TrainingDataError,
)

Mode = Literal["full", "labelled-only", "semi-supervised"]
MODES: tuple[str, ...] = ("full", "labelled-only", "semi-supervised")
# the uncertainty filters' arguments (`select_actions`, `load_training_data`, `ssorl train`)
VIEW_ARGS: dict[str, Expect] = {
    "drop_uncertain": Expect(float, min=0, max=1, max_open=True),
    "weight_beta": Expect(float, min=0, optional=True),
}


@dataclass(frozen=True)
class Selection:
    """Which action each step trains on, and whether and how much it counts."""

    actions: np.ndarray  # [N, A] float32, finite everywhere (0 where a step is unusable)
    step_mask: np.ndarray  # [N] bool, steps usable for training
    step_weight: np.ndarray | None  # [N] float32 sampling weight in (0, 1], or None = uniform
    n_recorded: int  # usable steps with a recorded action
    n_proxy: int  # usable steps with an IDM proxy action


def select_actions(
    recorded_actions: np.ndarray,
    action_mask: np.ndarray,
    episode_visible: np.ndarray,
    lengths: np.ndarray,
    mode: Mode,
    proxy_actions: np.ndarray | None = None,
    uncertainty: np.ndarray | None = None,
    drop_uncertain: float = 0.0,
    weight_beta: float | None = None,
) -> Selection:
    """Choose the action every step trains on.

    - ``full``: every recorded action, splits ignored (the fully labelled baseline).
    - ``labelled-only``: recorded actions of the episodes the split makes visible.
    - ``semi-supervised``: those, plus the IDM's proxy action on every other step.

    Filters touch proxy steps only: ``drop_uncertain`` drops that fraction of them
    with the highest uncertainty; ``weight_beta`` sets their sampling weight to
    ``exp(-beta * u / median(u))`` (recorded steps weigh 1), so the rule does not
    depend on the scale of the uncertainty.
    """
    recorded_actions = np.asarray(recorded_actions, dtype=np.float32)
    action_mask = np.asarray(action_mask, dtype=bool)
    n_steps = recorded_actions.shape[0]
    if action_mask.shape != (n_steps,):
        raise TrainingDataError(
            f"Expected action_mask of shape {(n_steps,)!r}. Got {action_mask.shape!r} instead."
        )
    lengths = np.asarray(lengths, dtype=np.int64)
    if int(lengths.sum()) != n_steps or np.shape(episode_visible) != lengths.shape:
        raise TrainingDataError(
            f"Expected episode lengths summing to {n_steps} and one visibility flag per "
            f"episode. Got lengths summing to {int(lengths.sum())} and "
            f"{np.shape(episode_visible)[0]} flags for {lengths.shape[0]} episodes instead."
        )
    check_view_args(mode, drop_uncertain, weight_beta)
    visible = EpisodeIndex.from_lengths(lengths).per_step(np.asarray(episode_visible, bool))  # [N]
    use_recorded = action_mask if mode == "full" else action_mask & visible
    actions = np.where(use_recorded[:, None], recorded_actions, 0.0).astype(np.float32)
    step_mask = use_recorded.copy()
    step_weight = None
    use_proxy = np.zeros(n_steps, dtype=bool)
    if mode == "semi-supervised":
        if proxy_actions is None:
            raise MissingRelabelError(
                "Semi-supervised training needs proxy actions. Got none: pass a relabel "
                "run (`ssorl relabel` writes one, `--relabel NAME` selects it)."
            )
        proxy_actions = np.asarray(proxy_actions, dtype=np.float32)
        use_proxy = ~use_recorded
        if (drop_uncertain > 0 or weight_beta is not None) and uncertainty is None:
            raise MissingRelabelError(
                "Uncertainty filtering or weighting needs the relabel run's uncertainty. "
                "Got none: drop the filter or use a relabel run that recorded uncertainty."
            )
        if drop_uncertain > 0 and use_proxy.any():
            u = np.asarray(uncertainty, dtype=np.float64)
            n_drop = int(np.floor(drop_uncertain * use_proxy.sum()))
            proxy_index = np.flatnonzero(use_proxy)
            # stable sort: ties keep step order, so the choice is reproducible
            worst = proxy_index[np.argsort(-u[proxy_index], kind="stable")[:n_drop]]
            use_proxy[worst] = False
        if not np.isfinite(proxy_actions[use_proxy]).all():
            raise TrainingDataError(
                "Expected finite proxy actions on every step that uses them. Got NaN or inf: "
                "the relabel run is incomplete; resume it with `ssorl relabel`."
            )
        actions[use_proxy] = proxy_actions[use_proxy]
        step_mask |= use_proxy
        if weight_beta is not None:
            u = np.asarray(uncertainty, dtype=np.float64)
            scale = float(np.median(u[use_proxy])) if use_proxy.any() else 1.0
            weight = np.exp(-weight_beta * u / max(scale, 1e-12))
            step_weight = np.where(use_proxy, weight, 1.0).astype(np.float32)
            step_weight[~step_mask] = 0.0
    if not step_mask.any():
        raise EmptyTrainingDataError(
            f"Mode {mode!r} leaves no step to train on ({int(action_mask.sum())} of "
            f"{n_steps} steps have recorded actions, {int(visible.sum())} are in visible "
            "episodes). Use a split that shows some labelled episodes, or "
            "--mode semi-supervised with a relabel run."
        )
    return Selection(
        actions=actions,
        step_mask=step_mask,
        step_weight=step_weight,
        n_recorded=int(use_recorded.sum()),
        n_proxy=int(use_proxy.sum()),
    )


@dataclass(frozen=True)
class TrainingData:
    """Everything an algorithm trains on, as torch tensors in RAM.

    Global step g of episode e has observation row g + e and next observation g + e + 1.
    """

    observations: torch.Tensor  # [N + E, D] float32, T+1 rows per episode
    actions: torch.Tensor  # [N, A] float32, finite (0 where step_mask is False)
    rewards: torch.Tensor  # [N] float32
    terminations: torch.Tensor  # [N] bool, true terminal states (not time limits)
    step_start: torch.Tensor  # [E] int64, first global step of each episode
    lengths: torch.Tensor  # [E] int64, steps per episode (T)
    obs_mean: torch.Tensor  # [D] float32, for normalising observations
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
        return int(self.observations.shape[1])

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
        """Check and copy NumPy arrays into tensors; normalisation statistics come from them.

        Without a step mask every step is usable and counted as recorded; without
        action bounds the usable actions' range is taken.
        """
        lengths = np.asarray(lengths, dtype=np.int64)
        n_steps, n_episodes = int(lengths.sum()), lengths.shape[0]
        observations = np.asarray(observations, dtype=np.float32)
        actions = np.asarray(actions, dtype=np.float32)
        if n_episodes == 0 or (lengths < 1).any():
            raise TrainingDataError(
                f"Expected at least one episode, each of length >= 1. Got lengths {lengths!r}."
            )
        expected = {
            "observations": (n_steps + n_episodes, observations.shape[-1]),
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
        std = observations.std(0)
        step_start = EpisodeIndex.from_lengths(lengths).step_start
        return cls(
            observations=torch.from_numpy(observations.copy()),
            actions=torch.from_numpy(actions),
            rewards=torch.as_tensor(np.asarray(rewards, np.float32).copy()),
            terminations=torch.as_tensor(np.asarray(terminations, bool).copy()),
            step_start=torch.from_numpy(step_start),
            lengths=torch.from_numpy(lengths.copy()),
            obs_mean=torch.from_numpy(observations.mean(0).astype(np.float32)),
            obs_std=torch.from_numpy(np.where(std < 1e-3, 1.0, std).astype(np.float32)),
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


def check_view_args(mode: str, drop_uncertain: float, weight_beta: float | None) -> None:
    """Refuse an unknown mode or an uncertainty filter outside its range."""
    if mode not in MODES:
        raise TrainingDataError(f"Expected mode in {MODES!r}. Got {mode!r} instead.")
    values = {"drop_uncertain": drop_uncertain, "weight_beta": weight_beta}
    check_values("dataset view", values, VIEW_ARGS)


def load_training_data(
    store_path: str | Path,
    mode: Mode = "full",
    split: str | None = None,
    relabel: str | None = None,
    drop_uncertain: float = 0.0,
    weight_beta: float | None = None,
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
    """
    from ssorl_data.staleness import (
        check_relabel_fresh,
        check_split_fresh,
        relabel_identity,
        split_identity,
        store_identity,
    )
    from ssorl_data.store import TrajectoryStore

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
        table = store.episode_table()
        if split is None and (
            mode == "labelled-only" or (mode == "semi-supervised" and table.labelled.all())
        ):
            raise MissingSplitError(
                f"Mode {mode!r} needs a split (CLI: --split NAME) naming the episodes whose "
                "actions are visible: without one it would train on the recorded actions "
                f"of {store.path} exactly as --mode full. Make one with `ssorl data split`, "
                "or train --mode full."
            )
        chosen = store.read_split(split) if split else None
        if chosen is not None and mode != "full":
            check_split_fresh(store, chosen, f"--mode {mode}")
        source = {
            "store": store_identity(store),
            "split": split_identity(chosen) if chosen is not None else None,
            "relabel": None,
        }
        episodes = store.read_episodes(0, store.n_episodes, table)
        visible = chosen.visible if chosen is not None else np.ones(table.n_episodes, bool)
        proxy_actions = uncertainty = None
        if relabel is not None:
            if mode == "semi-supervised":
                check_relabel_fresh(store, relabel, chosen)
            proxy_actions, uncertainty = _read_relabel(store, relabel)
            source["relabel"] = relabel_identity(store, relabel)
        selection = select_actions(
            episodes.actions,
            episodes.action_mask,
            visible,
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
            source=source,
        )


def _read_relabel(store, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Proxy actions and uncertainty of a complete relabel run, NaN past the steps it covered."""
    run = store.relabel_run(name)
    if run.status != "complete":
        raise MissingRelabelError(
            f"{store.path}: relabel run {name!r} is {run.status!r}, not complete. "
            f"Finish it with `ssorl relabel {store.path} --name {name} ...` (it resumes)."
        )
    n = store.n_steps
    actions = np.full((n, *store.action_space.shape), np.nan, np.float32)
    uncertainty = np.full(n, np.nan, np.float32)
    covered = min(run.n_steps, n)
    actions[:covered] = run.read("actions", 0, covered)
    uncertainty[:covered] = run.read("uncertainty", 0, covered)
    return actions, uncertainty
