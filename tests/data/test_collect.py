"""Collecting rollouts from gymnasium straight into a store."""

from __future__ import annotations

from ssorl_data.collect import collect
from ssorl_data.store import TrajectoryStore
from ssorl_data.verify import verify_store


def test_random_rollouts_make_a_valid_store_with_env_and_seed(tmp_path):
    collect("Hopper-v5", tmp_path / "s", 400, n_envs=2, seed=3, progress=False)
    with TrajectoryStore.open(tmp_path / "s") as store:
        assert store.n_steps == 400
        assert store.env_id == "Hopper-v5"
        assert store.metadata.extra["collect"]["seed"] == 3
        assert store.metadata.extra["collect"]["policy"] == {"spec": "random"}
        assert store.metadata.ref_max_score == 3234.3
        assert store.episode_table().labelled.all()
        assert verify_store(store).ok


def test_action_free_collection_records_no_actions(tmp_path):
    collect("Hopper-v5", tmp_path / "s", 100, n_envs=2, record_actions=False, progress=False)
    with TrajectoryStore.open(tmp_path / "s") as store:
        assert not store.read_steps("action_mask", 0, store.n_steps).any()


def test_collect_command_writes_a_store(tmp_path):
    from click.testing import CliRunner

    from ssorl_train.cli.main import cli

    result = CliRunner().invoke(
        cli,
        ["data", "collect", "Hopper-v5", "--out", str(tmp_path / "s"), "--steps", "50", "--quiet"],
    )
    assert result.exit_code == 0, result.output
    with TrajectoryStore.open(tmp_path / "s") as store:
        assert store.n_steps == 52  # whole vector steps: 13 x 4 envs
