"""Published default configs on the real Hopper-v5 corpus (slow: minutes on a CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssorl_data.io.importing import import_dataset
from ssorl_train import loop
from ssorl_train.algos import make_config
from ssorl_train.dataset import load_training_data

MEDIUM = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "Hopper-v5" / "medium.hdf5"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not MEDIUM.exists(), reason="the shared Hopper-v5 corpus is absent"),
]


@pytest.fixture(scope="module")
def medium_store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "hopper-medium"
    import_dataset(MEDIUM, path, progress=False)
    return path


@pytest.mark.parametrize("algo", ["td3bc", "iql", "cql", "dt"])
def test_default_config_trains_and_evaluates_on_hopper_medium(algo, medium_store, tmp_path) -> None:
    data = load_training_data(medium_store)
    assert (data.n_steps, data.n_episodes, data.env_id) == (100_000, 541, "Hopper-v5")
    config = loop.LoopConfig(steps=50, eval_every=0, eval_episodes=2, log_every=25)
    summary = loop.train(data, algo, make_config(algo), config, tmp_path, progress=False)
    assert summary["steps"] == 50
    assert summary["final_eval"]["normalized_score"] is not None
