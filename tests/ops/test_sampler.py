"""Samplers draw from the right step set and hand the kernels' output back in reused buffers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssorl_data.errors import KernelInputError
from ssorl_data.sampler import IdmWindowSampler, StepSampler, SubtrajectorySampler

from . import reference
from .conftest import Table


def test_step_sampler_covers_all_steps_and_maps_episodes():
    table = Table([1, 5, 2, 3], n_dim=2, n_act=1, seed=0)
    episodes, steps = StepSampler(table.step_start, table.lengths, seed=0).sample(4000)
    assert episodes.dtype == steps.dtype == torch.int64
    assert set(steps.tolist()) == set(range(table.n_steps))
    np.testing.assert_array_equal(episodes.numpy(), table.episode_of_step[steps.numpy()])


def test_step_sampler_restricts_to_episodes_and_mask():
    table = Table([3, 4, 2], n_dim=2, n_act=1, seed=1)
    mask = np.zeros(table.n_steps, bool)
    mask[[0, 4, 5, 8]] = True
    sampler = StepSampler(table.step_start, table.lengths, episodes=[1, 2], step_mask=mask, seed=1)
    _, steps = sampler.sample(500)
    assert set(steps.tolist()) == {4, 5, 8}


def test_step_sampler_is_reproducible_with_a_seed():
    table = Table([3, 4], n_dim=1, n_act=1, seed=2)
    a = StepSampler(table.step_start, table.lengths, seed=7).sample(50)
    b = StepSampler(table.step_start, table.lengths, seed=7).sample(50)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_step_sampler_rejects_an_empty_step_set():
    table = Table([3], n_dim=1, n_act=1, seed=3)
    with pytest.raises(KernelInputError, match="non-empty step set"):
        StepSampler(table.step_start, table.lengths, step_mask=np.zeros(3, bool))


def test_idm_window_sampler_matches_reference_and_reuses_buffers(backend: str):
    table = Table([1, 6, 3], n_dim=3, n_act=2, seed=4)
    action_mask = np.arange(table.n_steps) % 3 != 0
    sampler = IdmWindowSampler(
        table.observations, table.step_start, table.lengths, k=2, batch_size=32,
        mean=table.mean, std=table.std, actions=table.actions, action_mask=action_mask,
        step_mask=action_mask, seed=0, backend=backend,
    )  # fmt: skip
    first = sampler.sample()
    pointer = first.windows.data_ptr()
    batch = sampler.sample()
    assert batch.windows.data_ptr() == pointer  # documented: overwritten by the next call
    steps, episodes = batch.step_index.numpy(), batch.episode_index.numpy()
    want, want_valid = reference.idm_windows(
        table.observations, table.step_start, table.lengths, episodes, steps, table.mean,
        table.std, 2,
    )  # fmt: skip
    assert batch.windows.numpy().tobytes() == want.tobytes()
    np.testing.assert_array_equal(batch.valid.numpy(), want_valid)
    np.testing.assert_array_equal(batch.actions.numpy(), table.actions[steps])
    assert batch.action_mask.all()


def test_subtrajectory_sampler_matches_reference(backend: str):
    table = Table([2, 7, 4], n_dim=2, n_act=3, seed=5)
    sampler = SubtrajectorySampler(
        table.observations, table.actions, table.step_start, table.lengths, context=5,
        batch_size=16, rewards=table.rewards, gamma=0.9, mean=table.mean, std=table.std,
        episodes=[0, 1], seed=0, backend=backend,
    )  # fmt: skip
    batch = sampler.sample()
    episodes, starts = sampler.episode_index.numpy(), sampler.start.numpy()
    assert set(episodes.tolist()) <= {0, 1}
    rtg = reference.returns_to_go(table.rewards, table.step_start, table.lengths, 0.9)
    want = reference.subtrajectories(
        table.observations, table.actions, rtg, table.step_start, table.lengths, episodes,
        starts, table.mean, table.std, 5,
    )  # fmt: skip
    for got, expected in zip(batch, want, strict=True):
        assert got.numpy().tobytes() == expected.tobytes()
