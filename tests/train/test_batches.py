"""Transition and sub-trajectory batches: the right rows, only usable steps, seeded."""

from __future__ import annotations

import numpy as np
import torch

from ssorl_train.batches import DTBatchSampler, TransitionSampler

CPU = torch.device("cpu")


def test_transitions_pair_each_step_with_its_own_next_observation(tiny_data) -> None:
    sampler = TransitionSampler(tiny_data, 64, seed=0, device=CPU)
    norm = tiny_data.normalizer()
    batch = sampler.sample()
    obs = norm.observations(tiny_data.observations)
    # find each sampled step by its observation row and check s' is the next row
    for o, n in zip(batch["observations"], batch["next_observations"], strict=True):
        row = int(torch.nonzero((obs == o).all(1))[0])
        assert torch.equal(obs[row + 1], n)
    assert batch["dones"].dtype == torch.float32


def test_same_seed_gives_same_batches_and_state_restores_the_stream(tiny_data) -> None:
    a = TransitionSampler(tiny_data, 8, seed=3, device=CPU)
    b = TransitionSampler(tiny_data, 8, seed=3, device=CPU)
    first_a, first_b = a.sample(), b.sample()
    assert all(torch.equal(first_a[k], first_b[k]) for k in first_a)
    state = a.state_dict()
    second = a.sample()
    a.load_state_dict(state)
    again = a.sample()
    assert all(torch.equal(second[k], again[k]) for k in second)
    assert not torch.equal(second["observations"], first_a["observations"])


def test_masked_and_zero_weight_steps_are_never_drawn(make_data) -> None:
    mask = np.ones(34, bool)
    mask[:10] = False
    weight = np.ones(34, np.float32)
    weight[20:] = 0.0
    weight[19] = 5.0
    data = make_data(step_mask=mask, step_weight=weight)
    samplers = [TransitionSampler(data, 256, seed=s, device=CPU) for s in range(4)]
    steps = torch.cat([sampler.steps.sample(256)[1] for sampler in samplers])
    assert steps.min() >= 10 and steps.max() <= 19
    # step 19 weighs 5 of 14: about 36% of 1024 draws
    assert 250 < int((steps == 19).sum()) < 480


def test_subtrajectory_windows_are_left_padded_and_mask_unusable_steps(make_data) -> None:
    mask = np.ones(34, bool)
    mask[[14, 16]] = False  # episode 1 spans steps 12..18
    data = make_data(step_mask=mask)
    k = 5
    sampler = DTBatchSampler(data, 64, context=k, return_scale=1.0, seed=0, device=CPU)
    state = sampler.state_dict()
    _, steps = sampler.steps.sample(64)  # the starts of the next batch
    sampler.load_state_dict(state)
    batch = sampler.sample()
    assert mask[steps.numpy()].all()  # windows start at usable steps
    for row, step in enumerate(steps.tolist()):
        episode = int(np.searchsorted(data.step_start.numpy(), step, side="right") - 1)
        local = step - int(data.step_start[episode])
        real = min(k, int(data.lengths[episode]) - local)
        assert batch["mask"][row].tolist() == [False] * (k - real) + [True] * real
        assert batch["timesteps"][row, k - real :].tolist() == list(range(local, local + real))
        expected = [False] * (k - real) + [bool(mask[step + j]) for j in range(real)]
        assert batch["loss_mask"][row].tolist() == expected


def test_returns_to_go_restart_at_each_episode(tiny_data) -> None:
    sampler = DTBatchSampler(tiny_data, 4, context=3, return_scale=0.5, seed=0, device=CPU)
    r, rtg = tiny_data.rewards, sampler.windows.returns_to_go
    assert torch.isclose(rtg[11], r[11] * 0.5)  # last step of episode 0
    assert torch.isclose(rtg[12], r[12:19].sum() * 0.5)  # first of episode 1
