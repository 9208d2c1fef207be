"""Splits: the semi-supervised protocol, stored safely in the store."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from ssorl_data.errors import (
    ReadOnlyStoreError,
    SplitError,
    SplitExistsError,
    SplitNotFoundError,
    SplitWarning,
)
from ssorl_data.splits import choose_visible, make_split, read_episode_list
from ssorl_data.store import EpisodeTable, TrajectoryStore
from ssorl_data.verify import verify_store
from ssorl_train.cli.main import cli
from tests.data.factories import make_store, random_batch


def _table(returns, labelled=None) -> EpisodeTable:
    n = len(returns)
    return EpisodeTable(
        step_start=np.arange(n, dtype=np.int64),
        lengths=np.ones(n, dtype=np.int64),
        returns=np.asarray(returns, dtype=np.float64),
        labelled=np.ones(n, bool) if labelled is None else np.asarray(labelled),
    )


def test_quantile_split_labels_the_fraction_from_the_lowest_returns():
    returns = np.random.default_rng(0).permutation(100).astype(float)
    visible = choose_visible(_table(returns), labelled_fraction=0.1, quantile=0.5, seed=3)
    assert visible.sum() == 10
    assert returns[visible].max() < 50
    again = choose_visible(_table(returns), labelled_fraction=0.1, quantile=0.5, seed=3)
    other = choose_visible(_table(returns), labelled_fraction=0.1, quantile=0.5, seed=4)
    np.testing.assert_array_equal(visible, again)
    assert not np.array_equal(visible, other)


def test_random_split_never_shows_episodes_without_actions():
    labelled = np.arange(20) % 2 == 0
    visible = choose_visible(_table(np.zeros(20), labelled), labelled_fraction=0.5, seed=0)
    assert visible.sum() == 10 and not (visible & ~labelled).any()


def test_too_small_pool_labels_all_of_it_with_a_warning():
    with pytest.warns(SplitWarning, match="only 2 episodes"):
        visible = choose_visible(_table(np.arange(10.0)), labelled_fraction=0.5, quantile=0.2)
    np.testing.assert_array_equal(np.flatnonzero(visible), [0, 1])


def test_split_is_stored_refused_twice_and_overwritten(tmp_path):
    rng = np.random.default_rng(0)
    batch = random_batch(rng, [3, 4, 2, 5], labelling="all")
    make_store(tmp_path / "s", batch)
    with TrajectoryStore.open(tmp_path / "s", mode="a") as store:
        made = make_split(store, "half", labelled_fraction=0.5, quantile=1.0, seed=1)
        with pytest.raises(SplitExistsError, match="--overwrite"):
            make_split(store, "half", labelled_fraction=0.25)
        make_split(store, "half", episodes=[3], overwrite=True)
    with TrajectoryStore.open(tmp_path / "s") as store:
        split = store.read_split("half")
        np.testing.assert_array_equal(split.visible, [False, False, False, True])
        assert split.attrs["method"] == "episodes" and split.attrs["n_episodes"] == 4
        assert made.attrs["quantile"] == 1.0 and made.attrs["seed"] == 1
        assert verify_store(store).ok
        with pytest.raises(ReadOnlyStoreError, match="mode='a'"):
            store.write_split("x", np.ones(4, bool), {})
        with pytest.raises(SplitNotFoundError, match="'half'"):
            store.read_split("nope")


def test_explicit_episodes_without_actions_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    batch = random_batch(rng, [3, 4], labelling="none")
    make_store(tmp_path / "s", batch)
    with TrajectoryStore.open(tmp_path / "s", mode="a") as store:
        with pytest.raises(SplitError, match="episode 1"):
            make_split(store, "bad", episodes=[1])


def test_half_written_split_is_never_read(tmp_path):
    import zarr

    make_store(tmp_path / "s", random_batch(np.random.default_rng(0), [3, 4]))
    with TrajectoryStore.open(tmp_path / "s", mode="a") as store:
        make_split(store, "a", episodes=[0])
    zarr.open_group(tmp_path / "s" / "splits" / "a", mode="r+").update_attributes(
        {"status": "writing"}  # as a process killed before the last write leaves it
    )
    with TrajectoryStore.open(tmp_path / "s") as store:
        with pytest.raises(SplitNotFoundError, match="never finished"):
            store.read_split("a")
        assert any("never finished" in v for v in verify_store(store).violations)


def test_episodes_appended_after_the_split_are_hidden(tmp_path):
    rng = np.random.default_rng(0)
    make_store(tmp_path / "s", random_batch(rng, [3, 4]))
    with TrajectoryStore.open(tmp_path / "s", mode="a") as store:
        make_split(store, "all", labelled_fraction=1.0)
        store.append(random_batch(rng, [2]))
        np.testing.assert_array_equal(store.read_split("all").visible, [True, True, False])


def test_episode_lists_read_json_or_text_and_refuse_unknown_episodes(tmp_path):
    (tmp_path / "a.json").write_text("[3, 1]")
    (tmp_path / "b.txt").write_text("0, 2\n4\n")
    np.testing.assert_array_equal(read_episode_list(tmp_path / "a.json", 5), [3, 1])
    np.testing.assert_array_equal(read_episode_list(tmp_path / "b.txt", 5), [0, 2, 4])
    with pytest.raises(SplitError, match="episode 3 does not exist"):
        read_episode_list(tmp_path / "a.json", 3)
    (tmp_path / "c.txt").write_text("1 two")
    with pytest.raises(SplitError, match="as integers"):
        read_episode_list(tmp_path / "c.txt", 3)


def test_cli_split_from_a_file_and_by_quantile(tmp_path):
    rng = np.random.default_rng(0)
    make_store(tmp_path / "s", random_batch(rng, [3] * 10))
    (tmp_path / "eps.txt").write_text("1\n4\n")
    runner = CliRunner()
    result = runner.invoke(
        cli, ["data", "split", str(tmp_path / "s"), "--name", "f", "--episodes",
              str(tmp_path / "eps.txt")],
    )  # fmt: skip
    assert result.exit_code == 0 and "2 of 10 episodes visible" in result.output
    result = runner.invoke(
        cli, ["data", "split", str(tmp_path / "s"), "--name", "q", "--labelled-fraction", "0.2",
              "--quantile", "0.5", "--seed", "1"],
    )  # fmt: skip
    assert result.exit_code == 0 and "2 of 10 episodes visible (return_quantile)" in result.output
    result = runner.invoke(cli, ["data", "split", str(tmp_path / "s"), "--name", "../x",
                                 "--labelled-fraction", "0.2"])  # fmt: skip
    assert result.exit_code == 2 and "split name" in result.output
