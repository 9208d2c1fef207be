"""`ssorl data drop-actions`: a copy without the chosen episodes' actions, the rest identical."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from ssorl_data.store import TrajectoryStore
from ssorl_train.cli.main import cli
from tests.data.factories import make_store, random_batch


def test_drop_actions_copies_everything_but_the_listed_episodes_actions(tmp_path):
    rng = np.random.default_rng(0)
    make_store(tmp_path / "a", random_batch(rng, [4, 3, 6, 2]), chunk_steps=4, env_id="X-v0")
    (tmp_path / "drop.txt").write_text("1\n3\n")
    result = CliRunner().invoke(
        cli, ["data", "drop-actions", str(tmp_path / "a"), str(tmp_path / "b"),
              "--episodes", str(tmp_path / "drop.txt")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with TrajectoryStore.open(tmp_path / "a") as a, TrajectoryStore.open(tmp_path / "b") as b:
        assert b.episode_table().labelled.tolist() == [True, False, True, False]
        assert b.env_id == "X-v0" and b.chunk_steps == 4
        for e in range(4):
            old, new = a.episode(e), b.episode(e)
            np.testing.assert_array_equal(old.observations, new.observations)
            np.testing.assert_array_equal(old.rewards, new.rewards)
            if e in (1, 3):
                assert np.isnan(new.actions).all()
            else:
                np.testing.assert_array_equal(old.actions, new.actions)


def test_drop_actions_names_a_missing_episode(tmp_path):
    make_store(tmp_path / "a", random_batch(np.random.default_rng(0), [4, 3]))
    (tmp_path / "drop.txt").write_text("[5]")
    result = CliRunner().invoke(
        cli, ["data", "drop-actions", str(tmp_path / "a"), str(tmp_path / "b"),
              "--episodes", str(tmp_path / "drop.txt")],
    )  # fmt: skip
    assert result.exit_code == 2 and "episode 5 does not exist" in result.output
    assert not (tmp_path / "b").exists()
