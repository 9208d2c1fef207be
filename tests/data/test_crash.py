"""A writer killed with SIGKILL mid-append leaves a store that opens and verifies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ssorl_data.episodes import concat_batches
from ssorl_data.store import TrajectoryStore
from ssorl_data.verify import verify_store
from tests.data.append_worker import episode

ROOT = Path(__file__).resolve().parents[2]


def _run_and_kill(path: Path, delay: float) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-m", "tests.data.append_worker", str(path)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the writer died before it was killed"


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
