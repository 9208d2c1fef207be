"""A writer killed with SIGKILL mid-append leaves a store that opens and verifies."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import numpy as np

from ssorl_data.episodes import concat_batches
from ssorl_data.store import TrajectoryStore
from ssorl_data.verify import verify_store
from tests.data.append_worker import episode
from tests.faults.harness import kill, start


def _run_and_kill(path: Path, delay: float) -> None:
    proc = start([sys.executable, "-m", "tests.data.append_worker", str(path)])
    time.sleep(delay)
    assert proc.poll() is None, "the writer died before it was killed"
    kill(proc)
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_during_appends_leaves_the_last_commit(tmp_path):
    path = tmp_path / "store"
    rng = np.random.default_rng(0)
    seen = 0
    for delay in rng.uniform(0.05, 0.6, size=5):
        _run_and_kill(path, float(delay))  # the next round also proves the lock was released
        with TrajectoryStore.open(path) as store:
            report = verify_store(store)
            assert report.ok, report.violations
            assert store.n_episodes >= seen
            seen = store.n_episodes
            got = store.read_episodes(0, store.n_episodes)
            want = concat_batches([episode(i) for i in range(store.n_episodes)])
            np.testing.assert_array_equal(got.lengths, want.lengths)
            np.testing.assert_array_equal(got.observations, want.observations)
            np.testing.assert_array_equal(got.actions, want.actions)
    assert seen > 0
