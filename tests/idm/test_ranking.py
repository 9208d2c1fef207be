"""Uncertainty that points at wrong labels: ranks, AUROC, Spearman, the definitions, and the
figures `idm eval` and relabel runs report."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ssorl_data.errors import InvalidArgumentError, RelabelExistsError
from ssorl_data.idm import evaluate_idm, load_idm
from ssorl_data.idm.evaluate import predict_windows
from ssorl_data.idm.model import (
    DEFAULT_UNCERTAINTY,
    UNCERTAINTY_DEFINITIONS,
    _tanh_moments,
    uncertainties,
)
from ssorl_data.idm.ranking import (
    RankingSample,
    auroc,
    average_ranks,
    ranking_metrics,
    spearman,
    step_errors,
    worst_errors,
)
from ssorl_data.idm.windows import RangeWindows
from ssorl_data.relabel import relabel, relabel_store
from ssorl_data.store import TrajectoryStore
from ssorl_train.cli.main import cli


def brute_ranks(values):
    """Rank of each value: 1 + (number below) + (number equal, others) / 2."""
    values = list(values)
    return np.array(
        [1 + sum(w < v for w in values) + (sum(w == v for w in values) - 1) / 2 for v in values]
    )


def brute_pearson(x, y):
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))


@pytest.mark.parametrize("seed", range(5))
def test_average_ranks_and_spearman_match_a_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, size=40).astype(float)  # many ties
    y = x + rng.integers(-3, 4, size=40)
    np.testing.assert_allclose(average_ranks(x), brute_ranks(x))
    assert spearman(x, y) == pytest.approx(brute_pearson(brute_ranks(x), brute_ranks(y)))


def test_spearman_limits():
    x = np.arange(10.0)
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert spearman(x, np.ones(10)) is None


@pytest.mark.parametrize("seed", range(5))
def test_auroc_is_the_pairwise_probability_with_ties_counted_half(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 5, size=30).astype(float)
    positive = rng.random(30) < 0.3
    pairs = list(itertools.product(scores[positive], scores[~positive]))
    expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert auroc(scores, positive) == pytest.approx(expected)


def test_auroc_limits_and_the_worst_fraction():
    error = np.arange(100.0)
    worst = worst_errors(error, 0.1)
    assert worst.sum() == 10 and worst[90:].all()
    assert auroc(error, worst) == 1.0 and auroc(-error, worst) == 0.0
    assert auroc(error, np.zeros(100, bool)) is None
    assert ranking_metrics(np.ones(100), error)["auroc_worst"] == 0.5
    assert ranking_metrics(np.empty(0), np.empty(0)) == {"auroc_worst": None, "spearman": None}


def test_step_errors_use_the_minus_one_to_one_scale():
    predicted, recorded = np.array([[1.0, 0.0]]), np.array([[0.0, 0.0]])
    # half-ranges 2 and 1: the error of dim 0 is (1/2)^2, averaged over 2 dims
    assert step_errors(predicted, recorded, np.array([2.0, 1.0]))[0] == pytest.approx(0.125)


def test_ranking_sample_is_bounded_and_independent_of_chunk_order():
    rng = np.random.default_rng(0)
    steps = np.arange(10_000)
    error = rng.random(10_000)
    uncertainty = np.stack([error + rng.normal(0, 0.1, 10_000), rng.random(10_000)], 1)
    forward, backward = RankingSample(10_000, 2, 1000), RankingSample(10_000, 2, 1000)
    for lo in range(0, 10_000, 700):
        forward.add(steps[lo : lo + 700], uncertainty[lo : lo + 700], error[lo : lo + 700])
    for lo in reversed(range(0, 10_000, 700)):
        backward.add(steps[lo : lo + 700], uncertainty[lo : lo + 700], error[lo : lo + 700])
    assert sum(e.size for e in forward.error) == 1000
    assert forward.metrics() == backward.metrics()
    informative, noise = forward.metrics()
    assert informative["auroc_worst"] > 0.9 and abs(noise["auroc_worst"] - 0.5) < 0.1
    assert RankingSample(0, 2).metrics() == [{"auroc_worst": None, "spearman": None}] * 2


def test_tanh_moments_match_monte_carlo():
    """Up to the largest std the network can give (e^2), where Gauss-Hermite was 0.1 off."""
    mean = torch.tensor([0.0, 0.8, -1.5, 2.0, 0.5, 3.0])
    log_std = torch.tensor([-2.0, -0.5, 0.3, 1.0, 2.0, 2.0])
    first, variance = _tanh_moments(mean, log_std)
    noise = torch.randn(1_000_000, 6, generator=torch.Generator().manual_seed(0))
    draws = torch.tanh(mean + log_std.exp() * noise)
    torch.testing.assert_close(first, draws.mean(0), atol=4e-3, rtol=0)
    torch.testing.assert_close(variance, draws.var(0), atol=4e-3, rtol=0)


def test_uncertainty_definitions():
    torch.manual_seed(0)
    mean, log_std = torch.randn(5, 7, 3), torch.randn(5, 7, 3) - 1
    half = torch.tensor([1.0, 2.0, 0.5])
    got = uncertainties(mean, log_std, half, UNCERTAINTY_DEFINITIONS)
    epistemic = (torch.tanh(mean) * half).var(0, correction=0)  # the old definition, per dim
    torch.testing.assert_close(got[:, 0], epistemic.mean(-1))
    torch.testing.assert_close(got[:, 1], epistemic.amax(-1))
    assert (got[:, 2] > got[:, 0]).all() and (got[:, 3] >= got[:, 2]).all()
    # members that agree exactly leave only their own variance
    same = uncertainties(mean[:1].expand(5, -1, -1), log_std[:1].expand(5, -1, -1), half,
                         ("epistemic-mean", "total-mean"))  # fmt: skip
    assert torch.all(same[:, 0] == 0) and (same[:, 1] > 0).all()
    with pytest.raises(InvalidArgumentError, match="total-mean"):
        uncertainties(mean, log_std, half, ("mixture",))


def _val_steps(store, idm):
    table = store.episode_table()
    val = np.zeros(table.n_episodes, bool)
    val[idm.provenance["val_episodes"]] = True
    return np.flatnonzero(val[table.episode_of_step(0, store.n_steps)])


def test_eval_reports_ranking_on_the_held_out_episodes_as_computed_directly(trained):
    """The figures equal AUROC/Spearman computed from one whole-store forward pass."""
    idm = load_idm(trained[1])
    with TrajectoryStore.open(trained[0]) as store:
        result = evaluate_idm(idm, store, compare_uncertainty=True)
        builder = RangeWindows(store.episode_table(), idm.spec.k, idm.mean, idm.std,
                               store.n_steps, idm.spec.obs_dim)  # fmt: skip
        lo, hi = builder.rows(0, store.n_steps)
        windows, _ = builder.build(store.read_observations(lo, hi), 0, store.n_steps)
        actions, spread, _ = predict_windows(idm, windows, 64, None, UNCERTAINTY_DEFINITIONS)
        steps = _val_steps(store, idm)
        recorded = store.read_steps("actions", 0, store.n_steps)[steps]
    error = step_errors(actions[steps], recorded, np.ones(2))
    for column, definition in enumerate(UNCERTAINTY_DEFINITIONS):
        want = ranking_metrics(spread[steps, column], error)
        suffix = definition.replace("-", "_")
        assert result[f"val_uncertainty_auroc_{suffix}"] == pytest.approx(want["auroc_worst"])
        assert result[f"val_uncertainty_spearman_{suffix}"] == pytest.approx(want["spearman"])
    default = DEFAULT_UNCERTAINTY.replace("-", "_")
    assert result["uncertainty_definition"] == DEFAULT_UNCERTAINTY
    assert result["val_uncertainty_auroc"] == result[f"val_uncertainty_auroc_{default}"]


def test_idm_eval_cli_prints_the_ranking(trained):
    runner = CliRunner()
    out = runner.invoke(cli, ["idm", "eval", str(trained[0]), "--idm", str(trained[1]), "--json",
                              "--uncertainty", "total-max"])  # fmt: skip
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert result["uncertainty_definition"] == "total-max"
    assert 0.0 <= result["val_uncertainty_auroc"] <= 1.0
    text = runner.invoke(cli, ["idm", "eval", str(trained[0]), "--idm", str(trained[1])])
    assert "val_uncertainty_spearman" in text.output
    bad = runner.invoke(cli, ["idm", "eval", str(trained[0]), "--idm", str(trained[1]),
                              "--uncertainty", "mixture"])  # fmt: skip
    assert bad.exit_code == 2 and "total-max" in bad.output


def test_relabel_records_the_definition_and_ranks_on_the_idm_held_out_episodes(trained, store_copy):
    idm = load_idm(trained[1])
    idm.provenance["store"] = str(store_copy.resolve())  # as if trained on the copy
    with TrajectoryStore.open(store_copy, mode="a") as store:
        result = relabel_store(store, idm, "r", progress=False, uncertainty="total-max")
        run = store.relabel_run("r")
        attrs, stored = run.attrs, run.read("uncertainty", 0, run.n_steps)
        steps = _val_steps(store, idm)
        recorded = store.read_steps("actions", 0, store.n_steps)[steps]
        proxy = run.read("actions", 0, run.n_steps)[steps]
    assert attrs["uncertainty"] == "total-max"
    metrics = result.metrics
    want = ranking_metrics(stored[steps], step_errors(proxy, recorded, np.ones(2)))
    assert metrics["val_uncertainty_auroc"] == pytest.approx(want["auroc_worst"])
    assert metrics["val_uncertainty_spearman"] == pytest.approx(want["spearman"])
    assert metrics["uncertainty_definition"] == "total-max"
    assert "hidden_uncertainty_auroc" in metrics


def test_relabel_refuses_another_definition_for_a_partial_run_and_unknown_names(
    trained, store_copy
):
    relabel(store_copy, trained[1], "r", progress=False, uncertainty="epistemic-mean")
    with TrajectoryStore.open(store_copy, mode="a") as store:
        store.relabel_run("r")._group.attrs["status"] = "partial"  # as if killed
    with pytest.raises(RelabelExistsError, match="epistemic-mean"):
        relabel(store_copy, trained[1], "r", progress=False, uncertainty="total-max")
    with pytest.raises(InvalidArgumentError, match="Unknown uncertainty"):
        relabel(store_copy, trained[1], "other", progress=False, uncertainty="mixture")
    with TrajectoryStore.open(store_copy) as store:
        assert "other" not in store.list_relabels()
