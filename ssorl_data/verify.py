"""`verify`: check every invariant of a store (DESIGN.md "The store") and report each violation."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from ssorl_data import layout
from ssorl_data.episodes import find_problems
from ssorl_data.store import TrajectoryStore


@dataclass
class VerifyReport:
    """The outcome of `verify_store`: `ok` when no violation was found."""

    path: str
    n_episodes: int
    n_steps: int
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def verify_store(store: TrajectoryStore, progress: bool = False) -> VerifyReport:
    """Read the committed store once, chunk by chunk, and list every broken invariant."""
    report = VerifyReport(str(store.path), store.n_episodes, store.n_steps)
    report.violations += _size_problems(store)
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
        mask = store.read_steps(
            "action_mask",
            int(table.step_start[first]),
            int(table.step_start[first]) + batch.n_steps,
        )
        report.violations += _derived_problems(store, batch, mask, table, first, stop)
        first = stop
        bar.update(batch.n_steps)
    bar.close()
    return report


def _size_problems(store: TrajectoryStore) -> list[str]:
    n, e = store.n_steps, store.n_episodes
    expected = {layout.OBSERVATIONS: n + e}
    expected |= {name: n for name in layout.STEP_ARRAYS}
    expected |= {name: e for name in layout.EPISODE_ARRAYS}
    problems = []
    for name, size in expected.items():
        shape, _ = store.raw_array_info(name)
        if shape[0] < size:
            problems.append(
                f"{store.path}/{name}: holds {shape[0]} rows but the store commits {size}. "
                "The store was modified outside ssorl; re-import it."
            )
    return problems


def _table_problems(store: TrajectoryStore, table) -> list[str]:
    problems = []
    if table.n_episodes and (table.length < 1).any():
        bad = int(np.argmax(table.length < 1))
        problems.append(f"{store.path}, episode {bad}: length {int(table.length[bad])} < 1.")
    expected_start = np.concatenate(([0], np.cumsum(table.length)[:-1]))
    if table.n_episodes and not np.array_equal(table.step_start, expected_start):
        bad = int(np.argmax(table.step_start != expected_start))
        problems.append(
            f"{store.path}, episode {bad}: step_start {int(table.step_start[bad])} should be "
            f"{int(expected_start[bad])} (episodes are contiguous)."
        )
    if int(table.length.sum()) != store.n_steps:
        problems.append(
            f"{store.path}: episode lengths sum to {int(table.length.sum())}, "
            f"but n_steps is {store.n_steps}."
        )
    return problems


def _derived_problems(store, batch, mask, table, first: int, stop: int) -> list[str]:
    """Columns derived from the steps (mask, return, labelled) must match them."""
    problems = []
    if not np.array_equal(mask, batch.action_mask):
        step = int(np.argmax(mask != batch.action_mask)) + int(table.step_start[first])
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
