"""What an interrupted-then-rerun output must equal: stores, IDMs and training runs compared
with the uninterrupted reference, array by array."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from ssorl_data.store import TrajectoryStore
from ssorl_data.verify import verify_store
from ssorl_train.checkpoint import load_checkpoint
from tests.train.test_loop import _tensors

EPISODE_FIELDS = ("observations", "actions", "rewards", "terminations", "truncations", "lengths")


def verified(path: Path, unfinished: str | None = None) -> int:
    """The store at `path` opens and verifies clean, or (with `unfinished`, e.g. "splits/s")
    reports only that this group was never finished; its episode count."""
    with TrajectoryStore.open(path) as store:
        report = verify_store(store)
        for violation in report.violations:
            assert unfinished and f"/{unfinished}: " in violation, report.violations
            assert "never finished" in violation, report.violations
        return store.n_episodes


def same_store(a: Path, b: Path) -> None:
    """Equal episodes, splits and relabel runs, array by array (NaN rows equal too)."""
    with TrajectoryStore.open(a) as left, TrajectoryStore.open(b) as right:
        assert (left.n_episodes, left.n_steps) == (right.n_episodes, right.n_steps)
        got, want = (s.read_episodes(0, s.n_episodes) for s in (left, right))
        for field in EPISODE_FIELDS:
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field), field)
        assert left.list_splits() == right.list_splits()
        for name in left.list_splits():
            np.testing.assert_array_equal(left.read_split(name).visible,
                                          right.read_split(name).visible)  # fmt: skip
        assert left.list_relabels() == right.list_relabels()
        for name in left.list_relabels():
            runs = left.relabel_run(name), right.relabel_run(name)
            assert runs[0].status == runs[1].status == "complete", name
            for key in ("actions", "uncertainty"):
                np.testing.assert_array_equal(*(r.read(key, 0, r.n_steps) for r in runs))


def same_idm(a: Path, b: Path) -> None:
    """Bit-identical IDM weights (training is seeded, one thread)."""
    left, right = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert left.keys() == right.keys()
    for name in left:
        assert torch.equal(left[name], right[name]), name
    assert (a / "config.json").read_text() == (b / "config.json").read_text()


def same_run(a: Path, b: Path) -> None:
    """Bit-identical final checkpoints and the same log rows' steps (train --resume promises
    bit-exactness)."""
    left, right = (load_checkpoint(p / "checkpoint")[0] for p in (a, b))
    flat_left, flat_right = dict(_tensors(left)), dict(_tensors(right))
    assert flat_left.keys() == flat_right.keys()
    for name, tensor in flat_left.items():
        assert torch.equal(tensor, flat_right[name]), name
    steps = [[r.split(",")[0] for r in (p / "log.csv").read_text().splitlines()] for p in (a, b)]
    assert steps[0] == steps[1]
