"""A store of uint8 image frames through every stage, by the CLI a user would run: split,
IDM training, relabel, the semi-supervised training cache and a few TD3+BC steps."""

from __future__ import annotations

import json

import numpy as np
import torch
from click.testing import CliRunner

from ssorl_data.store import TrajectoryStore
from ssorl_train.cli.main import cli
from ssorl_train.dataset import load_training_data
from tests.data.factories import make_store, random_batch

FRAME = (8, 8, 3)


def _ok(args: list[str]) -> str:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return result.output


def test_uint8_frames_go_through_split_idm_relabel_cache_and_td3bc(tmp_path):
    rng = np.random.default_rng(7)
    lengths = [20, 14, 25, 18, 22, 16, 19, 24, 15, 21]
    batch = random_batch(rng, lengths, obs_shape=FRAME, obs_dtype=np.uint8)
    batch.rewards[:] = rng.normal(size=batch.rewards.shape).astype(np.float32)
    store = str(make_store(tmp_path / "frames", batch, obs_shape=FRAME, obs_dtype=np.uint8,
                           chunk_steps=16))  # fmt: skip
    _ok(["data", "split", store, "--name", "p30", "--labelled-fraction", "0.3", "--seed", "0"])
    idm = str(tmp_path / "idm")
    _ok(["idm", "train", store, "--split", "p30", "--out", idm, "--hidden", "32,32",
         "--members", "2", "--batch-size", "16", "--max-steps", "20", "--eval-every", "10",
         "--quiet"])  # fmt: skip
    assert tuple(json.loads((tmp_path / "idm" / "config.json").read_text())["obs_shape"]) == FRAME
    _ok(["relabel", store, "--idm", idm, "--name", "p30", "--quiet"])

    with TrajectoryStore.open(store) as opened:
        run = opened.relabel_run("p30")
        assert run.status == "complete"
        proxy = run.read("actions", 0, opened.n_steps)
        assert proxy.shape == (sum(lengths), 2) and np.isfinite(proxy).all()
        assert np.abs(proxy).max() <= 1.0  # the IDM's tanh range, Box(-1, 1)

    data = load_training_data(store, "semi-supervised", split="p30", relabel="p30",
                              cache=tmp_path / "cache")  # fmt: skip
    assert data.observations.dtype == torch.uint8
    assert tuple(data.observations.shape[1:]) == FRAME
    assert data.n_proxy > 0 and data.n_recorded > 0
    assert data.n_proxy + data.n_recorded == sum(lengths)

    run_dir = tmp_path / "agent"
    _ok(["train", store, "--algo", "td3bc", "--mode", "semi-supervised", "--split", "p30",
         "--relabel", "p30", "--steps", "6", "--log-every", "3", "--eval-every", "0",
         "--set", "hidden_dim=16", "--set", "batch_size=8", "--out", str(run_dir),
         "--quiet"])  # fmt: skip
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 6
    assert summary["data"]["n_proxy"] == data.n_proxy
