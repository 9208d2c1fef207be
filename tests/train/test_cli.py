"""`ssorl train` and `ssorl eval` end to end on a tiny store."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from ssorl_data.cli.main import cli
from ssorl_data.io.flat import from_arrays
from ssorl_data.io.importing import import_dataset


def _hopper_store(path) -> None:
    """A tiny store with Hopper-v5's spaces (random data: the point is the plumbing)."""
    rng = np.random.default_rng(0)
    n = 40
    terminals = np.zeros(n, bool)
    terminals[[14, 29]] = True
    arrays = {
        "observations": rng.normal(size=(n, 11)).astype(np.float32),
        "next_observations": rng.normal(size=(n, 11)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, 3)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminals": terminals,
        "timeouts": np.zeros(n, bool),
    }
    import_dataset(from_arrays(arrays, env_id="Hopper-v5"), path, progress=False)


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
        "--no-progress",
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
    assert result.exit_code != 0 and "IQLConfig" in str(result.exception)
