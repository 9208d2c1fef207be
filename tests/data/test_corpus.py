"""The shared corpus imports exactly (slow: reads the real files)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from ssorl_train.cli.main import cli

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"
FILES = sorted(CORPUS.glob("*/*.hdf5"))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not FILES, reason="../shared/corpus is not beside this checkout"),
]


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_cli_import_reports_the_files_counts_and_verifies(tmp_path, path):
    runner = CliRunner()
    store = tmp_path / "store"
    result = runner.invoke(cli, ["data", "import", str(path), str(store), "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads(runner.invoke(cli, ["data", "info", str(store), "--json"]).output)
    with h5py.File(path) as f:
        n_steps = f["rewards"].shape[0]
        n_episodes = int((np.asarray(f["terminals"]) | np.asarray(f["timeouts"])).sum())
    stats = json.loads((path.parent / "stats.json").read_text())[path.stem]
    assert summary["n_steps"] == n_steps == stats["n_steps"]
    assert summary["n_episodes"] == n_episodes == stats["n_episodes"]
    assert summary["return"]["mean"] == pytest.approx(stats["return_mean"], rel=1e-5)
    assert runner.invoke(cli, ["data", "verify", str(store), "--quiet"]).exit_code == 0
