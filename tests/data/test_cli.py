"""The `ssorl data` commands, driven as a user would."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from ssorl_data.store import TrajectoryStore
from ssorl_train.cli.main import cli
from tests.data.factories import make_store, random_batch


def _run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_import_info_verify_export_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    make_store(tmp_path / "a", random_batch(rng, [4, 3, 6], labelling="partial"))
    result = _run("data", "export", tmp_path / "a", tmp_path / "a.hdf5", "--format", "d4rl")
    assert result.exit_code == 0, result.output
    result = _run("data", "import", tmp_path / "a.hdf5", tmp_path / "b", "--quiet")
    assert result.exit_code == 0 and "imported 3 episodes (13 steps)" in result.output
    summary = json.loads(_run("data", "info", tmp_path / "b", "--json").output)
    assert summary["n_episodes"] == 3 and summary["n_steps"] == 13
    with TrajectoryStore.open(tmp_path / "a") as a:
        assert summary["labelled_fraction"] == float(a.episode_table().labelled.mean())
    plot = tmp_path / "returns.png"
    result = _run("data", "info", tmp_path / "b", "--plot", plot)
    assert result.exit_code == 0 and "labelled episodes" in result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = _run("data", "verify", tmp_path / "b", "--quiet")
    assert result.exit_code == 0 and result.output.startswith("ok: 3 episodes")


def test_verify_lists_violations_and_exits_nonzero(tmp_path):
    import zarr

    make_store(tmp_path / "a", random_batch(np.random.default_rng(1), [4, 3]))
    group = zarr.open_group(tmp_path / "a", mode="r+")
    group["episodes/return"][1] = 1e6  # corrupt a derived column behind ssorl's back
    group["steps/action_mask"][0] = False
    result = _run("data", "verify", tmp_path / "a", "--quiet")
    assert result.exit_code == 1
    assert "episode 1: stored return" in result.output
    assert "action_mask at step 0" in result.output


def test_errors_are_one_line_messages_not_tracebacks(tmp_path):
    result = CliRunner().invoke(cli, ["data", "info", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "no store here" in result.output and "Traceback" not in result.output


def test_every_command_explains_itself():
    for args in (
        ["--help"],
        ["data", "--help"],
        ["data", "import", "--help"],
        ["data", "export", "--help"],
        ["quickstart", "--help"],
    ):
        result = _run(*args)
        assert result.exit_code == 0 and "Usage:" in result.output


def test_info_lists_splits(tmp_path):
    make_store(tmp_path / "a", random_batch(np.random.default_rng(2), [3] * 6))
    result = _run("data", "split", tmp_path / "a", "--name", "half", "--labelled-fraction", "0.5")
    assert result.exit_code == 0, result.output
    summary = json.loads(_run("data", "info", tmp_path / "a", "--json").output)
    assert summary["splits"] == ["half"] and summary["relabels"] == {}
    assert "half" in _run("data", "info", tmp_path / "a").output
