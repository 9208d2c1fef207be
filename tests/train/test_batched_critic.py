"""Twin critics as one batched module (issue 14): the same maths as two MLPs, the same
initial weights, the published hyperparameters, and old ModuleList checkpoints still load."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from ssorl_train.algos import make_algorithm, make_config
from ssorl_train.algos.renames import TWIN_CRITICS, batched_critics
from ssorl_train.checkpoint import load_checkpoint, save_checkpoint
from ssorl_train.common import BatchedMLP, mlp, q_values, twin_critic
from ssorl_train.evaluate import load_policy
from tests.train.test_loop import SMALL, _run, _tensors

FIXTURES = Path(__file__).parent / "fixtures" / "before_batched_critics"


def test_batched_critic_gives_the_q_values_and_gradients_of_two_mlps() -> None:
    torch.manual_seed(0)
    mlps = [mlp(14, 1, 32, 3) for _ in range(2)]
    critic = BatchedMLP(mlps)
    x = torch.randn(5, 7, 14, requires_grad=True)  # any leading shape, as CQL's [B, n, .]
    x_separate = x.detach().clone().requires_grad_(True)
    q = critic(x)  # [2, 5, 7]
    q_separate = torch.stack([m(x_separate).squeeze(-1) for m in mlps])
    torch.testing.assert_close(q, q_separate, rtol=1e-5, atol=1e-6)
    weights = torch.randn_like(q)  # a loss that weighs every output differently
    (q * weights).sum().backward()
    (q_separate * weights).sum().backward()
    torch.testing.assert_close(x.grad, x_separate.grad, rtol=1e-5, atol=1e-6)
    for layer, index in zip(critic.layers, (0, 2, 4, 6), strict=True):
        for member, net in enumerate(mlps):
            linear = net[index]
            torch.testing.assert_close(layer.weight.grad[member], linear.weight.grad.T)
            torch.testing.assert_close(layer.bias.grad[member, 0], linear.bias.grad)
    first = critic(x, members=1)
    torch.testing.assert_close(first[0], q_separate[0], rtol=1e-5, atol=1e-6)


def test_twin_critic_draws_the_initial_weights_of_two_mlps() -> None:
    """Same seed, same weights as the ModuleList critics had: runs start where they did."""
    torch.manual_seed(3)
    critic = twin_critic(11, 3, 64, 2)
    after = torch.rand(1)  # and the RNG is left where two mlp() calls leave it
    torch.manual_seed(3)
    mlps = [mlp(14, 1, 64, 2) for _ in range(2)]
    assert torch.equal(after, torch.rand(1))
    for layer, index in zip(critic.layers, (0, 2, 4), strict=True):
        for member, net in enumerate(mlps):
            assert torch.equal(layer.weight[member], net[index].weight.T)
            assert torch.equal(layer.bias[member, 0], net[index].bias)


# the published settings (module docstrings: TD3+BC and IQL papers, CORL's cql.py, DT paper)
PUBLISHED = {
    "td3bc": {"alpha": 2.5, "actor_lr": 3e-4, "critic_lr": 3e-4, "batch_size": 256,
              "gamma": 0.99, "tau": 0.005, "policy_noise": 0.2, "noise_clip": 0.5,
              "policy_freq": 2, "hidden_dim": 256},
    "iql": {"expectile": 0.7, "temperature": 3.0, "max_weight": 100.0, "actor_lr": 3e-4,
            "value_lr": 3e-4, "critic_lr": 3e-4, "batch_size": 256, "gamma": 0.99,
            "tau": 0.005, "hidden_dim": 256},
    "cql": {"cql_alpha": 10.0, "cql_n_actions": 10, "cql_temperature": 1.0, "actor_lr": 3e-5,
            "critic_lr": 3e-4, "batch_size": 256, "gamma": 0.99, "tau": 0.005,
            "hidden_dim": 256, "n_layers": 3, "log_std_offset": -1.0},
    "dt": {"context": 20, "hidden_dim": 128, "n_layers": 3, "n_heads": 1, "dropout": 0.1,
           "lr": 1e-4, "weight_decay": 1e-4, "warmup_steps": 10_000, "grad_clip": 0.25,
           "batch_size": 64, "return_scale": 1e-3, "max_episode_steps": 1000,
           "target_return": None},
}  # fmt: skip


@pytest.mark.parametrize("algo", sorted(PUBLISHED))
def test_published_hyperparameters_are_unchanged(algo) -> None:
    assert asdict(make_config(algo)) == PUBLISHED[algo]
    algorithm = make_algorithm(algo, make_config(algo), 11, 3, torch.device("cpu"))
    optimizers = [v for v in vars(algorithm).values() if isinstance(v, torch.optim.Optimizer)]
    for optimizer in optimizers:  # Adam/AdamW with their default betas and eps
        for group in optimizer.param_groups:
            assert group["betas"] == (0.9, 0.999) and group["eps"] == 1e-8
            assert not group["amsgrad"]


@pytest.mark.parametrize("algo", ["td3bc", "cql"])
def test_a_checkpoint_written_by_the_modulelist_code_evaluates_and_resumes(
    algo, make_data, tmp_path
) -> None:
    """The fixture was written by the code before the batched critics (see its README)."""
    expected = json.loads((FIXTURES / algo / "expected.json").read_text())
    obs, actions = torch.tensor(expected["obs"]), torch.tensor(expected["actions"])
    algorithm, _, _ = load_policy(FIXTURES / algo)
    assert isinstance(algorithm.critic, BatchedMLP) and algorithm.step == 4
    with torch.no_grad():
        q = q_values(algorithm.critic, obs, actions)
        q_target = q_values(algorithm.critic_target, obs, actions)
    torch.testing.assert_close(q, torch.tensor(expected["critic"]), rtol=1e-5, atol=1e-6)
    assert not torch.equal(q, q_target)  # the target was read as the target, not the critic
    # Not bit for bit: the fixture's numbers came from another CPU, whose BLAS kernels
    # round differently (an AMD EPYC differs from the writer's machine by 3e-8).
    torch.testing.assert_close(algorithm.act(obs), torch.tensor(expected["act"]))

    run = tmp_path / "run"
    shutil.copytree(FIXTURES / algo, run)
    (run / "expected.json").unlink()
    data = make_data(episode_lengths=(20, 9, 25))  # the data the fixture trained on
    summary = _run(data, algo, run, steps=8, resume=True)
    assert summary["steps"] == 8 and summary["steps_this_process"] == 4
    state, _ = load_checkpoint(run / "checkpoint")
    moments = state["algorithm"]["critic_opt"]["state"]
    assert sorted(moments) == list(range(len(list(algorithm.critic.parameters()))))
    assert all(torch.isfinite(t).all() for _, t in _tensors(state["algorithm"]))


def _as_module_lists(algo: str, algorithm: dict) -> dict:
    """The inverse of `batched_critics`: today's state in the ModuleList layout of before."""
    modules, optimizer = TWIN_CRITICS[algo]
    old = dict(algorithm)
    for name in modules:
        new = algorithm[name]
        layers = len(new) // 2
        old[name] = {
            f"{m}.{2 * i}.{kind}": (
                new[f"layers.{i}.weight"][m].T.contiguous()
                if kind == "weight"
                else new[f"layers.{i}.bias"][m, 0].clone()
            )
            for m in range(2)
            for i in range(layers)
            for kind in ("weight", "bias")
        }
    saved = algorithm[optimizer]
    per_member = 2 * layers  # tensors of one member, in parameter order
    state = {}
    for n, moments in saved["state"].items():
        for m in range(2):
            state[m * per_member + n] = {
                key: (
                    (value[m].T.contiguous() if n % 2 == 0 else value[m, 0].clone())
                    if value.dim()
                    else value.clone()
                )
                for key, value in moments.items()
            }
    (group,) = saved["param_groups"]
    params = list(range(2 * per_member))
    old[optimizer] = {"state": state, "param_groups": [group | {"params": params}]}
    return old


@pytest.mark.parametrize("algo", ["td3bc", "iql", "cql"])
def test_a_modulelist_layout_checkpoint_resumes_exactly(algo, make_data, tmp_path) -> None:
    data = make_data(episode_lengths=(20, 9, 25))
    _run(data, algo, tmp_path / "straight", steps=8)
    _run(data, algo, tmp_path / "old", steps=4)
    stem = tmp_path / "old" / "checkpoint"
    state, meta = load_checkpoint(stem)
    old = _as_module_lists(algo, state["algorithm"])
    assert batched_critics(algo, old).keys() == state["algorithm"].keys()
    save_checkpoint(stem, state | {"algorithm": old}, meta)
    written = json.loads(stem.with_suffix(".json").read_text())["state"]
    critic_keys = dict(
        dict(dict(written["__dict__"])["algorithm"]["__dict__"])["critic"]["__dict__"]
    )
    assert "0.0.weight" in critic_keys  # the old layout is what was written
    _run(data, algo, tmp_path / "old", steps=8, resume=True)
    straight, _ = load_checkpoint(tmp_path / "straight" / "checkpoint")
    resumed, _ = load_checkpoint(stem)
    pairs = dict(_tensors(straight))
    assert pairs.keys() == dict(_tensors(resumed)).keys()
    for name, tensor in _tensors(resumed):
        assert torch.equal(tensor, pairs[name]), name


def test_cql_evaluates_data_and_sampled_actions_in_one_critic_pass(monkeypatch) -> None:
    """One forward of the critic for Q(s, a) and the 3n proposals, one of the target."""
    config = make_config("cql", SMALL["cql"])
    algorithm = make_algorithm("cql", config, 3, 2, torch.device("cpu"))
    calls = []
    real = BatchedMLP.forward

    def counting(self, x, members=None):
        calls.append((self is algorithm.critic_target, tuple(x.shape)))
        return real(self, x, members)

    monkeypatch.setattr(BatchedMLP, "forward", counting)
    b = config.batch_size
    batch = {"observations": torch.randn(b, 3), "actions": torch.rand(b, 2) * 2 - 1,
             "next_observations": torch.randn(b, 3), "rewards": torch.randn(b),
             "dones": torch.zeros(b)}  # fmt: skip
    algorithm.update(batch)
    n = config.cql_n_actions
    # the actor's Q(s, pi(s)), the target's Q(s', a'), then data + proposals together
    assert calls == [(False, (b, 5)), (True, (b, 5)), (False, (b, 1 + 3 * n, 5))]
