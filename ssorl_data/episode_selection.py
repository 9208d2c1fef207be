"""Which episodes to label: a labelling budget spent at random, or on covering the state space.

A user who can label a tenth of a corpus wants the tenth whose labels teach the IDM
most. Each episode is summarised by the mean and standard deviation of its
observations and of its observation differences (s_{t+1} - s_t, what the IDM
reads the action from), each normalised by the corpus's spread of that dimension.

- `coverage` clusters those summaries by k-means (k: as many clusters as the
  budget holds episodes) and labels, cluster by cluster, the candidate nearest each
  centre: every kind of behaviour gets labels in proportion to how common it is.
- `farthest` is greedy k-center (farthest-point) selection: it repeatedly finds the
  episode farthest from every pick so far and picks the candidate nearest to it.
  It covers the extremes first; on Hopper-v5 medium-replay those are short falling
  episodes, and its IDM was 2.5 times worse than random selection's (README).

The features are read in runs of whole episodes (`EpisodeIndex.runs`), so memory
is the feature table ([E, 4 D] float64) plus one run, whatever the corpus size.
Selection costs O(k x E x D) per k-means step (or per farthest-point pick):
seconds for thousands of episodes, minutes past about 10^5 episodes with a budget
of 10^4 episodes.

A budget is a number of episodes or of steps; with steps, episodes that no longer
fit the remaining budget are passed over, so the picks never exceed it. Both
methods are deterministic for a seed.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from ssorl_data.errors import SplitError
from ssorl_data.store import EpisodeTable, TrajectoryStore

SELECTIONS = ("random", "coverage", "farthest")
KMEANS_ITERATIONS = 25
KMEANS_RESTARTS = 4  # the fit with the least squared distance is kept
DISTANCE_BLOCK = 4096  # episodes per block of the episode-to-centre distances
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
    features = episode_features(store, progress=progress)
    if method == "farthest":
        return _k_center(features, candidates, cost, budget, rng)
    return _medoids(features, candidates, cost, budget, rng)


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


def _nearest(points: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the nearest centre [n], squared distance to it [n]), in blocks of points."""
    index = np.empty(points.shape[0], np.int64)
    distance = np.empty(points.shape[0], np.float64)
    centre_sq = (centres**2).sum(1)
    for lo in range(0, points.shape[0], DISTANCE_BLOCK):
        block = points[lo : lo + DISTANCE_BLOCK]
        d = (block**2).sum(1)[:, None] - 2 * block @ centres.T + centre_sq[None]
        index[lo : lo + block.shape[0]] = d.argmin(1)
        distance[lo : lo + block.shape[0]] = np.maximum(d.min(1), 0.0)
    return index, distance


def _kmeans(features: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """[k, F] centres: k-means++ start, then Lloyd steps until they stop moving."""
    n = features.shape[0]
    centres = np.empty((k, features.shape[1]))
    centres[0] = features[rng.integers(n)]
    distance = ((features - centres[0]) ** 2).sum(1)
    for j in range(1, k):
        total = distance.sum()
        pick = rng.choice(n, p=distance / total) if total > 0 else int(rng.integers(n))
        centres[j] = features[pick]
        distance = np.minimum(distance, ((features - centres[j]) ** 2).sum(1))
    for _ in range(KMEANS_ITERATIONS):
        label, _ = _nearest(features, centres)
        sums = np.zeros_like(centres)
        np.add.at(sums, label, features)
        counts = np.bincount(label, minlength=k)
        moved = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centres)
        if np.array_equal(moved, centres):
            break
        centres = moved
    return centres


def _medoids(
    features: np.ndarray,
    candidates: np.ndarray,
    cost: np.ndarray,
    budget: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """k-means over every episode (the best of KMEANS_RESTARTS fits), k = the budget over
    the candidates' mean cost; then, cluster by cluster from the largest and round after round,
    the fitting candidate nearest its cluster's centre. Dense regions hold more centres,
    so they get more labels; farthest-point spends labels on outliers first."""
    n = features.shape[0]
    k = int(np.clip(round(budget / cost[candidates].mean()), 1, n))
    fits = [_kmeans(features, k, rng) for _ in range(KMEANS_RESTARTS)]
    centres = min(fits, key=lambda c: _nearest(features, c)[1].sum())
    label, distance = _nearest(features, centres)
    queues = [
        [int(e) for e in np.flatnonzero(candidates & (label == j))[np.argsort(
            distance[candidates & (label == j)], kind="stable")]]
        for j in np.argsort(-np.bincount(label, minlength=k), kind="stable")
    ]  # fmt: skip
    chosen = np.zeros(n, bool)
    left = budget
    while any(queues):
        for queue in queues:
            while queue and cost[queue[0]] > left:
                queue.pop(0)  # never fits again: the budget only shrinks
            if queue:
                pick = queue.pop(0)
                chosen[pick] = True
                left -= int(cost[pick])
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
