"""Which action each step trains on: the selection rule, whole or chunk by chunk.

`select_actions` applies the rule to whole arrays (the in-RAM view); the training cache
applies the same `select_chunk` to one episode range at a time. Only the uncertainty
filters look at every step at once (the fraction to drop, the median to weight by):
`ProxyFilter.fit` reduces them to a threshold and a scale from one pass over the proxy
steps' uncertainty (4 bytes a step), so that a chunk's selection needs only the chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ssorl_data.episode_index import EpisodeIndex
from ssorl_data.expect import Expect, check_values
from ssorl_train.errors import EmptyTrainingDataError, MissingRelabelError, TrainingDataError

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


@dataclass(frozen=True)
class ProxyFilter:
    """The uncertainty filters reduced to per-step rules over the candidate proxy steps (the
    steps without a usable recorded action), numbered in step order by their ordinal.

    Dropped: the `n_drop` candidates of highest uncertainty, ties (and NaN, ranked below
    every number) taken in step order, i.e. exactly the first `n_drop` of a stable sort of
    -u. `threshold` is the lowest dropped value (NaN when every number is dropped and some
    NaN too) and `last_tie` the ordinal of the last dropped candidate equal to it.
    """

    n_drop: int = 0
    threshold: float = np.nan
    last_tie: int = -1
    weight_beta: float | None = None
    scale: float = 1.0  # median uncertainty of the kept candidates

    @classmethod
    def fit(cls, u: np.ndarray, drop_uncertain: float, weight_beta: float | None) -> ProxyFilter:
        """The filter of candidates whose uncertainty is `u` [n] (floats, in step order)."""
        n_drop = int(np.floor(drop_uncertain * u.shape[0]))
        numbers = ~np.isnan(u)
        n_numbers = int(numbers.sum())
        threshold, last_tie = np.nan, -1
        if 0 < n_drop <= n_numbers:
            values = u[numbers]
            threshold = float(np.partition(values, n_numbers - n_drop)[n_numbers - n_drop])
            del values
            ties_dropped = n_drop - int((u > threshold).sum())
            last_tie = int(np.flatnonzero(u == threshold)[ties_dropped - 1])
        elif n_drop > n_numbers:
            last_tie = int(np.flatnonzero(~numbers)[n_drop - n_numbers - 1])
        fitted = cls(n_drop, threshold, last_tie, weight_beta)
        if weight_beta is None:
            return fitted
        kept = u[~fitted.dropped(u, np.arange(u.shape[0]))]
        return cls(n_drop, threshold, last_tie, weight_beta, _median(kept))

    def dropped(self, u: np.ndarray, ordinal: np.ndarray) -> np.ndarray:
        """[n] bool: which candidates (uncertainty `u`, ordinals `ordinal`) are dropped."""
        if self.n_drop == 0:
            return np.zeros(u.shape[0], bool)
        if np.isnan(self.threshold):  # every number is dropped, and NaN up to last_tie
            return ~np.isnan(u) | (ordinal <= self.last_tie)
        return (u > self.threshold) | ((u == self.threshold) & (ordinal <= self.last_tie))

    def weights(self, u: np.ndarray) -> np.ndarray:
        """[n] float64 sampling weight exp(-beta * u / median u) of kept candidates."""
        assert self.weight_beta is not None
        return np.exp(-self.weight_beta * u.astype(np.float64) / max(self.scale, 1e-12))


def _median(values: np.ndarray) -> float:
    """np.median of `values` in float64 (NaN if any is NaN; 1 if there are none), without
    a float64 copy: the middle one or two values, averaged in float64."""
    n = values.shape[0]
    if n == 0:
        return 1.0
    if np.isnan(values).any():
        return float("nan")
    middle = np.partition(values, [(n - 1) // 2, n // 2])
    return (float(middle[(n - 1) // 2]) + float(middle[n // 2])) / 2


def check_view_args(mode: str, drop_uncertain: float, weight_beta: float | None) -> None:
    """Refuse an unknown mode or an uncertainty filter outside its range."""
    if mode not in MODES:
        raise TrainingDataError(f"Expected mode in {MODES!r}. Got {mode!r} instead.")
    values = {"drop_uncertain": drop_uncertain, "weight_beta": weight_beta}
    check_values("dataset view", values, VIEW_ARGS)


def uses_recorded(mode: str, action_mask: np.ndarray, visible_steps: np.ndarray) -> np.ndarray:
    """[n] bool: the steps that train on their recorded action."""
    return action_mask if mode == "full" else action_mask & visible_steps


def select_chunk(
    recorded_actions: np.ndarray,
    action_mask: np.ndarray,
    visible_steps: np.ndarray,
    mode: Mode,
    proxy_actions: np.ndarray | None,
    uncertainty: np.ndarray | None,
    proxy_filter: ProxyFilter,
    first_ordinal: int = 0,
) -> Selection:
    """The selection of consecutive steps (any cut of the store); `first_ordinal` counts
    the candidate proxy steps before them. Arrays as in `select_actions`, per step."""
    use_recorded = uses_recorded(mode, action_mask, visible_steps)
    actions = np.where(use_recorded[:, None], recorded_actions, 0.0).astype(np.float32)
    step_mask = use_recorded.copy()
    step_weight = None
    use_proxy = np.zeros(step_mask.shape[0], dtype=bool)
    if mode == "semi-supervised":
        if proxy_actions is None:
            raise MissingRelabelError(
                "Semi-supervised training needs proxy actions. Got none: pass a relabel "
                "run (`ssorl relabel` writes one, `--relabel NAME` selects it)."
            )
        use_proxy = ~use_recorded
        candidates = np.flatnonzero(use_proxy)
        if proxy_filter.n_drop:
            ordinal = first_ordinal + np.arange(candidates.shape[0])
            use_proxy[candidates[proxy_filter.dropped(uncertainty[candidates], ordinal)]] = False
        if not np.isfinite(proxy_actions[use_proxy]).all():
            raise TrainingDataError(
                "Expected finite proxy actions on every step that uses them. Got NaN or inf: "
                "the relabel run is incomplete; resume it with `ssorl relabel`."
            )
        actions[use_proxy] = proxy_actions[use_proxy]
        step_mask |= use_proxy
        if proxy_filter.weight_beta is not None:
            step_weight = np.ones(step_mask.shape[0], np.float32)
            step_weight[use_proxy] = proxy_filter.weights(uncertainty[use_proxy])
            step_weight[~step_mask] = 0.0
    return Selection(actions, step_mask, step_weight, int(use_recorded.sum()), int(use_proxy.sum()))


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
    proxy_filter = ProxyFilter()
    if mode == "semi-supervised" and proxy_actions is not None:
        proxy_actions = np.asarray(proxy_actions, dtype=np.float32)
        if drop_uncertain > 0 or weight_beta is not None:
            if uncertainty is None:
                raise MissingRelabelError(
                    "Uncertainty filtering or weighting needs the relabel run's uncertainty. "
                    "Got none: drop the filter or use a relabel run that recorded uncertainty."
                )
            uncertainty = np.asarray(uncertainty)
            if not np.issubdtype(uncertainty.dtype, np.floating):
                uncertainty = uncertainty.astype(np.float64)
            candidates = ~uses_recorded(mode, action_mask, visible)
            proxy_filter = ProxyFilter.fit(uncertainty[candidates], drop_uncertain, weight_beta)
    selection = select_chunk(
        recorded_actions, action_mask, visible, mode, proxy_actions, uncertainty, proxy_filter
    )
    n_usable = selection.n_recorded + selection.n_proxy
    check_not_empty(n_usable, mode, int(action_mask.sum()), n_steps, int(visible.sum()))
    return selection


def check_not_empty(
    n_usable: int, mode: str, n_labelled: int, n_steps: int, n_visible: int
) -> None:
    """Refuse a view that leaves no step to train on."""
    if n_usable == 0:
        raise EmptyTrainingDataError(
            f"Mode {mode!r} leaves no step to train on ({n_labelled} of {n_steps} steps have "
            f"recorded actions, {n_visible} are in visible episodes). Use a split that shows "
            "some labelled episodes, or --mode semi-supervised with a relabel run."
        )
