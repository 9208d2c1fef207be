"""The selection rule (modes, filters, empty results) and the in-RAM training data."""

from __future__ import annotations

import numpy as np
import pytest

from ssorl_data.episodes import concat_batches
from ssorl_train.dataset import TrainingData, load_training_data, select_actions
from ssorl_train.errors import (
    EmptyTrainingDataError,
    MissingRelabelError,
    MissingSplitError,
    TrainingDataError,
)
from tests.data.factories import make_store, random_batch, random_episode

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


def test_store_view_full_and_labelled_only_modes(tmp_path) -> None:
    rng = np.random.default_rng(0)
    batch = random_batch(rng, [3, 4, 2], labelling="all")
    hidden = random_episode(rng, 5, labelling="none")
    make_store(tmp_path / "s", concat_batches([batch, hidden]), act_shape=(2,))
    full = load_training_data(tmp_path / "s", "full")
    assert (full.n_steps, full.n_episodes) == (14, 4)
    assert (full.n_recorded, full.n_proxy) == (9, 0)
    assert full.step_mask.tolist() == [True] * 9 + [False] * 5
    np.testing.assert_array_equal(full.observations.numpy()[:12], batch.observations)
    np.testing.assert_array_equal(full.actions.numpy()[:9], batch.actions)
    assert full.action_low.tolist() == [-1.0, -1.0]  # the store's action space
    with pytest.raises(MissingSplitError, match="--mode full"):  # it would equal full
        load_training_data(tmp_path / "s", "labelled-only")


def test_store_view_refuses_files_and_semi_supervised_without_relabel(tmp_path) -> None:
    with pytest.raises(TrainingDataError, match="ssorl data import"):
        load_training_data(tmp_path / "d.hdf5")
    make_store(tmp_path / "s", random_batch(np.random.default_rng(1), [3], labelling="none"))
    with pytest.raises(EmptyTrainingDataError):
        load_training_data(tmp_path / "s", "full")
    with pytest.raises(MissingRelabelError, match="ssorl relabel"):
        load_training_data(tmp_path / "s", "semi-supervised")


def test_store_view_semi_supervised_joins_split_and_relabel_run(tmp_path) -> None:
    from ssorl_data.store import TrajectoryStore

    rng = np.random.default_rng(2)
    batch = random_batch(rng, [4, 3, 5], labelling="all")
    make_store(tmp_path / "s", batch, chunk_steps=5)
    proxy = np.full((12, 2), 0.25, np.float32)
    uncertainty = np.linspace(0, 1, 12, dtype=np.float32)
    with TrajectoryStore.open(tmp_path / "s", mode="a") as store:
        store.write_split("one", np.array([False, True, False]), {"method": "explicit"})
        run = store.create_relabel("idm", {"idm": "test"})
        with pytest.raises(MissingRelabelError, match="not complete"):
            load_training_data(tmp_path / "s", "semi-supervised", "one", "idm")
        for c in range(run.n_chunks):
            start, stop = run.chunk_range(c)
            run.write_chunk(c, proxy[start:stop], uncertainty[start:stop])
        store.complete_relabel("idm", {})
    data = load_training_data(tmp_path / "s", "semi-supervised", "one", "idm")
    assert (data.n_recorded, data.n_proxy) == (3, 9)
    actions = data.actions.numpy()
    np.testing.assert_array_equal(actions[4:7], batch.actions[4:7])  # episode 1 stays recorded
    np.testing.assert_array_equal(actions[:4], proxy[:4])
    labelled = load_training_data(tmp_path / "s", "labelled-only", "one")
    assert labelled.step_mask.numpy().nonzero()[0].tolist() == [4, 5, 6]
    filtered = load_training_data(
        tmp_path / "s", "semi-supervised", "one", "idm", drop_uncertain=0.5
    )
    assert filtered.n_proxy == 5  # the most uncertain half of 9 proxy steps is dropped (floor 4)


def test_semi_supervised_without_a_split_fills_only_the_action_free_episodes(tmp_path) -> None:
    """A corpus that really lacks some actions needs no split: recorded where recorded."""
    from ssorl_data.store import TrajectoryStore

    rng = np.random.default_rng(3)
    labelled = random_batch(rng, [3, 4], labelling="all")
    hidden = random_episode(rng, 5, labelling="none")
    make_store(tmp_path / "s", concat_batches([labelled, hidden]), act_shape=(2,))
    with TrajectoryStore.open(tmp_path / "s", mode="a") as store:
        run = store.create_relabel("r", {"idm": "test"})
        for index in range(len(run.done())):
            lo, hi = run.chunk_range(index)
            run.write_chunk(index, np.full((hi - lo, 2), 0.5, np.float32), np.zeros(hi - lo))
        store.complete_relabel("r", {})
    data = load_training_data(tmp_path / "s", "semi-supervised", relabel="r")
    assert (data.n_recorded, data.n_proxy) == (7, 5)
    np.testing.assert_array_equal(data.actions.numpy()[:7], labelled.actions)
    assert (data.actions.numpy()[7:] == 0.5).all()
    make_store(tmp_path / "all", labelled, act_shape=(2,))
    with pytest.raises(MissingSplitError, match="--mode full"):  # it would equal full
        load_training_data(tmp_path / "all", "semi-supervised", relabel="r")
