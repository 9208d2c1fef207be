"""Self-training: pseudo labels are the IDM's own predictions, the most confident are kept,
the hidden actions are never read, and the supervised weights survive when pseudo labels
do not lower the validation NLL."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from click.testing import CliRunner

from ssorl_data.idm import train_idm
from ssorl_data.idm.checkpoint import load_idm
from ssorl_data.idm.evaluate import predict_windows
from ssorl_data.idm.model import DEFAULT_UNCERTAINTY
from ssorl_data.idm.self_training import pseudo_label, sample_episodes
from ssorl_data.idm.windows import RangeWindows
from ssorl_data.store import TrajectoryStore
from ssorl_train.cli.main import cli
from tests.idm.conftest import TINY, make_dynamics_store, record_reads

SELF = dataclasses.replace(TINY, max_steps=150, self_train_fraction=0.5, self_train_steps=400)


def test_sample_episodes_stays_within_the_step_budget_and_is_seeded() -> None:
    lengths = np.array([10, 20, 30, 40, 50, 60], np.int64)
    chosen = sample_episodes(lengths, np.array([1, 3, 4, 5]), max_steps=100, seed=3)
    assert set(chosen) <= {1, 3, 4, 5} and lengths[chosen].sum() <= 100
    assert chosen.tolist() == sorted(chosen.tolist())
    assert np.array_equal(chosen, sample_episodes(lengths, np.array([1, 3, 4, 5]), 100, 3))
    assert sample_episodes(lengths, np.array([5]), max_steps=1, seed=0).tolist() == [5]


def test_pseudo_labels_are_the_idms_relabel_predictions_and_keep_the_most_confident(
    trained,
) -> None:
    store_path, idm_dir = trained
    idm = load_idm(idm_dir)
    with TrajectoryStore.open(store_path) as store:
        hidden = np.flatnonzero(~np.asarray(store.read_split("half").visible, bool))[:5]
        spec = idm.spec
        half = (np.array(spec.action_high) - np.array(spec.action_low)) / 2
        mean, std = np.array(spec.obs_mean, np.float32), np.array(spec.obs_std, np.float32)
        labels = pseudo_label(idm.network, store, hidden, k=spec.k, mean=mean, std=std,
                              action_half=half, fraction=0.25)  # fmt: skip
        table = store.episode_table()
        windows = []
        builder = RangeWindows(table, spec.k, idm.mean, idm.std, 1000, spec.obs_dim)
        for episode in hidden:  # relabel's own windows of these episodes
            start, stop = int(table.step_start[episode]), int(table.step_stop[episode])
            rows = store.read_observations(*builder.rows(start, stop))
            windows.append(builder.build(rows, start, stop)[0].clone())  # a reused buffer
    with torch.inference_mode():
        actions, spread, _ = predict_windows(idm, torch.cat(windows), 4096)
    mid = (np.array(spec.action_high) + np.array(spec.action_low)) / 2
    np.testing.assert_allclose(labels.actions * half + mid, actions, atol=1e-5)
    # the ranking is relabel's DEFAULT_UNCERTAINTY; a quarter of the steps is kept
    assert labels.step_mask.sum() == np.sum(spread <= np.quantile(spread, 0.25))
    assert spread[labels.step_mask].max() <= spread[~labels.step_mask].min() + 1e-6
    assert labels.summary()["candidate_steps"] == int(table.lengths[hidden].sum())
    assert DEFAULT_UNCERTAINTY == "total-mean"  # what the docs say the ranking uses


def test_self_training_never_reads_the_hidden_actions_and_reports_what_it_did(
    tmp_path, monkeypatch
) -> None:
    path = make_dynamics_store(tmp_path / "store", seed=4)
    with TrajectoryStore.open(path) as store:
        table = store.episode_table()
        visible = np.asarray(store.read_split("half").visible, bool)
        reads = record_reads(monkeypatch)
        result = train_idm(store, "half", None, SELF, progress=False)
        monkeypatch.undo()
        supervised = train_idm(store, "half", None, dataclasses.replace(SELF,
                               self_train_fraction=0.0), progress=False)  # fmt: skip
    visible_chunks = set((table.steps_of(np.flatnonzero(visible))[1] // 16).tolist())
    action_chunks = {c for name, lo, hi in reads if name == "steps/actions"
                     for c in range(lo // 16, -(-hi // 16))}  # fmt: skip
    assert action_chunks == visible_chunks  # the pseudo-labelled episodes' were never read
    report = result.idm.provenance["self_training"]
    assert 0 < report["candidate_steps"] <= SELF.self_train_steps
    assert abs(report["kept_steps"] - 0.5 * report["candidate_steps"]) <= 1
    steps = [h["step"] for h in result.history]
    assert steps == sorted(steps) and steps[-1] > report["supervised_steps"]
    # the supervised phase is the plain supervised run, step for step
    assert result.history[: len(supervised.history)] == supervised.history
    assert report["supervised_steps"] == supervised.history[-1]["step"]
    best = result.idm.provenance["best_step"]
    assert report["kept_weights"] == (best > report["supervised_steps"])
    if not report["kept_weights"]:  # no lower validation NLL: the supervised weights
        for name, weights in supervised.idm.network.state_dict().items():
            assert torch.equal(weights, result.idm.network.state_dict()[name]), name
    else:
        assert result.idm.provenance["best_val_nll"] < supervised.idm.provenance["best_val_nll"]


def test_idm_train_cli_self_trains_and_says_so(tmp_path) -> None:
    path = make_dynamics_store(tmp_path / "store", seed=5)
    done = CliRunner().invoke(cli, [
        "idm", "train", str(path), "--split", "half", "--out", str(tmp_path / "idm"),
        "--hidden", "32,32", "--members", "2", "--max-steps", "60", "--eval-every", "20",
        "--batch-size", "128", "--self-train-fraction", "0.3", "--quiet",
    ])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "self-training:" in done.output and "pseudo-labelled steps" in done.output
    config = load_idm(tmp_path / "idm").provenance["config"]
    assert config["self_train_fraction"] == 0.3 and config["self_train_weight"] == 0.5
    bad = CliRunner().invoke(cli, [
        "idm", "train", str(path), "--split", "half", "--out", str(tmp_path / "idm2"),
        "--self-train-fraction", "1.5",
    ])  # fmt: skip
    assert bad.exit_code == 2 and "--self-train-fraction" in bad.output
