"""The store: creating, appending, reading, and refusing what it must refuse."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from ssorl_data.episodes import make_episode
from ssorl_data.errors import (
    EpisodeValidationError,
    ReadOnlyStoreError,
    StoreExistsError,
    StoreFormatError,
    StoreLockedError,
    StoreNotFoundError,
)
from ssorl_data.store import TrajectoryStore
from ssorl_data.verify import verify_store
from tests.data.factories import make_store, random_batch, random_episode, spaces


def test_appended_episodes_read_back_identically(tmp_path):
    rng = np.random.default_rng(0)
    batch = random_batch(rng, [5, 1, 7], labelling="partial")
    make_store(tmp_path / "s", batch, chunk_steps=4)
    with TrajectoryStore.open(tmp_path / "s") as store:
        assert (store.n_episodes, store.n_steps) == (3, 13)
        for e in range(3):
            got, want = store.episode(e), batch.episode(e)
            np.testing.assert_array_equal(got.observations, want.observations)
            np.testing.assert_array_equal(got.actions, want.actions)
            np.testing.assert_array_equal(got.rewards, want.rewards)
            np.testing.assert_array_equal(got.truncations, want.truncations)
        table = store.episode_table()
        np.testing.assert_array_equal(table.step_start, [0, 5, 6])
        np.testing.assert_array_equal(table.lengths, [5, 1, 7])
        np.testing.assert_allclose(table.returns, batch.episode_returns())
        np.testing.assert_array_equal(
            store.read_steps("action_mask", 0, 13), ~np.isnan(batch.actions).any(1)
        )
        assert verify_store(store).ok


def test_appending_works_from_a_thread_that_runs_an_event_loop(tmp_path):
    # A notebook runs an event loop in the caller's thread; the writer must not need its own.
    rng = np.random.default_rng(1)
    batch = random_batch(rng, [3, 4], labelling="partial")

    async def append_inside_a_loop() -> None:
        make_store(tmp_path / "s", batch, chunk_steps=2)

    asyncio.run(append_inside_a_loop())
    with TrajectoryStore.open(tmp_path / "s") as store:
        np.testing.assert_array_equal(store.read_episodes(0, 2).observations, batch.observations)
        assert verify_store(store).ok


def test_image_observations_keep_their_shape_and_dtype(tmp_path):
    rng = np.random.default_rng(1)
    batch = random_batch(rng, [3, 4], obs_shape=(8, 8, 3), obs_dtype=np.uint8)
    make_store(tmp_path / "s", batch, obs_shape=(8, 8, 3), obs_dtype=np.uint8)
    with TrajectoryStore.open(tmp_path / "s") as store:
        obs = store.read_observations(0, 9)
        assert obs.dtype == np.uint8 and obs.shape == (9, 8, 8, 3)
        np.testing.assert_array_equal(obs, batch.observations)
        assert verify_store(store).ok


def test_action_free_episode_is_not_labelled(tmp_path):
    rng = np.random.default_rng(2)
    batch = random_batch(rng, [4], labelling="none")
    make_store(tmp_path / "s", batch)
    with TrajectoryStore.open(tmp_path / "s") as store:
        assert not store.episode_table().labelled[0]
        assert not store.read_steps("action_mask", 0, 4).any()


def test_appends_across_sessions_extend_the_store(tmp_path):
    rng = np.random.default_rng(3)
    make_store(tmp_path / "s", random_batch(rng, [3]), chunk_steps=2)
    with TrajectoryStore.open(tmp_path / "s", mode="a") as store:
        new = store.append(random_batch(rng, [2, 2]))
        assert list(new) == [1, 2]
    with TrajectoryStore.open(tmp_path / "s") as store:
        assert (store.n_episodes, store.n_steps) == (3, 7)
        assert verify_store(store).ok


def test_failed_append_leaves_nothing_visible(tmp_path):
    rng = np.random.default_rng(4)
    make_store(tmp_path / "s", random_batch(rng, [3]))
    bad = random_episode(rng, 4)
    bad.observations[2, 0] = np.nan
    with TrajectoryStore.open(tmp_path / "s", mode="a") as store:
        with pytest.raises(EpisodeValidationError, match="episode 1: observation row"):
            with store.appending("test") as appender:
                appender.add(random_episode(rng, 2))
                appender.add(bad)
        assert store.n_episodes == 1
    with TrajectoryStore.open(tmp_path / "s") as store:
        assert store.n_episodes == 1 and verify_store(store).ok


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: {**b, "rewards": b["rewards"][:-1]}, "lengths sum"),
        (lambda b: {**b, "observations": b["observations"][:-1]}, "observation rows"),
        (lambda b: {**b, "actions": b["actions"][:, :1]}, "actions rows of shape"),
        (lambda b: {**b, "observations": b["observations"].astype(np.float64)}, "dtype float32"),
        (
            lambda b: {**b, "actions": np.where(np.eye(5, 2, dtype=bool), np.nan, b["actions"])},
            "partly NaN",
        ),
    ],
)
def test_invalid_batches_are_refused_with_a_clear_message(tmp_path, mutate, message):
    from ssorl_data.episodes import EpisodeBatch

    rng = np.random.default_rng(5)
    fields = vars(random_episode(rng, 5)).copy()
    batch = EpisodeBatch(**mutate(fields))
    make_store(tmp_path / "s")
    with TrajectoryStore.open(tmp_path / "s", mode="a") as store:
        with pytest.raises(EpisodeValidationError, match=message):
            store.append(batch)
        assert store.n_steps == 0


def test_flag_before_the_episode_end_is_refused(tmp_path):
    obs = np.zeros((4, 3), np.float32)
    episode = make_episode(obs, np.zeros((3, 2)), np.zeros(3), terminations=[1, 0, 1])
    make_store(tmp_path / "s")
    with TrajectoryStore.open(tmp_path / "s", mode="a") as store:
        with pytest.raises(EpisodeValidationError, match="not the episode's last step"):
            store.append(episode)


def test_episode_without_end_flag_is_recorded_as_truncated():
    episode = make_episode(np.zeros((3, 3), np.float32), np.zeros((2, 2)), np.zeros(2))
    assert episode.truncations.tolist() == [False, True]


def test_read_only_store_refuses_writes(tmp_path):
    make_store(tmp_path / "s")
    with TrajectoryStore.open(tmp_path / "s") as store:
        with pytest.raises(ReadOnlyStoreError, match="mode='a'"):
            store.append(random_episode(np.random.default_rng(0), 2))


def test_create_refuses_an_existing_path(tmp_path):
    make_store(tmp_path / "s")
    with pytest.raises(StoreExistsError, match="already exists"):
        make_store(tmp_path / "s")


def test_open_reports_missing_and_foreign_paths(tmp_path):
    with pytest.raises(StoreNotFoundError, match="no store here"):
        TrajectoryStore.open(tmp_path / "nothing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreFormatError, match="not an ssorl store"):
        TrajectoryStore.open(tmp_path / "plain")


def test_other_format_version_is_refused_with_a_way_out(tmp_path):
    path = make_store(tmp_path / "s")
    meta_file = path / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["attributes"]["format_version"] = 99
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(StoreFormatError, match="format_version 1. Got 99"):
        TrajectoryStore.open(path)


def test_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path):
    make_store(tmp_path / "s")
    with TrajectoryStore.open(tmp_path / "s", mode="a"):
        with pytest.raises(StoreLockedError, match="another process"):
            TrajectoryStore.open(tmp_path / "s", mode="a")
        with TrajectoryStore.open(tmp_path / "s") as reader:  # readers are never blocked
            assert reader.n_episodes == 0
    with TrajectoryStore.open(tmp_path / "s", mode="a"):
        pass


def test_non_box_spaces_are_refused(tmp_path):
    import gymnasium as gym

    obs, _ = spaces()
    with pytest.raises(StoreFormatError, match="Box action space"):
        TrajectoryStore.create(tmp_path / "s", obs, gym.spaces.Discrete(3))
    assert not (tmp_path / "s").exists()
