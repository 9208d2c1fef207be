"""How well uncertainty ranks errors: AUROC for the worst errors, and Spearman correlation.

A user without the hidden actions can check an IDM's uncertainty only on its own
held-out labelled episodes: does high uncertainty mark the steps whose proxy
action is wrong? Two measures answer it, both on ranks only (so invariant to
how uncertainty is scaled):

- `auroc_worst`: the probability that a step among the worst `fraction` of errors
  has higher uncertainty than a step outside them (0.5 is chance, 1 is perfect);
- `spearman`: the rank correlation of uncertainty with error.

Per-step error is the squared error averaged over action dimensions in the IDM's
[-1, 1] action scale, so dimensions with wide bounds do not dominate. A group of
steps is sampled at a regular stride to at most `max_steps` steps, so memory stays
bounded on any corpus size.
"""

from __future__ import annotations

import math

import numpy as np

WORST_FRACTION = 0.1  # the errors that count as "wrong labels"
MAX_RANKED_STEPS = 1_000_000  # per group; a regular stride sample beyond that


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of `values` [n], ties given the mean of the ranks they span."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    # boundaries of runs of equal values in sorted order
    new_run = np.concatenate(([True], ordered[1:] != ordered[:-1]))
    run_id = np.cumsum(new_run) - 1
    run_start = np.flatnonzero(new_run)
    run_stop = np.append(run_start[1:], values.size)
    mean_rank = (run_start + run_stop + 1) / 2.0  # mean of ranks start+1 .. stop
    ranks = np.empty(values.size, np.float64)
    ranks[order] = mean_rank[run_id]
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rank correlation (Pearson's on average ranks); None when either is constant."""
    rx, ry = average_ranks(x), average_ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    denominator = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry) / denominator if denominator > 0 else None


def auroc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney U);
    None without both positives and negatives."""
    positive = np.asarray(positive, bool)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum = float(average_ranks(scores)[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def worst_errors(error: np.ndarray, fraction: float = WORST_FRACTION) -> np.ndarray:
    """[n] bool: the ceil(fraction * n) largest errors (and any tied with the smallest of them)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"Expected fraction in (0, 1). Got {fraction!r}.")
    count = max(1, math.ceil(fraction * error.size))
    threshold = np.partition(error, error.size - count)[error.size - count]
    return error >= threshold


def ranking_metrics(
    uncertainty: np.ndarray, error: np.ndarray, fraction: float = WORST_FRACTION
) -> dict[str, float | None]:
    """{"auroc_worst": ..., "spearman": ...} of uncertainty [n] against error [n]."""
    if error.size == 0:
        return {"auroc_worst": None, "spearman": None}
    return {
        "auroc_worst": auroc(uncertainty, worst_errors(error, fraction)),
        "spearman": spearman(uncertainty, error),
    }


def step_errors(predicted: np.ndarray, recorded: np.ndarray, action_half: np.ndarray) -> np.ndarray:
    """[n] squared error averaged over action dims, in the [-1, 1] scale of the action bounds."""
    n = recorded.shape[0]
    diff = (predicted.reshape(n, -1).astype(np.float64) - recorded.reshape(n, -1)) / action_half
    return (diff**2).mean(1)


class RankingSample:
    """Uncertainty and error of a regular stride sample of one group's steps.

    `expected_steps` (an upper bound on the group's steps) fixes the stride, so the
    sample holds at most about `max_steps` steps, whatever order chunks arrive in.
    Columns of `uncertainty` are definitions (one or more).
    """

    def __init__(
        self, expected_steps: int, columns: int = 1, max_steps: int = MAX_RANKED_STEPS
    ) -> None:
        self.stride = max(1, math.ceil(expected_steps / max_steps))
        self.columns = columns
        self.uncertainty: list[np.ndarray] = []
        self.error: list[np.ndarray] = []

    def add(self, steps: np.ndarray, uncertainty: np.ndarray, error: np.ndarray) -> None:
        """Keep the steps (global indices [n]) that fall on the stride."""
        keep = steps % self.stride == 0
        self.uncertainty.append(np.asarray(uncertainty, np.float64).reshape(steps.size, -1)[keep])
        self.error.append(np.asarray(error, np.float64)[keep])

    def metrics(self, fraction: float = WORST_FRACTION) -> list[dict[str, float | None]]:
        """One `ranking_metrics` per uncertainty column (of an empty group: all None)."""
        uncertainty = np.concatenate([np.empty((0, self.columns)), *self.uncertainty])
        error = np.concatenate([np.empty(0), *self.error])
        return [ranking_metrics(column, error, fraction) for column in uncertainty.T]
