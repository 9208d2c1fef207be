"""The dataset view of a store, resolved and checked once, then streamed into arrays.

`resolve_view` makes every check `load_training_data` promises (split needed, stale split
or relabel run, incomplete relabel run) and says what the view is read from (`source`,
`key`). `stream_view` fills the view's arrays (given by an allocator: RAM, or the training
cache's memory-mapped files) one episode range of a few chunks at a time, applying the
selection rule per range: memory is a few chunks, plus 4 bytes per proxy step for the
uncertainty filters' one pass over the uncertainty column.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from ssorl_data.store import RelabelRun, Split, TrajectoryStore
from ssorl_data.store.trajectory_store import EpisodeTable
from ssorl_data.streaming_stats import SLICE_BYTES, Moments
from ssorl_train.action_selection import (
    Mode,
    ProxyFilter,
    check_not_empty,
    select_chunk,
    uses_recorded,
)
from ssorl_train.errors import MissingRelabelError, MissingSplitError, TrainingDataError

RUN_CHUNKS = 4  # chunks of steps per streamed episode range
# allocate(name, shape, dtype) -> an array, or any object taking `a[lo:hi] = rows` in order
Allocate = Callable[[str, tuple[int, ...], np.dtype], Any]


@dataclass(frozen=True)
class View:
    """A checked dataset view: the store's episode table, the split's visible episodes and
    the relabel run to read, with the identities of what it is read from."""

    mode: Mode
    split: Split | None
    relabel: RelabelRun | None
    drop_uncertain: float
    weight_beta: float | None
    table: EpisodeTable
    visible: np.ndarray  # [E] bool
    source: dict[str, Any]  # store, split and relabel identities (checkpoints record it)

    def key(self) -> dict[str, Any]:
        """Everything the view's arrays depend on: `source`, the mode and filters, and when
        the relabel run was made and extended (a new run of the same IDM has the same
        identity, not necessarily the same actions)."""
        run = None
        if self.relabel is not None:
            attrs = self.relabel.attrs
            run = {k: attrs.get(k) for k in ("created_at", "extended", "metrics")}
        return {
            "source": self.source,
            "relabel_run": run,
            "mode": self.mode,
            "drop_uncertain": self.drop_uncertain,
            "weight_beta": self.weight_beta,
        }


def resolve_view(
    store: TrajectoryStore,
    mode: Mode,
    split: str | None,
    relabel: str | None,
    drop_uncertain: float,
    weight_beta: float | None,
) -> View:
    """Check the view's parts against the store (see `load_training_data`) and resolve them."""
    from ssorl_data.staleness import (
        check_relabel_fresh,
        check_split_fresh,
        relabel_identity,
        split_identity,
        store_identity,
    )

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
    run = None
    if relabel is not None:
        if mode == "semi-supervised":
            check_relabel_fresh(store, relabel, chosen)
        run = store.relabel_run(relabel)
        if run.status != "complete":
            raise MissingRelabelError(
                f"{store.path}: relabel run {relabel!r} is {run.status!r}, not complete. "
                f"Finish it with `ssorl relabel {store.path} --name {relabel} ...` (it resumes)."
            )
        source["relabel"] = relabel_identity(store, relabel)
    visible = chosen.visible if chosen is not None else np.ones(table.n_episodes, bool)
    return View(mode, chosen, run, drop_uncertain, weight_beta, table, visible, source)


def read_relabel_rows(run: RelabelRun, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Proxy actions and uncertainty of steps [start, stop), NaN past the steps it covered."""
    covered = min(max(run.n_steps, start), stop)
    act_shape = run.array_info("actions")[0][1:]
    actions = np.full((stop - start, *act_shape), np.nan, np.float32)
    uncertainty = np.full(stop - start, np.nan, np.float32)
    actions[: covered - start] = run.read("actions", start, covered)
    uncertainty[: covered - start] = run.read("uncertainty", start, covered)
    return actions, uncertainty


class AlignedMoments:
    """`Moments` fed in any cuts but merged in the row slices `Moments.of` takes over all
    rows at once, so that streamed statistics equal the in-RAM ones bit for bit."""

    def __init__(self, dim: int) -> None:
        self.moments = Moments.empty(dim)
        self.rows = max(1, SLICE_BYTES // (8 * max(1, dim)))  # Moments.update's slice
        self._pending: list[np.ndarray] = []
        self._n_pending = 0

    def update(self, rows: np.ndarray) -> None:
        flat = rows.reshape(rows.shape[0], -1)
        if self._n_pending:
            fill = min(self.rows - self._n_pending, flat.shape[0])
            self._pending.append(flat[:fill])
            self._n_pending += fill
            flat = flat[fill:]
            if self._n_pending < self.rows:
                return
            self.moments.update(np.concatenate(self._pending))
            self._pending, self._n_pending = [], 0
        whole = flat.shape[0] // self.rows * self.rows
        for lo in range(0, whole, self.rows):
            self.moments.update(flat[lo : lo + self.rows])
        if whole < flat.shape[0]:
            self._pending, self._n_pending = [flat[whole:].copy()], flat.shape[0] - whole

    def finish(self) -> Moments:
        if self._n_pending:
            self.moments.update(np.concatenate(self._pending))
            self._pending, self._n_pending = [], 0
        return self.moments


def _finite_rows(actions: np.ndarray) -> np.ndarray:
    return np.isfinite(actions.reshape(actions.shape[0], -1)).all(1)


def _fit_filter(store: TrajectoryStore, view: View, runs: list[tuple[int, int]]) -> ProxyFilter:
    """The uncertainty filters from one pass over the proxy candidates' uncertainty."""
    if view.mode != "semi-supervised" or (view.drop_uncertain == 0 and view.weight_beta is None):
        return ProxyFilter()
    assert view.relabel is not None
    table, parts = view.table, []
    for first, last in runs:
        lo, hi = table.step_range(first, last)
        visible = np.repeat(view.visible[first:last], table.lengths[first:last])
        recorded = uses_recorded(view.mode, _finite_rows(store.read_steps("actions", lo, hi)),
                                 visible)  # fmt: skip
        parts.append(read_relabel_rows(view.relabel, lo, hi)[1][~recorded])
    return ProxyFilter.fit(np.concatenate(parts), view.drop_uncertain, view.weight_beta)


def stream_view(
    store: TrajectoryStore, view: View, allocate: Allocate, progress: bool = False
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The view's arrays, filled range by range into `allocate(name, shape, dtype)`, and its
    counts: (arrays, {"n_recorded", "n_proxy"}). Arrays are those of `TrainingData`."""
    table = view.table
    n, e = table.n_steps, table.n_episodes
    obs_space, act_shape = store.observation_space, tuple(store.action_space.shape)
    arrays = {
        "observations": allocate("observations", (n + e, *obs_space.shape), obs_space.dtype),
        "actions": allocate("actions", (n, *act_shape), np.dtype(np.float32)),
        "rewards": allocate("rewards", (n,), np.dtype(np.float32)),
        "terminations": allocate("terminations", (n,), np.dtype(bool)),
        "step_mask": allocate("step_mask", (n,), np.dtype(bool)),
    }
    if view.mode == "semi-supervised" and view.weight_beta is not None:
        arrays["step_weight"] = allocate("step_weight", (n,), np.dtype(np.float32))
    runs = list(table.runs(RUN_CHUNKS * store.chunk_steps))
    proxy_filter = _fit_filter(store, view, runs)
    moments = AlignedMoments(int(np.prod(obs_space.shape)))
    low = np.full(act_shape, np.inf, np.float32)
    high = np.full(act_shape, -np.inf, np.float32)
    counts = {"n_recorded": 0, "n_proxy": 0, "n_labelled": 0, "n_visible": 0}
    ordinal = 0
    bar = tqdm(total=n, unit="step", desc="training cache", disable=not progress)
    for first, last in runs:
        batch = store.read_episodes(first, last, table)
        lo, hi = table.step_range(first, last)
        obs_lo, obs_hi = table.obs_range(first, last)
        visible = np.repeat(view.visible[first:last], table.lengths[first:last])
        proxy = uncertainty = None
        if view.relabel is not None:
            proxy, uncertainty = read_relabel_rows(view.relabel, lo, hi)
        chosen = select_chunk(batch.actions, batch.action_mask, visible, view.mode, proxy,
                              uncertainty, proxy_filter, ordinal)  # fmt: skip
        ordinal += int((~uses_recorded(view.mode, batch.action_mask, visible)).sum())
        if obs_space.dtype != np.uint8 and not np.isfinite(batch.observations).all():
            raise TrainingDataError(
                f"{store.path}: observations of episodes {first} to {last - 1} are NaN or "
                "inf; `ssorl data verify` lists them. Re-import the data."
            )
        arrays["observations"][obs_lo:obs_hi] = batch.observations
        arrays["actions"][lo:hi] = chosen.actions
        arrays["rewards"][lo:hi] = batch.rewards
        arrays["terminations"][lo:hi] = batch.terminations
        arrays["step_mask"][lo:hi] = chosen.step_mask
        if chosen.step_weight is not None:
            arrays["step_weight"][lo:hi] = chosen.step_weight
        moments.update(batch.observations)
        if chosen.step_mask.any():
            usable = chosen.actions[chosen.step_mask]
            np.minimum(low, usable.min(0), out=low)
            np.maximum(high, usable.max(0), out=high)
        counts["n_recorded"] += chosen.n_recorded
        counts["n_proxy"] += chosen.n_proxy
        counts["n_labelled"] += int(batch.action_mask.sum())
        counts["n_visible"] += int(visible.sum())
        bar.update(hi - lo)
    bar.close()
    n_usable = counts["n_recorded"] + counts["n_proxy"]
    check_not_empty(n_usable, view.mode, counts["n_labelled"], n, counts["n_visible"])
    return arrays, {"moments": moments.finish(), "low": low, "high": high, **counts}
