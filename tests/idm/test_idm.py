"""IDM: the batched ensemble, training with early stopping, checkpoints, evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ssorl_data.errors import IdmCheckpointError, SpaceMismatchError
from ssorl_data.idm import checkpoint_hash, evaluate_idm, load_idm
from ssorl_data.idm.model import EnsembleLinear, IdmEnsemble, squashed_nll
from ssorl_data.store import TrajectoryStore
from tests.data.factories import make_store, random_batch


def test_batched_ensemble_layer_equals_a_loop_over_members():
    layer = EnsembleLinear(4, 5, 3)
    x = torch.randn(4, 7, 5)
    looped = torch.stack([x[m] @ layer.weight[m] + layer.bias[m] for m in range(4)])
    torch.testing.assert_close(layer(x), looped)


@pytest.mark.parametrize("shared_trunk", [True, False])
def test_members_of_the_ensemble_differ_and_shapes_hold(shared_trunk):
    torch.manual_seed(0)
    net = IdmEnsemble(9, 2, (16, 16), members=3, dropout=0.1, shared_trunk=shared_trunk).eval()
    mean, log_std = net(torch.randn(5, 9))
    assert mean.shape == log_std.shape == (3, 5, 2)
    assert not torch.allclose(mean[0], mean[1])
    assert (log_std >= -5).all() and (log_std <= 2).all()


def test_squashed_nll_is_the_density_of_tanh_of_a_gaussian():
    mean, log_std = torch.tensor([[[0.3]]]), torch.tensor([[[-0.5]]])
    a = torch.tensor([[0.2]])
    u = torch.atanh(a)
    expected = -(torch.distributions.Normal(0.3, np.exp(-0.5)).log_prob(u) - torch.log1p(-(a**2)))
    torch.testing.assert_close(squashed_nll(mean, log_std, a), expected.reshape(1, 1))


def test_beta_nll_weights_each_dimension_by_its_variance_held_constant():
    torch.manual_seed(0)
    mean = torch.randn(2, 4, 3, requires_grad=True)
    log_std = torch.randn(2, 4, 3).clamp(-2, 1).requires_grad_()
    a = torch.rand(4, 3) * 1.8 - 0.9
    torch.testing.assert_close(squashed_nll(mean, log_std, a, 0.0), squashed_nll(mean, log_std, a))
    # beta = 1: the mean's gradient is the squared error's, whatever the variance
    squashed_nll(mean, log_std, a, 1.0).sum().backward()
    torch.testing.assert_close(mean.grad, mean.detach() - torch.atanh(a))
    # beta = 0.5: the plain NLL's gradient times std, per dimension
    plain_mean = mean.detach().clone().requires_grad_()
    squashed_nll(plain_mean, log_std.detach(), a).sum().backward()
    half_mean = mean.detach().clone().requires_grad_()
    squashed_nll(half_mean, log_std.detach(), a, 0.5).sum().backward()
    torch.testing.assert_close(half_mean.grad, plain_mean.grad * torch.exp(log_std.detach()))


def test_training_learns_the_dynamics_and_restores_the_best_weights(trained):
    store_path, idm_dir = trained
    idm = load_idm(idm_dir)
    p = idm.provenance
    assert p["split"] == "half" and p["package_version"] and p["config"]["members"] == 3
    assert set(p["val_episodes"]).isdisjoint(p["train_episodes"])
    best = min(h["val_nll"] for h in p["history"])
    assert p["best_val_nll"] == best and p["best_step"] in [h["step"] for h in p["history"]]
    with TrajectoryStore.open(store_path) as store:
        result = evaluate_idm(idm, store)
    # The restored weights reproduce the best validation NLL.
    assert result["val_nll"] == pytest.approx(best, rel=1e-4, abs=1e-4)
    assert result["val_mse"] < 0.2 * result["val_action_variance"]
    assert result["hidden_mse"] < 0.2 * result["hidden_action_variance"]
    assert result["hidden_n_episodes"] + sum(store_visible(store_path)) == 60


def store_visible(path):
    with TrajectoryStore.open(path) as store:
        return store.read_split("half").visible


def test_checkpoint_round_trip_gives_identical_predictions(trained, tmp_path):
    from ssorl_data.idm import save_idm

    idm = load_idm(trained[1])
    copy = load_idm(save_idm(idm, tmp_path / "copy"))
    windows = torch.randn(6, idm.spec.k + 2, idm.spec.obs_dim)
    with torch.inference_mode():
        for a, b in zip(idm.predict(windows)[:2], copy.predict(windows)[:2], strict=True):
            assert torch.equal(a, b)
    assert checkpoint_hash(trained[1]) == checkpoint_hash(tmp_path / "copy")
    config = json.loads((tmp_path / "copy" / "config.json").read_text())
    assert config["obs_mean"] and config["action_low"] == [-1.0, -1.0] and config["k"] == 1


def test_checkpoint_refuses_other_spaces_and_broken_directories(trained, tmp_path):
    idm = load_idm(trained[1])
    batch = random_batch(np.random.default_rng(0), [3], obs_shape=(5,))
    make_store(tmp_path / "other", batch, obs_shape=(5,), act_shape=(2,))
    with TrajectoryStore.open(tmp_path / "other") as other:
        with pytest.raises(SpaceMismatchError, match=r"observation shape \(4,\)"):
            idm.check_store(other)
    with pytest.raises(IdmCheckpointError, match="no model.safetensors"):
        load_idm(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("model.safetensors", "provenance.json"):
        (broken / name).write_bytes((trained[1] / name).read_bytes())
    config = json.loads((trained[1] / "config.json").read_text())
    config["hidden"] = [8, 8]
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(IdmCheckpointError, match="do not fit config.json"):
        load_idm(broken)
