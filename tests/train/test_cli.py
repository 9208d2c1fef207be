"""`ssorl train` and `ssorl eval` end to end on a tiny store."""

from __future__ import annotations

import json

from click.testing import CliRunner

from ssorl_train.cli.main import cli
from ssorl_train.errors import CheckpointError
from tests.data.factories import hopper_shaped_store


def _hopper_store(path) -> None:
    hopper_shaped_store(path)


def test_help_explains_modes_and_resume() -> None:
    result = CliRunner().invoke(cli, ["train", "--help"])
    assert result.exit_code == 0
    assert "semi-supervised" in result.output and "--resume" in result.output


def test_train_then_eval_from_the_command_line(tmp_path) -> None:
    _hopper_store(tmp_path / "store")
    out = tmp_path / "run"
    args = [
        "train",
        str(tmp_path / "store"),
        "--algo",
        "td3bc",
        "--steps",
        "4",
        "--out",
        str(out),
        "--eval-every",
        "0",
        "--eval-episodes",
        "2",
        "--log-every",
        "2",
        "--set",
        "hidden_dim=8",
        "--set",
        "batch_size=4",
        "--quiet",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["algo_config"]["hidden_dim"] == 8 and summary["env_id"] == "Hopper-v5"
    result = CliRunner().invoke(cli, ["eval", str(out), "--episodes", "2", "--json"])
    assert result.exit_code == 0, result.output
    evaluation = json.loads(result.output)
    assert evaluation["returns"] == summary["final_eval"]["returns"]


def test_unknown_config_field_is_reported(tmp_path) -> None:
    _hopper_store(tmp_path / "store")
    result = CliRunner().invoke(
        cli,
        [
            "train",
            str(tmp_path / "store"),
            "--algo",
            "iql",
            "--steps",
            "1",
            "--out",
            str(tmp_path / "r"),
            "--set",
            "alpha=1",
        ],
    )
    assert result.exit_code == 2 and "IQLConfig" in result.output
    assert "Traceback" not in result.output


def _train_args(store, out) -> list[str]:
    return ["train", str(store), "--algo", "td3bc", "--steps", "2", "--out", str(out),
            "--eval-every", "0", "--eval-episodes", "1", "--log-every", "1",
            "--set", "hidden_dim=8", "--set", "batch_size=4", "--quiet"]  # fmt: skip


def test_a_user_error_is_one_line_with_exit_code_2_unless_debug_is_asked(
    tmp_path, monkeypatch
) -> None:
    _hopper_store(tmp_path / "store")
    args = _train_args(tmp_path / "store", tmp_path / "run")
    assert CliRunner().invoke(cli, args).exit_code == 0
    again = CliRunner().invoke(cli, args)  # the run directory already holds a checkpoint
    assert again.exit_code == 2 and again.output.startswith("Error: ")
    assert "--resume" in again.output and "Traceback" not in again.output
    debug = CliRunner().invoke(cli, ["--debug", *args])
    assert isinstance(debug.exception, CheckpointError)
    monkeypatch.setenv("SSORL_DEBUG", "1")
    assert isinstance(CliRunner().invoke(cli, args).exception, CheckpointError)


def test_renamed_flags_name_their_new_spelling(tmp_path) -> None:
    _hopper_store(tmp_path / "store")
    args = _train_args(tmp_path / "store", tmp_path / "run")
    for old, extra, new in (("--env", ["Hopper-v5"], "--env-id"),
                            ("--no-progress", [], "--quiet")):  # fmt: skip
        result = CliRunner().invoke(cli, [*args, old, *extra])
        assert result.exit_code == 2 and f"{old} was renamed to {new}" in result.output
    result = CliRunner().invoke(cli, ["eval", str(tmp_path / "store"), "--env", "Hopper-v5"])
    assert result.exit_code == 2 and "--env was renamed to --env-id" in result.output
