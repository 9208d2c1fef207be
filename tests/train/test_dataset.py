"""The selection rule (modes, filters, empty results) and the in-RAM training data."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from ssorl_train.dataset import TrainingData, load_d4rl_hdf5, load_training_data, select_actions
from ssorl_train.errors import EmptyTrainingDataError, MissingRelabelError, TrainingDataError

# three episodes of 2, 3, 1 steps; episode 1 has no recorded actions
LENGTHS = np.array([2, 3, 1])
RECORDED = np.array([[1.0], [2.0], [np.nan], [np.nan], [np.nan], [6.0]], np.float32)
MASK = ~np.isnan(RECORDED[:, 0])
PROXY = np.array([[-1.0], [-2.0], [-3.0], [-4.0], [-5.0], [-6.0]], np.float32)
UNCERTAINTY = np.array([0.0, 0.0, 0.3, 0.1, 0.2, 0.0], np.float32)


def test_full_mode_takes_every_recorded_action_and_ignores_the_split() -> None:
    s = select_actions(RECORDED, MASK, [False, False, False], LENGTHS, "full")
    assert s.step_mask.tolist() == [True, True, False, False, False, True]
    assert s.actions[:, 0].tolist() == [1.0, 2.0, 0.0, 0.0, 0.0, 6.0]
    assert (s.n_recorded, s.n_proxy, s.step_weight) == (3, 0, None)


def test_labelled_only_keeps_recorded_actions_of_visible_episodes() -> None:
    s = select_actions(RECORDED, MASK, [True, True, False], LENGTHS, "labelled-only")
    assert s.step_mask.tolist() == [True, True, False, False, False, False]
    assert (s.n_recorded, s.n_proxy) == (2, 0)


def test_semi_supervised_fills_hidden_and_missing_actions_with_proxies() -> None:
    s = select_actions(RECORDED, MASK, [True, True, False], LENGTHS, "semi-supervised", PROXY)
    assert s.step_mask.all()
    assert s.actions[:, 0].tolist() == [1.0, 2.0, -3.0, -4.0, -5.0, -6.0]
    assert (s.n_recorded, s.n_proxy) == (2, 4)


def test_drop_uncertain_removes_the_most_uncertain_proxy_steps_only() -> None:
    s = select_actions(
        RECORDED,
        MASK,
        [True, True, False],
        LENGTHS,
        "semi-supervised",
        PROXY,
        UNCERTAINTY,
        drop_uncertain=0.5,
    )
    # proxies on steps 2..5 with u = .3 .1 .2 0: half of 4 -> drop steps 2 and 4
    assert s.step_mask.tolist() == [True, True, False, True, False, True]
    assert s.n_proxy == 2


def test_uncertainty_weights_are_relative_to_the_median_and_recorded_steps_weigh_one() -> None:
    s = select_actions(
        RECORDED,
        MASK,
        [True, True, False],
        LENGTHS,
        "semi-supervised",
        PROXY,
        UNCERTAINTY,
        weight_beta=1.0,
    )
    median = 0.15  # of .3 .1 .2 0
    expected = [1.0, 1.0, np.exp(-0.3 / median), np.exp(-0.1 / median), np.exp(-0.2 / median), 1.0]
    np.testing.assert_allclose(s.step_weight, expected, rtol=1e-6)


def test_semi_supervised_without_proxies_says_how_to_get_them() -> None:
    with pytest.raises(MissingRelabelError, match="relabel"):
        select_actions(RECORDED, MASK, [True, True, True], LENGTHS, "semi-supervised")


def test_filters_without_uncertainty_are_refused() -> None:
    with pytest.raises(MissingRelabelError, match="uncertainty"):
        select_actions(
            RECORDED, MASK, [True] * 3, LENGTHS, "semi-supervised", PROXY, drop_uncertain=0.1
        )


def test_a_mode_leaving_no_step_is_an_error_that_names_the_mode() -> None:
    with pytest.raises(EmptyTrainingDataError, match="labelled-only"):
        select_actions(RECORDED, MASK, [False, True, False], LENGTHS, "labelled-only")


def test_incomplete_relabel_run_is_refused() -> None:
    proxy = PROXY.copy()
    proxy[3] = np.nan
    with pytest.raises(TrainingDataError, match="incomplete"):
        select_actions(RECORDED, MASK, [True] * 3, LENGTHS, "semi-supervised", proxy)


def test_from_arrays_checks_the_t_plus_one_layout() -> None:
    with pytest.raises(TrainingDataError, match="observations"):
        TrainingData.from_arrays(
            np.zeros((6, 2)), np.zeros((6, 1)), np.zeros(6), np.zeros(6), LENGTHS
        )


def test_from_selection_keeps_mask_counts_and_zeroed_actions() -> None:
    s = select_actions(RECORDED, MASK, [True, False, True], LENGTHS, "semi-supervised", PROXY)
    data = TrainingData.from_selection(
        np.arange(18.0).reshape(9, 2), np.zeros(6), np.zeros(6), LENGTHS, s
    )
    assert data.step_start.tolist() == [0, 2, 5]
    assert (data.n_recorded, data.n_proxy) == (3, 3)
    assert data.actions[:, 0].tolist() == [1.0, 2.0, -3.0, -4.0, -5.0, 6.0]
    assert data.action_low.tolist() == [-5.0] and data.action_high.tolist() == [6.0]


def test_from_arrays_zeroes_actions_of_unusable_steps() -> None:
    s = select_actions(RECORDED, MASK, [True] * 3, LENGTHS, "labelled-only")
    data = TrainingData.from_arrays(
        np.zeros((9, 2)), RECORDED, np.zeros(6), np.zeros(6), LENGTHS, step_mask=s.step_mask
    )
    assert data.actions[:, 0].tolist() == [1.0, 2.0, 0.0, 0.0, 0.0, 6.0]
    assert int(data.step_mask.sum()) == data.n_recorded == 3


def test_degenerate_action_bounds_are_refused() -> None:
    with pytest.raises(TrainingDataError, match="action_high > action_low"):
        TrainingData.from_arrays(
            np.zeros((9, 2)), np.ones((6, 1)), np.zeros(6), np.zeros(6), LENGTHS
        )


def _write_d4rl(path, n_steps: int = 7) -> tuple[np.ndarray, np.ndarray]:
    obs = np.arange(n_steps * 2, dtype=np.float32).reshape(n_steps, 2)
    next_obs = obs + 100
    terminals = np.zeros(n_steps, bool)
    terminals[2] = True  # episodes [0, 3), [3, 7) (the file's end closes the last)
    with h5py.File(path, "w") as f:
        f["observations"], f["next_observations"] = obs, next_obs
        f["actions"] = np.linspace(-1, 1, n_steps, dtype=np.float32)[:, None]
        f["rewards"] = np.ones(n_steps, np.float32)
        f["terminals"], f["timeouts"] = terminals, np.zeros(n_steps, bool)
    return obs, next_obs


def test_d4rl_file_becomes_t_plus_one_rows_per_episode(tmp_path) -> None:
    obs, next_obs = _write_d4rl(tmp_path / "d.hdf5")
    data = load_d4rl_hdf5(tmp_path / "d.hdf5")
    assert data.lengths.tolist() == [3, 4]
    expected = np.concatenate([obs[:3], next_obs[2:3], obs[3:], next_obs[6:7]])
    np.testing.assert_array_equal(data.observations.numpy(), expected)
    assert data.terminations.tolist() == [False, False, True, False, False, False, False]


def test_hdf5_training_data_refuses_modes_it_cannot_serve(tmp_path) -> None:
    _write_d4rl(tmp_path / "d.hdf5")
    with pytest.raises(TrainingDataError, match="labelled-only"):
        load_training_data(tmp_path / "d.hdf5", "labelled-only", split="s")
