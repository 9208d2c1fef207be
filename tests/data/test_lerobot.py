"""LeRobot v3 datasets import as LeRobot lays them out (see tests/data/lerobot_factory.py).

The `lerobot` package itself is not installed: it would pull a CUDA torch into the venv.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from ssorl_data.errors import ImportFormatError
from ssorl_data.io import lerobot_io
from ssorl_data.io.importing import import_dataset, open_source
from ssorl_data.store import TrajectoryStore
from ssorl_data.verify import verify_store
from ssorl_train.cli.main import cli
from tests.data.lerobot_factory import LeRobotSpec, episode_frames, write_lerobot_dataset

ROOT = Path(__file__).resolve().parents[2]
# 17 episodes, 3 per data file, 2 files per chunk: 6 files in 3 chunks; 1- and 2-frame ones.
LENGTHS = [5, 9, 1, 2, 14, 3, 7, 30, 4, 2, 11, 6, 1, 8, 25, 3, 10]


def _write(tmp_path: Path, name: str = "ds", **kwargs) -> tuple[Path, LeRobotSpec]:
    spec = LeRobotSpec(
        lengths=kwargs.pop("lengths", LENGTHS),
        episodes_per_file=kwargs.pop("episodes_per_file", 3),
        chunks_size=kwargs.pop("chunks_size", 2),
        **kwargs,
    )
    return write_lerobot_dataset(tmp_path / name, spec), spec


def _run(*args) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args])


def _kept(spec: LeRobotSpec) -> list[int]:
    """The episodes with a step: an episode of L frames becomes L-1 steps."""
    return [e for e, length in enumerate(spec.lengths) if length > 1]


def test_values_equal_the_data_files_column_by_column(tmp_path, monkeypatch):
    # Small reads and blocks: record batches and store batches cut through episodes.
    monkeypatch.setattr(lerobot_io, "READ_ROWS", 7)
    monkeypatch.setattr(lerobot_io, "BLOCK_STEPS", 20)
    root, spec = _write(tmp_path)
    files = sorted((root / "data").glob("chunk-*/file-*.parquet"))
    assert len({f.parent for f in files}) == 3 and len(files) == 6
    result = import_dataset(root, tmp_path / "store", progress=False)
    kept = _kept(spec)
    assert result.episodes_added == len(kept)
    assert result.steps_added == sum(spec.lengths[e] - 1 for e in kept)
    # What pyarrow itself reads from the data files, row for row.
    table = pa.concat_tables(pq.read_table(f) for f in files)
    episode_of_row = table.column("episode_index").to_numpy()
    state = np.stack(table.column("observation.state").to_numpy(zero_copy_only=False))
    action = np.stack(table.column("action").to_numpy(zero_copy_only=False))
    reward = table.column("next.reward").to_numpy()
    with TrajectoryStore.open(tmp_path / "store") as store:
        assert verify_store(store).ok
        got = store.read_episodes(0, store.n_episodes)
        for i, e in enumerate(kept):
            ep = got.episode(i)
            rows = episode_of_row == e
            np.testing.assert_array_equal(ep.observations, state[rows])  # all L observations
            np.testing.assert_array_equal(ep.actions, action[rows][:-1])  # last one dropped
            np.testing.assert_array_equal(ep.rewards, reward[rows][:-1])
            want = episode_frames(spec, e)
            np.testing.assert_array_equal(ep.observations, want["observation.state"])
            # Even episodes carry next.done on their last two frames (lerobot_eval's layout):
            # the last kept step terminated; the others were cut off: truncated.
            terminated = e % 2 == 0
            assert ep.terminations[-1] == terminated and ep.truncations[-1] == (not terminated)
            assert not ep.terminations[:-1].any() and not ep.truncations[:-1].any()
        imported = store.metadata.extra["imports"][-1]
    assert imported["lerobot_fps"] == 30 and imported["lerobot_robot_type"] == "so101_follower"
    assert imported["lerobot_observation_features"][0]["names"][0] == "joint_0.pos"
    assert imported["lerobot_frames"] == sum(LENGTHS) and not imported["lerobot_rewards_missing"]


def test_blocks_do_not_change_what_is_imported(tmp_path, monkeypatch):
    root, _ = _write(tmp_path)
    import_dataset(root, tmp_path / "whole", progress=False)
    monkeypatch.setattr(lerobot_io, "READ_ROWS", 3)
    monkeypatch.setattr(lerobot_io, "BLOCK_STEPS", 1)
    import_dataset(root, tmp_path / "pieces", progress=False)
    with (
        TrajectoryStore.open(tmp_path / "whole") as a,
        TrajectoryStore.open(tmp_path / "pieces") as b,
    ):
        x, y = a.read_episodes(0, a.n_episodes), b.read_episodes(0, b.n_episodes)
    for column in ("observations", "actions", "rewards", "terminations", "truncations"):
        np.testing.assert_array_equal(getattr(x, column), getattr(y, column))


def test_missing_rewards_become_zeros_with_a_note(tmp_path):
    root, spec = _write(tmp_path, rewards=False)
    result = import_dataset(root, tmp_path / "store", progress=False)
    assert any("next.reward" in note and "0" in note for note in result.notes)
    with TrajectoryStore.open(tmp_path / "store") as store:
        batch = store.read_episodes(0, store.n_episodes)
        assert store.metadata.extra["imports"][-1]["lerobot_rewards_missing"] is True
    assert batch.n_steps == sum(length - 1 for length in spec.lengths) and batch.n_steps > 0
    assert not batch.rewards.any()


def test_video_and_image_features_are_skipped_by_name(tmp_path):
    videos = ("observation.images.front", "observation.images.top")
    root, spec = _write(tmp_path, video_keys=videos, image_keys=("observation.images.wrist",))
    assert (
        "observation.images.wrist" in pq.read_schema(root / "data/chunk-000/file-000.parquet").names
    )
    result = _run("data", "import", root, tmp_path / "store", "--quiet")
    assert result.exit_code == 0, result.output
    skipped = [line for line in result.output.splitlines() if "skipped" in line]
    for name in (*videos, "observation.images.wrist"):
        assert any(name in line for line in skipped), result.output
    with TrajectoryStore.open(tmp_path / "store") as store:
        imported = store.metadata.extra["imports"][-1]
        assert store.observation_space.shape == (spec.state_dim,)
    assert sorted(imported["lerobot_skipped_features"]) == sorted(
        [*videos, "observation.images.wrist"]
    )


def test_done_only_on_the_last_frame_or_absent_means_truncated(tmp_path):
    for done in ("last", "none"):
        root, _ = _write(tmp_path, name=f"ds-{done}", done=done)
        import_dataset(root, tmp_path / f"store-{done}", progress=False)
        with TrajectoryStore.open(tmp_path / f"store-{done}") as store:
            batch = store.read_episodes(0, store.n_episodes)
        # The done frame's action has no following observation, so it is dropped.
        assert not batch.terminations.any()
        assert batch.truncations.sum() == batch.n_episodes


def test_done_before_the_end_of_an_episode_is_refused(tmp_path):
    root, _ = _write(tmp_path, lengths=[6, 6], episodes_per_file=2)
    path = root / "data/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    done = table.column("next.done").to_numpy(zero_copy_only=False).copy()
    done[2] = True
    table = table.set_column(table.schema.get_field_index("next.done"), "next.done", [done])
    pq.write_table(table, path)
    with pytest.raises(ImportFormatError, match=r"episode 0: next.done is set at frame 2"):
        import_dataset(root, tmp_path / "store", progress=False)
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("version", ["v2.1", "v2.0"])
def test_older_codebase_version_is_refused_naming_lerobots_converter(tmp_path, version):
    root, _ = _write(tmp_path, codebase_version=version)
    result = _run("data", "import", root, tmp_path / "store", "--quiet")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"codebase_version is '{version}'" in result.output
    assert "lerobot.scripts.convert_dataset_v21_to_v30" in result.output
    assert not (tmp_path / "store").exists()


def test_newer_codebase_version_is_refused(tmp_path):
    root, _ = _write(tmp_path, codebase_version="v4.0")
    with pytest.raises(ImportFormatError, match=r"'v4.0'.*'v3.x' only"):
        open_source(root)


def _drop_column(path: Path, name: str) -> None:
    table = pq.read_table(path)
    pq.write_table(table.drop_columns([name]), path)


@pytest.mark.parametrize("column", ["action", "next.reward", "frame_index", "observation.state"])
def test_a_missing_data_column_is_named_with_its_file(tmp_path, column):
    root, _ = _write(tmp_path)
    path = root / "data/chunk-001/file-000.parquet"
    _drop_column(path, column)
    with pytest.raises(ImportFormatError, match="missing column") as error:
        open_source(root)
    assert str(path) in str(error.value) and repr(column) in str(error.value)


def test_missing_metadata_is_named(tmp_path):
    root, _ = _write(tmp_path)
    info = json.loads((root / "meta/info.json").read_text())
    del info["features"]["action"]
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(ImportFormatError, match="needs a numeric feature 'action'"):
        open_source(root)
    root, _ = _write(tmp_path, name="ds2")
    _drop_column(root / "meta/episodes/chunk-000/file-001.parquet", "length")
    with pytest.raises(ImportFormatError, match=r"file-001.parquet: missing column.*'length'"):
        open_source(root)
    root, _ = _write(tmp_path, name="ds3")
    (root / "data/chunk-002/file-000.parquet").unlink()
    with pytest.raises(ImportFormatError, match=r"chunk-002/file-000.parquet: missing; meta/"):
        open_source(root)


def test_data_that_disagrees_with_its_episode_metadata_is_refused(tmp_path):
    root, _ = _write(tmp_path, lengths=[4, 5, 6], episodes_per_file=3)
    path = root / "data/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    episode = table.column("episode_index").to_numpy().copy()
    episode[4] = 0  # episode 0 now has 5 frames, episode 1 only 4
    table = table.set_column(
        table.schema.get_field_index("episode_index"), "episode_index", [episode]
    )
    pq.write_table(table, path)
    with pytest.raises(
        ImportFormatError, match=r"episode 0: 5 frames, but meta/episodes gives length 4"
    ):
        import_dataset(root, tmp_path / "store", progress=False)


def test_observation_features_by_default_by_name_and_in_order(tmp_path):
    extra = {"observation.environment_state": 4}
    root, spec = _write(tmp_path, extra_state=extra)
    result = import_dataset(root, tmp_path / "default", progress=False)
    assert any("not imported: observation.environment_state" in n for n in result.notes)
    keys = ["observation.environment_state", "observation.state"]
    args = [arg for key in keys for arg in ("--observation-key", key)]
    result = _run("data", "import", root, tmp_path / "both", "--quiet", *args)
    assert result.exit_code == 0, result.output
    with TrajectoryStore.open(tmp_path / "both") as store:
        assert store.observation_space.shape == (4 + spec.state_dim,)
        first = store.read_episodes(0, 1)
        imported = store.metadata.extra["imports"][-1]
    want = episode_frames(spec, 0)
    np.testing.assert_array_equal(
        first.observations, np.concatenate([want[k] for k in keys], axis=1)
    )
    assert [f["name"] for f in imported["lerobot_observation_features"]] == keys
    result = _run("data", "import", root, tmp_path / "x", "--observation-key", "observation.nope")
    assert result.exit_code == 2 and "'observation.nope' is not a feature" in result.output


def test_without_observation_state_several_candidates_need_a_choice(tmp_path):
    root, _ = _write(tmp_path, extra_state={"observation.a": 2, "observation.b": 3})
    info = json.loads((root / "meta/info.json").read_text())
    info["features"]["observation.joints"] = info["features"].pop("observation.state")
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(ImportFormatError, match=r"several numeric observation.*--observation-key"):
        open_source(root)
    source = open_source(root, observation_keys=["observation.b"])
    assert source.observation_space.shape == (3,)


def test_format_flag_and_auto_detection_and_unbounded_spaces(tmp_path):
    root, spec = _write(tmp_path)
    for args in ([], ["--format", "lerobot"]):
        store = tmp_path / f"store{len(args)}"
        result = _run("data", "import", root, store, "--quiet", *args)
        assert result.exit_code == 0, result.output
        assert f"imported {len(_kept(spec))} episodes" in result.output
    with TrajectoryStore.open(store) as opened:
        assert opened.env_id is None  # LeRobot records no gymnasium env
        assert np.isinf(opened.action_space.high).all()
    result = _run("data", "import", root, tmp_path / "npz", "--format", "npz")
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_repo_id_comes_from_the_cache_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_LEROBOT_HOME", str(tmp_path / "home"))
    root, _ = _write(tmp_path / "home", name="lerobot/pusht_state")
    assert open_source(root).provenance["lerobot_repo_id"] == "lerobot/pusht_state"
    hub = tmp_path / "hub/datasets--someone--arm_data/snapshots/0a1b2c"
    root, _ = _write(hub.parent, name=hub.name)
    assert open_source(root).provenance["lerobot_repo_id"] == "someone/arm_data"
    root, _ = _write(tmp_path, name="plain")
    assert open_source(root).provenance["lerobot_repo_id"] is None


def test_an_import_killed_halfway_leaves_the_store_at_its_last_commit(tmp_path):
    small, _ = _write(tmp_path, name="small")
    big, _ = _write(tmp_path, name="big", lengths=[1000] * 400, episodes_per_file=100)
    store = tmp_path / "store"
    import_dataset(small, store, progress=False)
    with TrajectoryStore.open(store) as opened:
        before = opened.read_episodes(0, opened.n_episodes)
    command = [sys.executable, "-c", "from ssorl_train.cli.main import cli; cli()"]
    args = ["data", "import", str(big), str(store), "--append"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen([*command, *args], stderr=subprocess.PIPE, cwd=ROOT, env=env) as proc:
        assert proc.stderr is not None
        progress = b""
        while not re.search(rb" [1-9]\d?%\|", progress):  # the bar moved: a block is written
            chunk = proc.stderr.read1(4096)
            assert chunk, f"the import ended before it was killed: {progress[-500:]!r}"
            progress += chunk
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with TrajectoryStore.open(store) as opened:
        assert verify_store(opened).ok
        after = opened.read_episodes(0, opened.n_episodes)
        assert len(opened.metadata.extra["imports"]) == 1
    np.testing.assert_array_equal(after.lengths, before.lengths)
    np.testing.assert_array_equal(after.observations, before.observations)
    result = _run("data", "import", small, store, "--append", "--quiet")  # the lock is free
    assert result.exit_code == 0, result.output
