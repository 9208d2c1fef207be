"""Which episodes to label: a labelling budget spent at random, or on covering the state space.

A user who can label a tenth of a corpus wants the tenth whose labels teach the IDM
most. `coverage` spreads the budget over the kinds of behaviour in the corpus:
each episode is summarised by the mean and standard deviation of its observations
and of its observation differences (s_{t+1} - s_t, what the IDM reads the action
from), each normalised by the corpus's spread of that dimension; then greedy k-center
(farthest-point) selection repeatedly finds the episode farthest from every
episode picked so far and picks the candidate nearest to it (the candidate itself
when every episode is a candidate, which is plain farthest-point selection).

The features are read in runs of whole episodes (`EpisodeIndex.runs`), so memory
is the feature table ([E, 4 D] float64) plus one run, whatever the corpus size.
Selection costs O(picks x E x D): seconds for thousands of episodes, minutes past
about 10^5 episodes with a budget of 10^4.

A budget is a number of episodes or of steps; with steps, episodes that no longer
fit the remaining budget are passed over, so the picks never exceed it. Both
methods are deterministic for a seed.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from ssorl_data.errors import SplitError
from ssorl_data.store import EpisodeTable, TrajectoryStore

SELECTIONS = ("random", "coverage")
FEATURE_RUN_STEPS = 1 << 18  # steps read at once while summarising episodes


def episode_features(
    store: TrajectoryStore, run_steps: int = FEATURE_RUN_STEPS, progress: bool = False
) -> np.ndarray:
    """[E, 4 D] per episode: mean and std of observations, mean and std of s_{t+1} - s_t,
    in units of the corpus's own per-dimension spread (observations normalised by their
    mean and std over every row, differences by theirs; a constant dimension gives zeros).

    Normalising the signals rather than the feature columns keeps the scale of each: the
    within-episode std of a dimension stays small where behaviour differs mostly by level.
    """
    table = store.episode_table()
    dim = int(np.prod(store.observation_space.shape))
    sums = np.zeros((2, table.n_episodes, 2, dim), np.float64)  # [obs|delta, E, sum|sumsq, D]
    bar = tqdm(total=table.n_steps, unit="step", unit_scale=True, desc="episode features",
               disable=not progress)  # fmt: skip
    for first, last in table.runs(run_steps):
        lo, hi = table.obs_range(first, last)
        rows = store.read_observations(lo, hi).reshape(hi - lo, dim).astype(np.float64)
        step_lo, step_hi = table.step_range(first, last)
        step_rows = np.arange(step_lo, step_hi) + table.episode_of_step(step_lo, step_hi) - lo
        deltas = rows[step_rows + 1] - rows[step_rows]
        offsets = (table.obs_start[first:last] - lo, table.step_start[first:last] - step_lo)
        for block, values in enumerate((rows, deltas)):
            sums[block, first:last, 0] = np.add.reduceat(values, offsets[block], axis=0)
            sums[block, first:last, 1] = np.add.reduceat(values**2, offsets[block], axis=0)
        bar.update(step_hi - step_lo)
    bar.close()
    blocks = []
    for block, counts in enumerate((table.lengths + 1, table.lengths)):
        total, square = sums[block, :, 0], sums[block, :, 1]
        mean = total / counts[:, None]
        std = np.sqrt(np.maximum(square / counts[:, None] - mean**2, 0.0))
        overall = total.sum(0) / counts.sum()
        spread = np.sqrt(np.maximum(square.sum(0) / counts.sum() - overall**2, 0.0))
        scale = np.where(spread > 0, spread, np.inf)  # a constant dimension: zeros
        blocks += [(mean - overall) / scale, std / scale]
    return np.concatenate(blocks, axis=1)


def check_budget(
    table: EpisodeTable, n_episodes: int | None, n_steps: int | None, candidates: np.ndarray
) -> None:
    """SplitError unless exactly one budget is given, positive, and some candidate fits it."""
    if (n_episodes is None) == (n_steps is None):
        raise SplitError(
            "Expected one labelling budget: a number of episodes (--labelled-fraction) or of "
            f"steps (--labelled-steps). Got episodes={n_episodes!r}, steps={n_steps!r}."
        )
    budget, unit = (n_episodes, "episodes") if n_steps is None else (n_steps, "steps")
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise SplitError(f"Expected a labelling budget of at least 1 {unit}. Got {budget!r}.")
    if not candidates.any():
        raise SplitError(
            "No episode can be labelled: none in the pool has a recorded action for every "
            "step. Widen --quantile, or import episodes with actions."
        )
    if n_steps is not None and table.lengths[candidates].min() > n_steps:
        raise SplitError(
            f"A budget of {n_steps} steps fits no episode: the shortest candidate has "
            f"{int(table.lengths[candidates].min())} steps. Raise --labelled-steps."
        )


def select_episodes(
    store: TrajectoryStore,
    candidates: np.ndarray,
    *,
    method: str = "random",
    n_episodes: int | None = None,
    n_steps: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> np.ndarray:
    """[E] bool: episodes among `candidates` ([E] bool) chosen by `method` (SELECTIONS)
    within a budget of `n_episodes` episodes or `n_steps` steps."""
    if method not in SELECTIONS:
        raise SplitError(f"Unknown selection {method!r}. Expected one of {', '.join(SELECTIONS)}.")
    table = store.episode_table()
    check_budget(table, n_episodes, n_steps, candidates)
    cost = np.ones(table.n_episodes, np.int64) if n_steps is None else table.lengths
    budget = n_episodes if n_steps is None else n_steps
    rng = np.random.default_rng(seed)
    if method == "random":
        order = rng.permutation(np.flatnonzero(candidates))
        return _take_in_order(order, cost, budget, table.n_episodes)
    return _k_center(episode_features(store, progress=progress), candidates, cost, budget, rng)


def _take_in_order(order: np.ndarray, cost: np.ndarray, budget: int, n: int) -> np.ndarray:
    """The episodes of `order` that still fit the remaining budget, in turn."""
    chosen = np.zeros(n, bool)
    left = budget
    for episode in order.tolist():
        if cost[episode] <= left:
            chosen[episode] = True
            left -= int(cost[episode])
            if left == 0:
                break
    return chosen


def _k_center(
    features: np.ndarray,
    candidates: np.ndarray,
    cost: np.ndarray,
    budget: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Greedy k-center: pick the fitting candidate nearest to the episode farthest from every
    pick so far; the first target is a random episode (so seeds give different covers)."""
    n = features.shape[0]
    chosen = np.zeros(n, bool)
    distance = np.full(n, np.inf)  # to the nearest pick
    left = budget
    target = int(rng.integers(n))
    while True:
        fits = candidates & ~chosen & (cost <= left)
        if not fits.any():
            return chosen
        to_target = np.where(fits, ((features - features[target]) ** 2).sum(1), np.inf)
        pick = int(np.argmin(to_target))
        chosen[pick] = True
        left -= int(cost[pick])
        distance = np.minimum(distance, np.sqrt(((features - features[pick]) ** 2).sum(1)))
        target = int(np.argmax(distance))
        if distance[target] == 0.0:  # every episode is a pick or a duplicate of one
            target = int(np.flatnonzero(fits & ~chosen)[0]) if (fits & ~chosen).any() else pick
