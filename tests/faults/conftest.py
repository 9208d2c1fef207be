"""The uninterrupted reference runs every kill test compares with (made once per session, in
this process), and the summary of what was tried and survived."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.faults.harness import ok, tally
from tests.pipeline.test_sweep import BASE
from tests.pipeline.toml_text import toml_text

OBS_DIM, ACT_DIM = 11, 3  # Hopper-v5's, so that train evaluates in the real env
CHUNK = ["--chunk-steps", "500"]
IDM = ["--split", "s", "--hidden", "16,16", "--members", "2", "--max-steps", "30",
       "--batch-size", "64", "--eval-every", "10", "--threads", "1", "--quiet"]  # fmt: skip
RELABEL = ["--name", "r", "--batch-size", "512", "--threads", "1", "--quiet"]
TRAIN = ["--algo", "td3bc", "--mode", "semi-supervised", "--split", "s", "--relabel", "r",
         "--steps", "200", "--eval-every", "0", "--eval-episodes", "1", "--checkpoint-every",
         "50", "--log-every", "50", "--set", "hidden_dim=16", "--set", "batch_size=16",
         "--threads", "1", "--seed", "0", "--quiet"]  # fmt: skip


def write_npz(path: Path, n_steps: int, seed: int) -> Path:
    """Flat D4RL-layout arrays of random episodes (30 to 150 steps) with Hopper's spaces."""
    rng = np.random.default_rng(seed)
    ends = np.cumsum(rng.integers(30, 150, size=n_steps // 30)) - 1
    terminals = np.zeros(n_steps, bool)
    terminals[ends[ends < n_steps - 1]] = True
    np.savez(
        path,
        observations=rng.standard_normal((n_steps, OBS_DIM)).astype(np.float32),
        next_observations=rng.standard_normal((n_steps, OBS_DIM)).astype(np.float32),
        actions=rng.uniform(-1, 1, (n_steps, ACT_DIM)).astype(np.float32),
        rewards=rng.standard_normal(n_steps).astype(np.float32),
        terminals=terminals,
        timeouts=np.zeros(n_steps, bool),
    )
    return path


@dataclass(frozen=True)
class Reference:
    """Inputs and the outputs of each stage run once without interruption."""

    first: Path  # an NPZ file: the first import
    more: Path  # an NPZ file: the --append import
    imported: Path  # store: `first` imported
    appended: Path  # store: `imported` + `more` appended
    split: Path  # store: `imported` with split "s"
    idm: Path  # IDM trained on `split`
    relabelled: Path  # store: `split` with relabel run "r" by `idm`
    run: Path  # training run on `relabelled`


def copy(source: Path, to: Path) -> Path:
    shutil.copytree(source, to)
    return to


@pytest.fixture(scope="session")
def ref(tmp_path_factory) -> Reference:
    root = tmp_path_factory.mktemp("reference")
    first = write_npz(root / "first.npz", 3000, seed=0)
    more = write_npz(root / "more.npz", 2000, seed=1)
    imported = root / "imported"
    ok(["data", "import", first, imported, "--env-id", "Hopper-v5", *CHUNK, "--quiet"])
    appended = copy(imported, root / "appended")
    ok(["data", "import", more, appended, "--append", "--env-id", "Hopper-v5", *CHUNK, "--quiet"])
    split = copy(imported, root / "split")
    ok(["data", "split", split, "--name", "s", "--labelled-fraction", "0.3", "--seed", "0"])
    ok(["idm", "train", split, "--out", root / "idm", *IDM])
    relabelled = copy(split, root / "relabelled")
    ok(["relabel", relabelled, "--idm", root / "idm", *RELABEL])
    ok(["train", relabelled, "--out", root / "run", *TRAIN])
    return Reference(first, more, imported, appended, split, root / "idm", relabelled, root / "run")


SWEEP = {  # tests/pipeline/test_sweep.py's tiny grid: two cells, two workers
    **BASE,
    "train": BASE["train"] | {"modes": ["semi-supervised"]},
    "sweep": {"seeds": [0, 1], "jobs": 2},
}


@pytest.fixture(scope="session")
def sweep_ref(tmp_path_factory) -> tuple[Path, dict]:
    """The sweep config file and the sweep.json of its uninterrupted run."""
    root = tmp_path_factory.mktemp("sweep")
    (root / "sweep.toml").write_text(toml_text(SWEEP))
    ok(["run", root / "sweep.toml", "--sweep", "--out", root / "out", "--quiet"])
    return root / "sweep.toml", json.loads((root / "out" / "sweep.json").read_text())


def pytest_terminal_summary(terminalreporter) -> None:
    if not tally:
        return
    terminalreporter.section("faults tried and survived")
    for what, counts in sorted(tally.items()):
        terminalreporter.write_line(f"{what}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


def pytest_sessionfinish(session) -> None:
    target = os.environ.get("SSORL_FAULTS_SUMMARY")
    if target and tally:
        Path(target).write_text(json.dumps(tally, indent=1, sort_keys=True) + "\n")
