"""The issue's protocol on the real Hopper medium-replay file (slow: trains a small IDM).

The full-size figures (default configuration) are in README.md and
benchmarks/results/idm_hopper_mr.json; this test checks the pipeline end to end
on the same data with a smaller, faster network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ssorl_data.idm import IdmTrainConfig, evaluate_idm, load_idm, train_idm
from ssorl_data.io.importing import import_dataset
from ssorl_data.relabel import relabel
from ssorl_data.splits import make_split
from ssorl_data.store import TrajectoryStore

SOURCE = Path(__file__).resolve().parents[3] / "shared/corpus/Hopper-v5/medium-replay.hdf5"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SOURCE.is_file(), reason="../shared/corpus is not beside this checkout"),
]


def test_hopper_split_idm_and_relabel(tmp_path):
    import_dataset(SOURCE, tmp_path / "store", progress=False)
    with TrajectoryStore.open(tmp_path / "store", mode="a") as store:
        split = make_split(store, "p10q50", labelled_fraction=0.1, quantile=0.5, seed=0)
        returns = store.episode_table().returns
    assert split.visible.sum() == round(0.1 * returns.size)
    assert returns[split.visible].max() <= np.quantile(returns, 0.5)
    config = IdmTrainConfig(hidden=(256, 256), lr=1e-3, max_steps=1500, eval_every=100)
    with TrajectoryStore.open(tmp_path / "store") as store:
        train_idm(store, "p10q50", tmp_path / "idm", config, progress=False)
        result = evaluate_idm(load_idm(tmp_path / "idm"), store)
    assert result["hidden_mse"] <= 0.2 * result["hidden_action_variance"]
    assert result["hidden_outside_uncertainty"] > result["hidden_inside_uncertainty"]
    run = relabel(tmp_path / "store", tmp_path / "idm", "p10q50", progress=False)
    assert run.metrics["hidden_mse"] == pytest.approx(result["hidden_mse"], rel=1e-4)
