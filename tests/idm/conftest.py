"""Tiny stores with learnable dynamics and a tiny trained IDM, shared by the IDM tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ssorl_data.episodes import concat_batches, make_episode
from ssorl_data.idm import IdmTrainConfig, train_idm
from ssorl_data.splits import make_split
from ssorl_data.store import TrajectoryStore
from tests.data.factories import make_store
from tests.ops.conftest import _default_backend  # noqa: F401  (resolve the kernels once)

OBS_DIM, ACT_DIM = 4, 2
# s_{t+1} = s_t + B a_t: the action is recoverable from (s_t, s_{t+1}).
B = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, -0.5], [0.0, 0.0]], dtype=np.float32)
TINY = IdmTrainConfig(
    hidden=(64, 64), members=3, dropout=0.1, lr=3e-3, batch_size=256, max_steps=400,
    eval_every=50, patience=3, seed=0,
)  # fmt: skip


def dynamics_batch(rng: np.random.Generator, lengths, scale: float = 0.6):
    episodes = []
    for length in lengths:
        actions = rng.uniform(-scale, scale, (length, ACT_DIM)).astype(np.float32)
        obs = np.zeros((length + 1, OBS_DIM), np.float32)
        obs[0] = rng.standard_normal(OBS_DIM)
        for t in range(length):
            obs[t + 1] = obs[t] + actions[t] @ B.T
        episodes.append(make_episode(obs, actions, rng.standard_normal(length)))
    return concat_batches(episodes)


def make_dynamics_store(path: Path, seed: int = 0, chunk_steps: int = 16) -> Path:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 60, size=60)
    make_store(path, dynamics_batch(rng, lengths), obs_shape=(OBS_DIM,), act_shape=(ACT_DIM,),
               chunk_steps=chunk_steps)  # fmt: skip
    with TrajectoryStore.open(path, mode="a") as store:
        make_split(store, "half", labelled_fraction=0.5, quantile=1.0, seed=0)
    return path


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads, and spinning threads crawl on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(store, idm checkpoint dir), trained once per session; copy the store before writing."""
    root = tmp_path_factory.mktemp("idm")
    store = make_dynamics_store(root / "store")
    with TrajectoryStore.open(store) as opened:
        train_idm(opened, "half", root / "idm", TINY, progress=False)
    return store, root / "idm"


@pytest.fixture
def store_copy(trained, tmp_path) -> Path:
    shutil.copytree(trained[0], tmp_path / "store")
    return tmp_path / "store"


def record_reads(monkeypatch) -> list[tuple[str, int, int]]:
    """From now on, every (array, start, stop) the store reads, in order."""
    reads: list[tuple[str, int, int]] = []
    original = TrajectoryStore._read

    def spy(self, name, start, stop):
        reads.append((name, start, stop))
        return original(self, name, start, stop)

    monkeypatch.setattr(TrajectoryStore, "_read", spy)
    return reads
