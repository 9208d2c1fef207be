"""Summary statistics of a store (`ssorl data info`) and the labelled-vs-action-free return plot."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ssorl_data.staleness import store_coverage
from ssorl_data.store import TrajectoryStore


def _stats(values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None}
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
    }


def store_info(store: TrajectoryStore) -> dict[str, Any]:
    """Counts, labelled fractions, return/length statistics, and what each split and relabel
    run covers (`derived`: "complete" or "stale (covers N of M ...)"), as a JSON-ready dict.

    Memory: the episode table and one chunk of `action_mask` at a time (counted chunk by
    chunk), whatever the store's size."""
    table = store.episode_table()
    n_recorded = sum(int(rows.sum()) for _, rows in store.iter_rows("action_mask"))
    e = table.n_episodes
    return {
        "path": str(store.path),
        "env_id": store.env_id,
        "n_episodes": e,
        "n_steps": store.n_steps,
        "labelled_fraction": float(table.labelled.mean()) if e else 0.0,
        "labelled_episodes": int(table.labelled.sum()),
        "recorded_action_steps": n_recorded,
        "recorded_action_fraction": n_recorded / store.n_steps if store.n_steps else 0.0,
        "observation_shape": list(store.observation_space.shape),
        "observation_dtype": str(store.observation_space.dtype),
        "action_shape": list(store.action_space.shape),
        "return": _stats(table.returns),
        "return_labelled": _stats(table.returns[table.labelled]),
        "return_action_free": _stats(table.returns[~table.labelled]),
        "length": _stats(table.lengths.astype(np.float64)),
        "ref_min_score": store.metadata.ref_min_score,
        "ref_max_score": store.metadata.ref_max_score,
        "chunk_steps": store.chunk_steps,
        "splits": store.list_splits(),
        "relabels": {name: store.relabel_run(name).status for name in store.list_relabels()},
        "derived": [coverage.to_dict() for coverage in store_coverage(store)],
    }


def plot_returns(store: TrajectoryStore, path: str | os.PathLike[str]) -> Path:
    """Histograms of episode returns, labelled vs action-free episodes, written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = store.episode_table()
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.histogram_bin_edges(table.returns, bins=40) if table.n_episodes else 10
    for mask, label in ((table.labelled, "labelled"), (~table.labelled, "action-free")):
        if mask.any():
            ax.hist(table.returns[mask], bins=bins, alpha=0.6, label=f"{label} ({mask.sum()})")
    ax.set_xlabel("episode return")
    ax.set_ylabel("episodes")
    ax.set_title(f"{store.env_id or store.path.name}: returns by action availability")
    if table.n_episodes:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
