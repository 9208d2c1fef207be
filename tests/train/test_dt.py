"""Decision Transformer: attention ignores padding and the future; the actor's history;
GPT-2's initialisation and weight decay on Linear weights only."""

from __future__ import annotations

import torch

from ssorl_train.algos.dt import DecisionTransformer, DTConfig

CONFIG = DTConfig(context=4, hidden_dim=16, n_layers=2, n_heads=2, target_return=10.0)


def _model_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    states, actions = torch.randn(2, 4, 3, generator=g), torch.randn(2, 4, 2, generator=g)
    rtg, timesteps = torch.randn(2, 4, generator=g), torch.tensor([[0, 0, 5, 6], [1, 2, 3, 4]])
    mask = torch.tensor([[False, False, True, True], [True, True, True, True]])
    return states, actions, rtg, timesteps, mask


def test_predictions_ignore_padding_contents() -> None:
    dt = DecisionTransformer(CONFIG, 3, 2, torch.device("cpu"))
    dt.model.eval()
    states, actions, rtg, timesteps, mask = _model_inputs()
    before = dt.model(states, actions, rtg, timesteps, mask)
    states[0, :2], actions[0, :2], rtg[0, :2] = 100.0, -100.0, 55.0  # padding only
    after = dt.model(states, actions, rtg, timesteps, mask)
    assert torch.allclose(before[:, 2:], after[:, 2:], atol=1e-6)
    assert torch.isfinite(after).all()


def test_an_action_does_not_see_its_own_action_or_the_future() -> None:
    dt = DecisionTransformer(CONFIG, 3, 2, torch.device("cpu"))
    dt.model.eval()
    states, actions, rtg, timesteps, mask = _model_inputs()
    before = dt.model(states, actions, rtg, timesteps, mask)
    actions[1, 2:], states[1, 3] = 9.0, 9.0  # a_2, a_3 and s_3 of the full row
    after = dt.model(states, actions, rtg, timesteps, mask)
    assert torch.allclose(before[1, :3], after[1, :3], atol=1e-6)
    assert not torch.allclose(before[1, 3], after[1, 3])


def test_actor_keeps_a_left_padded_history_and_subtracts_rewards() -> None:
    dt = DecisionTransformer(CONFIG, 3, 2, torch.device("cpu"))
    actor = dt.start_episodes(num_envs=2, env_id="Hopper-v5")
    for t in range(5):
        actor.act(torch.full((2, 3), float(t)))
        actor.observe(torch.tensor([1.0, 2.0]))
    assert actor.mask.all() and actor.timesteps[0].tolist() == [1, 2, 3, 4]
    assert actor.states[0, :, 0].tolist() == [1.0, 2.0, 3.0, 4.0]
    # target 10 scaled by 1/1000, less the rewards seen before each step
    expected = [(10.0 - 1.0 * t) * 1e-3 for t in range(1, 5)]
    assert torch.allclose(actor.returns_to_go[0], torch.tensor(expected))
    assert torch.isclose(actor.current[1], torch.tensor((10.0 - 10.0) * 1e-3))


def test_weights_start_as_gpt2s_n_0_002_with_zero_biases() -> None:
    model = DecisionTransformer(DTConfig(), 11, 3, torch.device("cpu")).model  # published size
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    embeddings = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(linears) == 4 + 4 * 3 and embeddings and len(norms) == 2 + 2 * 3
    weights = torch.cat([m.weight.flatten() for m in linears + embeddings])
    assert abs(weights.std().item() - 0.02) < 2e-4 and abs(weights.mean().item()) < 1e-3
    for m in linears + embeddings:  # each one too, not only the pool (the smallest has 128)
        assert abs(m.weight.std().item() - 0.02) < 0.006, m
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in linears)
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in norms)
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in norms)


def test_weight_decay_applies_to_the_weights_of_linear_layers_only() -> None:
    dt = DecisionTransformer(CONFIG, 3, 2, torch.device("cpu"))
    decayed, undecayed = dt.optimizer.param_groups
    assert decayed["weight_decay"] == CONFIG.weight_decay > 0 and undecayed["weight_decay"] == 0
    linear_weights = {m.weight for m in dt.model.modules() if isinstance(m, torch.nn.Linear)}
    assert set(decayed["params"]) == linear_weights
    assert len(decayed["params"]) + len(undecayed["params"]) == len(list(dt.model.parameters()))
    assert set(undecayed["params"]) == set(dt.model.parameters()) - linear_weights


def test_a_checkpoint_with_one_parameter_group_loads_each_moment_onto_its_parameter() -> None:
    """Checkpoints written when AdamW decayed every parameter hold one group."""
    dt = DecisionTransformer(CONFIG, 3, 2, torch.device("cpu"))
    old = torch.optim.AdamW(dt.model.parameters(), lr=CONFIG.lr, weight_decay=CONFIG.weight_decay)
    sum((i + 1) * p.sum() for i, p in enumerate(dt.model.parameters())).backward()
    old.step()  # each parameter's moments now tell which parameter it is
    fresh = DecisionTransformer(CONFIG, 3, 2, torch.device("cpu"))
    fresh.load_state_dict(dt.state_dict() | {"optimizer": old.state_dict()})
    assert [g["weight_decay"] for g in fresh.optimizer.param_groups] == [CONFIG.weight_decay, 0.0]
    for p_old, p_new in zip(dt.model.parameters(), fresh.model.parameters(), strict=True):
        assert torch.equal(p_new, p_old)
        assert torch.equal(fresh.optimizer.state[p_new]["exp_avg"], old.state[p_old]["exp_avg"])
