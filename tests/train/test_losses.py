"""Each algorithm's loss on tiny cases computed by hand."""

from __future__ import annotations

import math

import torch

from ssorl_train.algos.cql import cql_penalty
from ssorl_train.algos.dt import masked_action_mse
from ssorl_train.algos.iql import awr_loss, expectile_loss
from ssorl_train.algos.td3bc import td3bc_actor_loss
from ssorl_train.common import soft_update


def test_td3bc_actor_loss_balances_q_by_its_mean_magnitude() -> None:
    q = torch.tensor([2.0, -4.0])  # mean -1, mean |Q| 3 -> lambda = 2.5 / 3
    pi = torch.tensor([[0.5], [0.0]])
    a = torch.tensor([[0.0], [1.0]])  # MSE = (0.25 + 1) / 2
    expected = -(2.5 / 3) * (-1.0) + 0.625
    assert math.isclose(td3bc_actor_loss(q, pi, a, 2.5).item(), expected, rel_tol=1e-6)


def test_td3bc_lambda_is_not_differentiated() -> None:
    q = torch.tensor([2.0, 4.0], requires_grad=True)
    td3bc_actor_loss(q, torch.zeros(2, 1), torch.zeros(2, 1), 3.0).backward()
    # d/dq of -(3 / 3) * mean(q) only
    assert torch.allclose(q.grad, torch.tensor([-0.5, -0.5]))


def test_expectile_loss_weights_positive_errors_by_the_expectile() -> None:
    diff = torch.tensor([2.0, -1.0])
    assert math.isclose(expectile_loss(diff, 0.7).item(), (0.7 * 4 + 0.3 * 1) / 2, rel_tol=1e-6)
    assert math.isclose(expectile_loss(diff, 0.5).item(), 0.5 * (4 + 1) / 2, rel_tol=1e-6)


def test_awr_loss_clips_the_exponentiated_advantage() -> None:
    log_prob = torch.tensor([-1.0, -2.0])
    adv = torch.tensor([0.0, 10.0])  # exp(3 * 10) is clipped to 100
    assert math.isclose(awr_loss(log_prob, adv, 3.0, 100.0).item(), (1 + 200) / 2, rel_tol=1e-6)


def test_cql_penalty_is_logsumexp_minus_data_q() -> None:
    sampled = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    data = torch.tensor([0.0, 1.0])
    assert math.isclose(cql_penalty(sampled, data, 1.0).item(), math.log(2), rel_tol=1e-6)
    # temperature 2: 2 * log(e^0 + e^0) - 0 for the first row; the same for the second
    assert math.isclose(cql_penalty(sampled, data, 2.0).item(), 2 * math.log(2), rel_tol=1e-6)


def test_dt_action_mse_ignores_masked_positions() -> None:
    pred = torch.zeros(1, 3, 2)
    target = torch.tensor([[[1.0, 1.0], [5.0, 5.0], [0.0, 2.0]]])
    mask = torch.tensor([[True, False, True]])
    # (1 + 1 + 0 + 4) / (2 positions * 2 dims)
    assert math.isclose(masked_action_mse(pred, target, mask).item(), 1.5, rel_tol=1e-6)


def test_soft_update_moves_targets_by_tau() -> None:
    target, source = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    with torch.no_grad():
        target.weight.fill_(0.0)
        source.weight.fill_(1.0)
    soft_update(target, source, 0.25)
    assert target.weight.item() == 0.25
