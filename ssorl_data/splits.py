"""Splits: which episodes keep visible actions in a semi-supervised experiment.

The protocol follows the semi-supervised offline RL literature: labelled
episodes are drawn at random from the episodes whose return lies in the lowest
`quantile` fraction, so that `labelled_fraction` of all episodes are labelled.
Without a quantile the draw is from every episode. No recorded action is ever
removed; a split only says which ones training may see. Episodes without a
recorded action for every step are never visible. A split covers the episodes
of its time; after an append, `extend_split` extends it with the new episodes
not visible (see `ssorl_data.staleness`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from ssorl_data.episode_selection import SELECTIONS, select_episodes
from ssorl_data.errors import SplitError, SplitWarning
from ssorl_data.store import EpisodeTable, Split, TrajectoryStore
from ssorl_data.store.splits import extend_split

__all__ = ["choose_visible", "extend_split", "make_split", "read_episode_list"]


def choose_visible(
    table: EpisodeTable,
    labelled_fraction: float,
    quantile: float | None = None,
    seed: int = 0,
) -> np.ndarray:
    """[E] bool: `labelled_fraction` of all episodes, drawn from the low-return pool.

    The pool is the labelled episodes among the `quantile` fraction with the lowest
    returns (ties broken by episode index), or every labelled episode when
    `quantile` is None. A pool smaller than the target gives all of it and a
    `SplitWarning`.
    """
    if not 0.0 <= labelled_fraction <= 1.0:
        raise SplitError(f"Expected labelled_fraction in [0, 1]. Got {labelled_fraction!r}.")
    n = table.n_episodes
    pool = label_pool(table, quantile)
    target = int(round(labelled_fraction * n))
    candidates = np.flatnonzero(pool)
    if candidates.size < target:
        warnings.warn(
            f"Asked for {target} labelled episodes ({labelled_fraction:.1%} of {n}), but only "
            f"{candidates.size} episodes with recorded actions lie in the pool "
            f"(quantile {quantile}); the split labels all {candidates.size}.",
            SplitWarning,
            stacklevel=2,
        )
        target = candidates.size
    visible = np.zeros(n, dtype=bool)
    visible[np.random.default_rng(seed).choice(candidates, size=target, replace=False)] = True
    return visible


def label_pool(table: EpisodeTable, quantile: float | None) -> np.ndarray:
    """[E] bool: the episodes with recorded actions among the `quantile` fraction with the
    lowest returns (ties broken by episode index), or all of them when `quantile` is None."""
    if quantile is not None and not 0.0 < quantile <= 1.0:
        raise SplitError(f"Expected quantile in (0, 1]. Got {quantile!r} instead.")
    pool = np.zeros(table.n_episodes, dtype=bool)
    if quantile is None:
        pool[:] = True
    else:
        lowest = np.argsort(table.returns, kind="stable")[: int(round(quantile * pool.size))]
        pool[lowest] = True
    return pool & table.labelled


def read_episode_list(path: str | Path, n_episodes: int) -> np.ndarray:
    """Episode indices from a JSON list or a text file of integers (whitespace/comma separated)."""
    path = Path(path)
    text = path.read_text()
    try:
        values = (
            json.loads(text) if text.lstrip().startswith("[") else text.replace(",", " ").split()
        )
        indices = np.array([int(v) for v in values], dtype=np.int64)
    except (ValueError, TypeError) as error:
        raise SplitError(
            f"{path}: expected episode indices as integers (a JSON list, or one per line). "
            f"Could not read them: {error}."
        ) from None
    bad = (indices < 0) | (indices >= n_episodes)
    if bad.any():
        raise SplitError(
            f"{path}: episode {int(indices[np.argmax(bad)])} does not exist; the store has "
            f"episodes 0 to {n_episodes - 1}."
        )
    return indices


def make_split(
    store: TrajectoryStore,
    name: str,
    *,
    labelled_fraction: float | None = None,
    quantile: float | None = None,
    seed: int = 0,
    episodes: np.ndarray | list[int] | None = None,
    overwrite: bool = False,
    labelled_steps: int | None = None,
    select: str = "random",
    progress: bool = False,
) -> Split:
    """Make and store split `name` (the store must be open with mode="a").

    Give a budget, `labelled_fraction` (of all episodes) or `labelled_steps`, spent by
    `select` ("random", or "coverage": `ssorl_data.episode_selection`) on the episodes of the
    optional return `quantile`, with `seed`; or an explicit list of `episodes`, which
    must all have recorded actions.
    """
    table = store.episode_table()
    given = [v is not None for v in (labelled_fraction, labelled_steps, episodes)]
    if sum(given) != 1:
        raise SplitError(
            "Expected exactly one of labelled_fraction, labelled_steps or episodes. Got "
            f"labelled_fraction={labelled_fraction!r}, labelled_steps={labelled_steps!r} and "
            f"episodes {'given' if episodes is not None else 'absent'}."
        )
    if select not in SELECTIONS:
        raise SplitError(f"Unknown selection {select!r}. Expected one of {', '.join(SELECTIONS)}.")
    if episodes is not None and select != "random":
        raise SplitError(f"An explicit episode list is its own selection; got select={select!r}.")
    if episodes is not None:
        visible = np.zeros(table.n_episodes, dtype=bool)
        visible[np.asarray(episodes, dtype=np.int64)] = True
        protocol = {"method": "episodes", "labelled_fraction": float(visible.mean())}
    elif select == "coverage" or labelled_steps is not None:
        if labelled_fraction is not None and not 0.0 <= labelled_fraction <= 1.0:
            raise SplitError(f"Expected labelled_fraction in [0, 1]. Got {labelled_fraction!r}.")
        n_episodes = (
            None if labelled_fraction is None else round(labelled_fraction * table.n_episodes)
        )
        visible = select_episodes(
            store, label_pool(table, quantile), method=select, n_episodes=n_episodes,
            n_steps=labelled_steps, seed=seed, progress=progress,
        )  # fmt: skip
        method = "return_quantile" if select == "random" and quantile is not None else select
        budget = {"labelled_fraction": labelled_fraction} if labelled_steps is None else {
            "labelled_steps": labelled_steps}  # fmt: skip
        protocol = {"method": method, **budget, "quantile": quantile, "seed": seed}
    else:
        visible = choose_visible(table, labelled_fraction, quantile, seed)
        protocol = {
            "method": "random" if quantile is None else "return_quantile",
            "labelled_fraction": labelled_fraction,
            "quantile": quantile,
            "seed": seed,
        }
    protocol["n_visible"] = int(visible.sum())
    protocol["n_visible_steps"] = int(table.lengths[visible].sum())
    return store.write_split(name, visible, protocol, overwrite=overwrite)
