"""Samplers draw from the right step set and hand the kernels' output back in reused buffers."""

from __future__ import annotations

import re

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


def test_step_sampler_draws_in_proportion_to_weights_and_never_zero_weight_steps():
    table = Table([3, 4, 2], n_dim=1, n_act=1, seed=6)
    weights = np.zeros(table.n_steps, np.float32)
    weights[[1, 4, 8]] = [1.0, 3.0, 0.5]
    mask = np.ones(table.n_steps, bool)
    mask[8] = False  # the mask still applies to weighted steps
    sampler = StepSampler(table.step_start, table.lengths, step_mask=mask, weights=weights, seed=0)
    episodes, steps = sampler.sample(8000)
    counts = np.bincount(steps.numpy(), minlength=table.n_steps)
    assert set(np.flatnonzero(counts)) == {1, 4}
    assert 0.70 < counts[4] / 8000 < 0.80  # 3 of 4
    np.testing.assert_array_equal(episodes.numpy(), table.episode_of_step[steps.numpy()])


def test_step_sampler_refuses_bad_weights():
    table = Table([3], n_dim=1, n_act=1, seed=7)
    start, lengths = table.step_start, table.lengths
    with pytest.raises(KernelInputError, match="shape"):
        StepSampler(start, lengths, weights=np.ones(2))
    with pytest.raises(KernelInputError, match=">= 0"):
        StepSampler(start, lengths, weights=np.array([1.0, -1.0, 1.0]))
    with pytest.raises(KernelInputError, match="finite"):
        StepSampler(start, lengths, weights=np.array([1.0, np.nan, 1.0]))
    with pytest.raises(KernelInputError, match="positive weight"):
        StepSampler(start, lengths, weights=np.zeros(3))


@pytest.mark.parametrize("weighted", [False, True])
def test_step_sampler_state_round_trip_replays_the_stream(weighted: bool):
    table = Table([5, 4, 6], n_dim=1, n_act=1, seed=8)
    weights = np.linspace(0.1, 2.0, table.n_steps) if weighted else None
    mask = np.arange(table.n_steps) % 4 != 0
    a = StepSampler(table.step_start, table.lengths, step_mask=mask, weights=weights, seed=9)
    a.sample(20)
    state = a.state_dict()
    after = a.sample(64)
    # a fresh sampler with another seed picks up the saved stream exactly
    b = StepSampler(table.step_start, table.lengths, step_mask=mask, weights=weights, seed=10)
    b.load_state_dict(state)
    assert all(torch.equal(x, y) for x, y in zip(b.sample(64), after, strict=True))
    a.load_state_dict(state)
    assert all(torch.equal(x, y) for x, y in zip(a.sample(64), after, strict=True))


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


def test_subtrajectory_sampler_starts_only_at_masked_positive_weight_steps():
    table = Table([4, 6], n_dim=2, n_act=1, seed=11)
    mask = np.ones(table.n_steps, bool)
    mask[5] = False
    weights = np.zeros(table.n_steps)
    weights[[2, 5, 7]] = 1.0
    sampler = SubtrajectorySampler(
        table.observations, table.actions, table.step_start, table.lengths, context=3,
        batch_size=200, rewards=table.rewards, step_mask=mask, weights=weights, seed=0,
    )  # fmt: skip
    sampler.sample()
    starts = table.step_start[sampler.episode_index.numpy()] + sampler.start.numpy()
    assert set(starts.tolist()) == {2, 7}


def test_samplers_read_uint8_frames_in_place_and_match_reference(backend: str):
    """uint8 [R, h, w, c] frames are wrapped, not converted; batches are float32 [B, ., D]."""
    table = Table([1, 6, 3], n_dim=12, n_act=2, seed=12, obs_shape=(2, 2, 3), uint8=True)
    idm = IdmWindowSampler(
        table.observations, table.step_start, table.lengths, k=1, batch_size=24,
        mean=table.mean, std=table.std, actions=table.actions, seed=0, backend=backend,
    )  # fmt: skip
    assert idm.observations.dtype == torch.uint8
    assert idm.observations.data_ptr() == table.observations.ctypes.data  # no copy
    batch = idm.sample()
    assert batch.windows.shape == (24, 3, 12) and batch.windows.dtype == torch.float32
    want, want_valid = reference.idm_windows(
        table.observations, table.step_start, table.lengths, batch.episode_index.numpy(),
        batch.step_index.numpy(), table.mean, table.std, 1,
    )  # fmt: skip
    assert batch.windows.numpy().tobytes() == want.tobytes()
    np.testing.assert_array_equal(batch.valid.numpy(), want_valid)

    sub = SubtrajectorySampler(
        table.observations, table.actions, table.step_start, table.lengths, context=4,
        batch_size=16, rewards=table.rewards, mean=table.mean, std=table.std, seed=1,
        backend=backend,
    )  # fmt: skip
    assert sub.observations.data_ptr() == table.observations.ctypes.data
    got = sub.sample()
    assert got.states.shape == (16, 4, 12)
    rtg = reference.returns_to_go(table.rewards, table.step_start, table.lengths, 1.0)
    want = reference.subtrajectories(
        table.observations, table.actions, rtg, table.step_start, table.lengths,
        sub.episode_index.numpy(), sub.start.numpy(), table.mean, table.std, 4,
    )  # fmt: skip
    for g, w in zip(got, want, strict=True):
        assert g.numpy().tobytes() == w.tobytes()


@pytest.mark.parametrize(
    ("observations", "words"),
    [(np.zeros((5, 2)), "Got torch.float64 of shape (5, 2)"),
     (np.zeros(5, np.uint8), "Got torch.uint8 of shape (5,)")],
)  # fmt: skip
def test_samplers_refuse_other_observation_dtypes_and_1d_rows(observations, words: str):
    table = Table([2, 3], n_dim=2, n_act=1, seed=13)
    with pytest.raises(KernelInputError, match=re.escape(words)):
        IdmWindowSampler(observations, table.step_start, table.lengths, k=1, batch_size=2)
    with pytest.raises(KernelInputError, match="torch.float32 or torch.uint8"):
        SubtrajectorySampler(
            observations, table.actions, table.step_start, table.lengths, context=2,
            batch_size=2, rewards=table.rewards,
        )  # fmt: skip
