"""A first import killed before its commit leaves an empty store that a plain rerun replaces;
a live import's store is never touched, and a store with committed episodes still needs
--append."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ssorl_data.episodes import concat_batches
from ssorl_data.errors import StoreExistsError, StoreLockedError
from ssorl_data.io.importing import import_dataset
from ssorl_data.io.source import ImportSource
from ssorl_data.store import TrajectoryStore
from ssorl_data.verify import verify_store
from tests.data.append_worker import ACT_DIM, OBS_DIM, episode
from tests.data.factories import spaces

ROOT = Path(__file__).resolve().parents[2]


def _source(n: int) -> ImportSource:
    batch = concat_batches([episode(i) for i in range(n)])
    return ImportSource(
        "finite", *spaces((OBS_DIM,), (ACT_DIM,)), n_steps=batch.n_steps, batches=lambda: [batch]
    )


def test_a_killed_first_import_is_replaced_by_a_plain_rerun(tmp_path) -> None:
    path = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for delay in np.random.default_rng(0).uniform(0.0, 0.5, size=3):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.data.import_worker", str(path)],
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
            with pytest.raises(StoreLockedError):  # a live import: its store is left alone
                import_dataset(_source(3), path, progress=False)
            time.sleep(float(delay))
        finally:
            proc.send_signal(signal.SIGKILL)  # the worker never ends by itself
            proc.wait()
            proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        with TrajectoryStore.open(path) as store:
            assert store.n_episodes == 0  # nothing committed: the store the rerun refused
    result = import_dataset(_source(7), path, progress=False)
    assert result.episodes_added == 7
    with TrajectoryStore.open(path) as store:
        assert verify_store(store).ok and store.n_episodes == 7
        np.testing.assert_array_equal(
            store.read_episodes(0, 7).observations, _source(7).batches()[0].observations
        )
    with pytest.raises(StoreExistsError, match="append"):  # committed episodes are kept
        import_dataset(_source(3), path, progress=False)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing left behind


def test_an_empty_store_not_made_by_an_import_is_kept(tmp_path) -> None:
    TrajectoryStore.create(tmp_path / "store", *spaces((OBS_DIM,), (ACT_DIM,))).close()
    with pytest.raises(StoreExistsError, match="append"):
        import_dataset(_source(3), tmp_path / "store", progress=False)
