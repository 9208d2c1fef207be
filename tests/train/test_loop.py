"""The training loop: every algorithm runs, logs and checkpoints; resumption is exact."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from ssorl_data.sampler import StepSampler
from ssorl_train import loop
from ssorl_train.algos import make_config
from ssorl_train.checkpoint import load_checkpoint, paths, saved_step
from ssorl_train.errors import CheckpointError
from ssorl_train.evaluate import evaluate_checkpoint

# small networks so that the fast suite stays fast; the defaults are tested in bench
SMALL = {
    "td3bc": {"hidden_dim": 16, "batch_size": 16},
    "iql": {"hidden_dim": 16, "batch_size": 16},
    "cql": {"hidden_dim": 16, "batch_size": 16, "cql_n_actions": 3},
    "dt": {"hidden_dim": 16, "n_layers": 1, "context": 4, "batch_size": 8, "warmup_steps": 5},
}


def _run(data, algo, out, steps, resume=False, **loop_options):
    options = {"eval_every": 0, "checkpoint_every": 4, "log_every": 2} | loop_options
    return loop.train(
        data,
        algo,
        make_config(algo, SMALL[algo]),
        loop.LoopConfig(steps=steps, seed=7, **options),
        out,
        resume=resume,
        progress=False,
    )


def _tensors(state, prefix=""):
    if isinstance(state, torch.Tensor):
        yield prefix, state
    elif isinstance(state, dict):
        for key, value in state.items():
            yield from _tensors(value, f"{prefix}/{key}")
    elif isinstance(state, list):
        for i, value in enumerate(state):
            yield from _tensors(value, f"{prefix}/{i}")


@pytest.mark.parametrize("algo", ["td3bc", "iql", "cql", "dt"])
def test_every_algorithm_trains_logs_and_checkpoints(algo, tiny_data, tmp_path) -> None:
    summary = _run(tiny_data, algo, tmp_path, steps=6)
    assert summary["steps"] == 6 and summary["final_eval"] is None
    with (tmp_path / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    assert all(float(r["steps_per_s"]) > 0 for r in rows)
    losses = [float(v) for r in rows for k, v in r.items() if k.endswith("loss")]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    state, meta = load_checkpoint(tmp_path / "checkpoint")
    assert meta["step"] == 6 and state["algorithm"]["step"] == 6
    assert json.loads((tmp_path / "summary.json").read_text())["algo"] == algo


@pytest.mark.parametrize("algo", ["td3bc", "cql", "dt"])
def test_killed_and_resumed_run_equals_an_uninterrupted_one(
    algo, make_data, tmp_path, monkeypatch
) -> None:
    data = make_data(episode_lengths=(20, 9, 25))
    _run(data, algo, tmp_path / "straight", steps=8)

    real_draw = StepSampler.sample_into
    calls = {"n": 0}

    def dying_draw(self, episode_index, step_index):
        calls["n"] += 1
        if calls["n"] == 7:  # after the checkpoint at step 4, mid-way to the next
            raise KeyboardInterrupt
        return real_draw(self, episode_index, step_index)

    monkeypatch.setattr(StepSampler, "sample_into", dying_draw)
    with pytest.raises(KeyboardInterrupt):
        _run(data, algo, tmp_path / "killed", steps=8)
    monkeypatch.setattr(StepSampler, "sample_into", real_draw)
    _run(data, algo, tmp_path / "killed", steps=8, resume=True)

    straight, _ = load_checkpoint(tmp_path / "straight" / "checkpoint")
    resumed, _ = load_checkpoint(tmp_path / "killed" / "checkpoint")
    pairs = dict(_tensors(straight))
    assert pairs.keys() == dict(_tensors(resumed)).keys()
    for name, tensor in _tensors(resumed):
        assert torch.equal(tensor, pairs[name]), name
    logged = [(tmp_path / d / "log.csv").read_text().splitlines() for d in ("straight", "killed")]
    assert [r.split(",")[0] for r in logged[0]] == [r.split(",")[0] for r in logged[1]]


def test_a_run_directory_with_a_checkpoint_needs_resume(tiny_data, tmp_path) -> None:
    _run(tiny_data, "td3bc", tmp_path, steps=2)
    with pytest.raises(CheckpointError, match="--resume"):
        _run(tiny_data, "td3bc", tmp_path, steps=4)


def test_saved_step_is_the_last_checkpointed_step_of_a_run_directory(tiny_data, tmp_path) -> None:
    assert saved_step(tmp_path) == 0  # no checkpoint: nothing to resume
    _run(tiny_data, "td3bc", tmp_path, steps=6)  # checkpoints at 4 and at the end
    assert saved_step(tmp_path) == 6 == load_checkpoint(tmp_path / "checkpoint")[1]["step"]


def test_resume_refuses_a_different_config(tiny_data, tmp_path) -> None:
    _run(tiny_data, "td3bc", tmp_path, steps=2)
    with pytest.raises(CheckpointError, match="original options"):
        loop.train(
            tiny_data,
            "td3bc",
            make_config("td3bc", SMALL["td3bc"] | {"alpha": 1.0}),
            loop.LoopConfig(steps=4, seed=7),
            tmp_path,
            resume=True,
            progress=False,
        )


def test_a_torn_checkpoint_pair_is_detected(tiny_data, tmp_path) -> None:
    _run(tiny_data, "td3bc", tmp_path / "a", steps=2)
    _run(tiny_data, "td3bc", tmp_path / "b", steps=2)
    tensors_a, _ = paths(tmp_path / "a" / "checkpoint")
    tensors_b, _ = paths(tmp_path / "b" / "checkpoint")
    tensors_a.write_bytes(tensors_b.read_bytes())
    with pytest.raises(CheckpointError, match="different ids"):
        load_checkpoint(tmp_path / "a" / "checkpoint")


@pytest.mark.parametrize("algo", ["td3bc", "dt"])
def test_evaluation_in_hopper_logs_returns_and_normalised_scores(algo, make_data, tmp_path) -> None:
    data = make_data(obs_dim=11, act_dim=3, env_id="Hopper-v5")
    summary = _run(data, algo, tmp_path, steps=4, eval_every=2, eval_episodes=2)
    final = summary["final_eval"]
    assert len(final["returns"]) == 2
    assert final["normalized_score"] == pytest.approx(
        100 * (final["mean_return"] + 20.272305) / (3234.3 + 20.272305)
    )
    with (tmp_path / "eval.csv").open() as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [2, 4]
    again = evaluate_checkpoint(tmp_path, episodes=2, seed=7)
    assert again.returns == final["returns"]  # deterministic policy, same seeds


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("algo", ["td3bc", "iql", "cql", "dt"])
def test_every_algorithm_trains_and_evaluates_on_cuda(algo, make_data, tmp_path) -> None:
    data = make_data(obs_dim=11, act_dim=3, env_id="Hopper-v5")
    summary = loop.train(
        data,
        algo,
        make_config(algo, SMALL[algo]),
        loop.LoopConfig(steps=4, eval_episodes=2, log_every=2),
        tmp_path,
        device="cuda",
        progress=False,
    )
    assert summary["final_eval"]["returns"]
