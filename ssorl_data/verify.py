"""`verify`: check every invariant of a store (DESIGN.md "The store") and report each violation."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from ssorl_data import layout
from ssorl_data.episode_index import EpisodeIndex
from ssorl_data.episodes import find_problems
from ssorl_data.errors import SplitNotFoundError, SsorlError, StoreFormatError
from ssorl_data.staleness import extend_command, store_coverage
from ssorl_data.store import TrajectoryStore
from ssorl_data.store.splits import split_attrs, visible_sha256


@dataclass
class VerifyReport:
    """The outcome of `verify_store`: `ok` when no violation was found.

    `stale` lists splits and relabel runs that cover fewer episodes or steps than the
    store (made before an append): not corruption, so they do not make `ok` false,
    but training refuses them until they are extended.
    """

    path: str
    n_episodes: int
    n_steps: int
    violations: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def verify_store(store: TrajectoryStore, progress: bool = False) -> VerifyReport:
    """Read the committed store once, chunk by chunk, and list every broken invariant."""
    report = VerifyReport(str(store.path), store.n_episodes, store.n_steps)
    report.violations += _chunk_problems(store, progress)
    if report.violations:
        return report
    table = store.episode_table()
    report.violations += _table_problems(store, table)
    if report.violations:
        return report
    space = store.observation_space
    obs = (tuple(space.shape), np.dtype(space.dtype))
    act_shape = tuple(store.action_space.shape)
    first = 0
    bar = tqdm(total=store.n_steps, unit="step", desc="verify", disable=not progress)
    for batch in store.iter_batches():
        stop = first + batch.n_episodes
        report.violations += find_problems(
            batch, obs[0], obs[1], act_shape, str(store.path), first_episode=first
        )
        mask = store.read_steps("action_mask", *table.step_range(first, stop))
        report.violations += _derived_problems(store, batch, mask, table, first, stop)
        first = stop
        bar.update(batch.n_steps)
    bar.close()
    report.violations += _split_problems(store, table)
    report.violations += _relabel_problems(store)
    violations, stale = _staleness(store)
    report.violations += violations
    report.stale += stale
    return report


def _chunk_problems(store: TrajectoryStore, progress: bool) -> list[str]:
    """Every chunk inside the committed sizes is stored and decodes (opening the store
    already checked that the committed sizes fit the arrays and the episode table).

    The other checks read these chunks, so they run only when all of them are sound.
    """
    return store.chunk_problems(progress)


def _table_problems(store: TrajectoryStore, table) -> list[str]:
    problems = []
    if table.n_episodes and (table.lengths < 1).any():
        bad = int(np.argmax(table.lengths < 1))
        problems.append(f"{store.path}, episode {bad}: length {int(table.lengths[bad])} < 1.")
    expected_start = EpisodeIndex.from_lengths(table.lengths).step_start
    if table.n_episodes and not np.array_equal(table.step_start, expected_start):
        bad = int(np.argmax(table.step_start != expected_start))
        problems.append(
            f"{store.path}, episode {bad}: step_start {int(table.step_start[bad])} should be "
            f"{int(expected_start[bad])} (episodes are contiguous)."
        )
    if int(table.lengths.sum()) != store.n_steps:
        problems.append(
            f"{store.path}: episode lengths sum to {int(table.lengths.sum())}, "
            f"but n_steps is {store.n_steps}."
        )
    return problems


def _derived_problems(store, batch, mask, table, first: int, stop: int) -> list[str]:
    """Columns derived from the steps (mask, return, labelled) must match them."""
    problems = []
    if not np.array_equal(mask, batch.action_mask):
        step = int(np.argmax(mask != batch.action_mask)) + table.step_range(first, stop)[0]
        problems.append(
            f"{store.path}: steps/action_mask at step {step} disagrees with steps/actions "
            "(mask must be True exactly where the action is not NaN)."
        )
    returns = batch.episode_returns()
    bad = ~np.isclose(returns, table.returns[first:stop], rtol=1e-9, atol=1e-9)
    if bad.any():
        e = first + int(np.argmax(bad))
        problems.append(
            f"{store.path}, episode {e}: stored return {table.returns[e]!r} differs from the "
            f"sum of its rewards {returns[e - first]!r}."
        )
    labelled = batch.episode_labelled()
    if not np.array_equal(labelled, table.labelled[first:stop]):
        e = first + int(np.argmax(labelled != table.labelled[first:stop]))
        problems.append(
            f"{store.path}, episode {e}: episodes/labelled is {bool(table.labelled[e])} but "
            "its steps say otherwise."
        )
    return problems


def _split_problems(store: TrajectoryStore, table) -> list[str]:
    """Every split is complete, bool, no longer than the episodes, visible only where labelled."""
    problems = []
    for name in store.list_splits():
        where = f"{store.path}/{layout.split_path(name)}"
        try:
            split = store.read_split(name)
        except (SplitNotFoundError, StoreFormatError) as error:  # unfinished or edited
            problems.append(str(error))
            continue
        shape, _, dtype = store.raw_array_info(
            f"{layout.split_path(name)}/{layout.SPLIT_VISIBLE}", with_dtype=True
        )
        if dtype != np.bool_ or len(shape) != 1 or shape[0] > store.n_episodes:
            problems.append(
                f"{where}: visible should be bool of at most {store.n_episodes} episodes; "
                f"it is {dtype} of shape {shape}. Make the split again with --overwrite."
            )
            continue
        no_actions = split.visible & ~table.labelled
        if no_actions.any():
            problems.append(
                f"{where}, episode {int(np.argmax(no_actions))}: visible but without recorded "
                "actions. Make the split again with --overwrite."
            )
    return problems


def _relabel_problems(store: TrajectoryStore) -> list[str]:
    """Relabel arrays have the run's shapes; written chunks hold finite actions."""
    problems = []
    act_shape = tuple(store.action_space.shape)
    for name in store.list_relabels():
        run = store.relabel_run(name)
        expected = {
            layout.RELABEL_ACTIONS: (run.n_steps, *act_shape),
            layout.RELABEL_UNCERTAINTY: (run.n_steps,),
            layout.RELABEL_DONE: (run.n_chunks,),
        }
        bad = [
            f"{key} {run.array_info(key)[0]} (expected {shape})"
            for key, shape in expected.items()
            if run.array_info(key)[0] != shape
        ]
        if run.n_steps > store.n_steps or bad:
            what = ", ".join(bad) or "more steps than the store"
            problems.append(
                f"{run.where}: shapes do not fit the run ({what}). Relabel again with --overwrite."
            )
            continue
        done = run.done()
        if run.status == layout.STATUS_COMPLETE and not done.all():
            problems.append(
                f"{run.where}: marked complete but chunks {np.flatnonzero(~done)[:8]} "
                "are not written. Relabel again to finish them."
            )
        for index in np.flatnonzero(done):
            start, stop = run.chunk_range(int(index))
            actions = run.read("actions", start, stop)
            if not np.isfinite(actions).all():
                step = start + int(
                    np.argmax(~np.isfinite(actions).reshape(stop - start, -1).all(axis=1))
                )
                problems.append(
                    f"{run.where}: chunk {int(index)} is marked done but step {step} has a "
                    "non-finite proxy action. Relabel again with --overwrite."
                )
    return problems


def _staleness(store: TrajectoryStore) -> tuple[list[str], list[str]]:
    """(violations, stale): derived data that claims more than it holds or than the store
    has, or whose content no longer matches its recorded identity, is a violation; derived
    data that covers less than the store (made before an append) is only stale."""
    violations, stale = [], []
    for coverage in store_coverage(store):
        if coverage.kind == "split":
            where = f"{store.path}/{layout.split_path(coverage.name)}"
            violations += _split_identity_problems(store, coverage.name, where)
        else:
            where = f"{store.path}/{layout.relabel_path(coverage.name)}"
        if coverage.covered is None:
            stale.append(f"{where}: {coverage.describe()}.")
        elif coverage.covered > coverage.total:
            violations.append(
                f"{where}: covers {coverage.covered} {coverage.unit}, more than the store's "
                f"{coverage.total}. It was modified outside ssorl; make it again with --overwrite."
            )
        elif coverage.stale:
            stale.append(
                f"{where}: {coverage.describe()}; training refuses it: extend it with "
                f"`{extend_command(store, coverage)}`."
            )
    return violations, stale


def _split_identity_problems(store: TrajectoryStore, name: str, where: str) -> list[str]:
    """A split's `visible` must be at least as long as the episodes it claims to cover, and
    hold the visible episodes its `visible_sha256` names."""
    attrs, stored = split_attrs(store, name)
    covered = attrs.get("n_episodes")
    if isinstance(covered, int) and stored < covered:
        return [
            f"{where}: visible holds {stored} episodes but the split covers {covered}. "
            "Make the split again with --overwrite."
        ]
    recorded = attrs.get("visible_sha256")
    if recorded is None or attrs.get("status") != layout.STATUS_COMPLETE:
        return []
    try:
        visible = store.read_split(name).visible
    except SsorlError:
        return []  # reported by the split checks
    if visible_sha256(visible) != recorded:
        return [
            f"{where}: visible does not hold the episodes the split was made with (its "
            "visible_sha256 differs). It was modified outside ssorl; make the split again "
            "with --overwrite."
        ]
    return []
