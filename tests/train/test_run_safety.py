"""Nothing of a training run is lost or mixed: the run directory is locked, an existing run
is replaced only on request, the final checkpoint comes before the final evaluation, a
crash while saving keeps the previous checkpoint, and a crafted checkpoint.json is refused
before any network is built."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from ssorl_data.errors import DirectoryLockedError
from ssorl_data.layout import LOCK_FILE
from ssorl_data.store.lock import DirectoryLock
from ssorl_train import checkpoint, loop
from ssorl_train.algos import make_config
from ssorl_train.checkpoint import load_checkpoint, paths, previous, saved_step
from ssorl_train.errors import CheckpointError
from ssorl_train.evaluate import evaluate_checkpoint, load_policy
from tests.train.test_cli import _hopper_store
from tests.train.test_loop import SMALL, _tensors

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _run(data, algo, out, steps, resume=False, overwrite=False, **loop_options):
    """tests/train/test_loop.py's small run, with `overwrite`."""
    options = {"eval_every": 0, "checkpoint_every": 4, "log_every": 2} | loop_options
    config = loop.LoopConfig(steps=steps, seed=7, **options)
    extra = {"overwrite": True} if overwrite else {}  # the call as the code before it took
    return loop.train(
        data, algo, make_config(algo, SMALL[algo]), config, out, resume, progress=False, **extra
    )


def _same_state(a: Path, b: Path) -> None:
    """The checkpoints of two run directories hold bit-identical tensors."""
    left = dict(_tensors(load_checkpoint(a / "checkpoint")[0]))
    right = dict(_tensors(load_checkpoint(b / "checkpoint")[0]))
    assert left.keys() == right.keys()
    for name, tensor in left.items():
        assert torch.equal(tensor, right[name]), name


# ---------------------------------------------------------------- one writer per run directory
def test_a_second_train_process_into_the_same_out_is_refused(tmp_path) -> None:
    _hopper_store(tmp_path / "store")
    out = tmp_path / "run"

    def args(steps: int) -> list[str]:
        return [sys.executable, "-m", "ssorl_train", "train", str(tmp_path / "store"),
                "--algo", "td3bc", "--steps", str(steps), "--out", str(out), "--eval-every",
                "0", "--checkpoint-every", "0", "--log-every", "100", "--set", "hidden_dim=8",
                "--set", "batch_size=4", "--quiet"]  # fmt: skip

    first = subprocess.Popen(args(10_000_000), cwd=ROOT, env=ENV)
    try:
        lock = out / LOCK_FILE
        deadline = time.monotonic() + 300
        while not (lock.exists() and lock.read_text() == str(first.pid)):
            assert first.poll() is None, "the first training died"
            assert time.monotonic() < deadline, "the first training never took its lock"
            time.sleep(0.1)
        second = subprocess.run(
            args(2), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300
        )
        assert first.poll() is None  # still training: the second really overlapped it
    finally:
        first.kill()
        first.wait()
    assert second.returncode == 2, second.stderr
    assert second.stderr.startswith("Error: ") and "Traceback" not in second.stderr
    assert f"pid {first.pid}" in second.stderr and str(lock) in second.stderr
    with DirectoryLock(out, "training run"):  # the kernel dropped the killed one's lock
        pass


def test_train_is_refused_while_another_writer_holds_the_directory(tiny_data, tmp_path) -> None:
    with DirectoryLock(tmp_path / "run", "training run"):
        with pytest.raises(DirectoryLockedError, match="another process"):
            _run(tiny_data, "td3bc", tmp_path / "run", steps=2)
    assert not paths(tmp_path / "run" / "checkpoint")[1].exists()


# ---------------------------------------------------------------- replacing a run
def test_an_existing_run_is_replaced_only_with_overwrite(tiny_data, tmp_path) -> None:
    _run(tiny_data, "td3bc", tmp_path, steps=6)  # a finished run, with a previous pair
    assert previous(tmp_path / "checkpoint").with_name("checkpoint.prev.json").exists()
    with pytest.raises(CheckpointError, match="--overwrite to replace it"):
        _run(tiny_data, "td3bc", tmp_path, steps=2)
    with pytest.raises(CheckpointError, match="pass one"):
        _run(tiny_data, "td3bc", tmp_path, steps=2, resume=True, overwrite=True)
    summary = _run(tiny_data, "td3bc", tmp_path, steps=2, overwrite=True)
    assert summary["steps"] == 2 and saved_step(tmp_path) == 2
    assert [r.split(",")[0] for r in (tmp_path / "log.csv").read_text().splitlines()] == [
        "step",
        "2",
    ]
    assert not paths(previous(tmp_path / "checkpoint"))[1].exists()  # the old run's is gone


def test_a_partial_run_also_needs_resume_or_overwrite(tiny_data, tmp_path, monkeypatch) -> None:
    real_save = loop._save

    def save_then_die(out, step, *rest):
        real_save(out, step, *rest)
        raise KeyboardInterrupt  # killed right after the first checkpoint

    monkeypatch.setattr(loop, "_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_data, "td3bc", tmp_path, steps=8)
    monkeypatch.setattr(loop, "_save", real_save)
    with pytest.raises(CheckpointError, match="partial run"):
        _run(tiny_data, "td3bc", tmp_path, steps=8)
    assert _run(tiny_data, "td3bc", tmp_path, steps=8, resume=True)["steps_this_process"] == 4


# ---------------------------------------------------------------- work kept at the end
def test_a_crash_in_the_final_evaluation_keeps_the_trained_agent(
    make_data, tmp_path, monkeypatch
) -> None:
    data = make_data(obs_dim=11, act_dim=3, env_id="Hopper-v5")
    options = {"eval_every": 0, "eval_episodes": 2, "checkpoint_every": 0}
    straight = _run(data, "td3bc", tmp_path / "straight", steps=4, **options)

    def broken(*args, **kwargs):
        raise RuntimeError("the env crashed")

    monkeypatch.setattr(loop, "evaluate", broken)
    with pytest.raises(RuntimeError, match="env crashed"):
        _run(data, "td3bc", tmp_path / "run", steps=4, **options)
    assert saved_step(tmp_path / "run") == 4  # saved before the evaluation that crashed
    monkeypatch.undo()
    again = evaluate_checkpoint(tmp_path / "run", episodes=2, seed=7)
    assert again.returns == straight["final_eval"]["returns"]
    resumed = _run(data, "td3bc", tmp_path / "run", steps=4, resume=True, **options)
    assert resumed["steps_this_process"] == 0  # nothing retrained, only the evaluation redone
    assert resumed["final_eval"] == straight["final_eval"]
    rows = (tmp_path / "run" / "eval.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["step", "4"]
    _same_state(tmp_path / "straight", tmp_path / "run")


# ---------------------------------------------------------------- torn saves
@pytest.mark.parametrize("fail_at", [0, 1, 2, 3, 4])
def test_a_crash_inside_a_save_keeps_a_complete_pair_and_resumes_exactly(
    make_data, tmp_path, monkeypatch, fail_at
) -> None:
    """Kill the save at step 8 before its n-th file replace (0: while writing the temporary
    files): a complete pair (step 4, as `checkpoint.*` or `checkpoint.prev.*`) survives, and
    the resumed run equals an uninterrupted one bit for bit."""
    data = make_data(episode_lengths=(20, 9, 25))
    _run(data, "td3bc", tmp_path / "straight", steps=12)
    real_save, real_replace, real_write = checkpoint.save_checkpoint, os.replace, save_file
    calls = {"replace": 0, "armed": False}

    def replace(src, dst):
        if calls["armed"]:
            calls["replace"] += 1
            if calls["replace"] == fail_at:
                raise KeyboardInterrupt
        return real_replace(src, dst)

    def dying_write(*args, **kwargs):
        real_write(*args, **kwargs)
        if calls["armed"] and fail_at == 0:
            raise KeyboardInterrupt

    def save(stem, state, meta):
        calls["armed"] = meta["step"] == 8
        real_save(stem, state, meta)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(checkpoint, "save_file", dying_write)
    monkeypatch.setattr(loop, "save_checkpoint", save)
    with pytest.raises(KeyboardInterrupt):
        _run(data, "td3bc", tmp_path / "killed", steps=12)
    monkeypatch.undo()
    assert saved_step(tmp_path / "killed") == 4
    assert load_checkpoint(tmp_path / "killed" / "checkpoint")[1]["step"] == 4
    _run(data, "td3bc", tmp_path / "killed", steps=12, resume=True)
    _same_state(tmp_path / "straight", tmp_path / "killed")


def test_resume_refuses_a_torn_pair_without_a_previous_one(tiny_data, tmp_path) -> None:
    _run(tiny_data, "td3bc", tmp_path / "a", steps=2)
    _run(tiny_data, "td3bc", tmp_path / "b", steps=2)
    tensors_a, _ = paths(tmp_path / "a" / "checkpoint")
    tensors_a.write_bytes(paths(tmp_path / "b" / "checkpoint")[0].read_bytes())
    with pytest.raises(CheckpointError, match="different ids"):
        _run(tiny_data, "td3bc", tmp_path / "a", steps=4, resume=True)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path) -> None:
    steps = "150"
    worker = [sys.executable, "-m", "tests.train.train_worker"]
    subprocess.run([*worker, str(tmp_path / "straight"), steps], cwd=ROOT, env=ENV,
                   check=True, stdout=subprocess.DEVNULL, timeout=600)  # fmt: skip
    killed = 0
    for delay in np.random.default_rng(0).uniform(0.2, 2.5, size=6):
        with subprocess.Popen(
            [*worker, str(tmp_path / "killed"), steps], stdout=subprocess.PIPE, cwd=ROOT, env=ENV
        ) as proc:
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
            time.sleep(float(delay))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        if proc.returncode == 0:  # it finished before the kill: nothing left to interrupt
            break
        assert proc.returncode == -signal.SIGKILL
        killed += 1
    subprocess.run([*worker, str(tmp_path / "killed"), steps], cwd=ROOT, env=ENV,
                   check=True, stdout=subprocess.DEVNULL, timeout=600)  # fmt: skip
    assert killed >= 3
    _same_state(tmp_path / "straight", tmp_path / "killed")
    logged = [(tmp_path / d / "log.csv").read_text().splitlines() for d in ("straight", "killed")]
    assert [r.split(",")[0] for r in logged[0]] == [r.split(",")[0] for r in logged[1]]


# ---------------------------------------------------------------- crafted checkpoint.json
def _edit(run: Path, change) -> Path:
    json_path = paths(run / "checkpoint")[1]
    document = json.loads(json_path.read_text())
    change(document)
    json_path.write_text(json.dumps(document))
    return json_path


@pytest.mark.parametrize(
    ("key", "change"),
    [
        ("meta.step", lambda d: d["meta"].update(step=-50)),
        ("meta.step", lambda d: d["meta"].update(step=10**6)),  # beyond loop.steps
        ("meta.step", lambda d: d["meta"].update(step="2")),
        ("meta.obs_dim", lambda d: d["meta"].update(obs_dim=3.0)),
        ("meta.algo", lambda d: d["meta"].update(algo=["td3bc"])),
        ("meta.loop.steps", lambda d: d["meta"]["loop"].update(steps=None)),
        ("meta.algo_config", lambda d: d["meta"]["algo_config"].update(hidden_dim="16")),
        ("meta.algo_config", lambda d: d["meta"]["algo_config"].update(batch_size=2.5)),
        # a config not matching the weights: checked on the meta device, nothing allocated
        ("state.algorithm.actor", lambda d: d["meta"]["algo_config"].update(hidden_dim=200_000)),
        ("state.normalizer.obs_mean", lambda d: d["meta"].update(obs_dim=4)),
    ],
)
def test_a_crafted_checkpoint_json_is_refused_naming_file_and_key(
    tiny_data, tmp_path, monkeypatch, key, change
) -> None:
    _run(tiny_data, "td3bc", tmp_path, steps=2)
    json_path = _edit(tmp_path, change)
    (tmp_path / "summary.json").unlink()

    def no_building(*args, **kwargs):
        raise AssertionError("a network was built from a refused checkpoint")

    monkeypatch.setattr(loop, "_build", no_building)
    for load in (
        lambda: load_policy(tmp_path),
        lambda: _run(tiny_data, "td3bc", tmp_path, steps=2, resume=True),
    ):
        with pytest.raises(CheckpointError) as error:
            load()
        assert str(json_path) in str(error.value) and f"key '{key}" in str(error.value)


def test_non_finite_or_non_positive_normalisation_is_refused(tiny_data, tmp_path) -> None:
    _run(tiny_data, "td3bc", tmp_path, steps=2)
    tensor_path = paths(tmp_path / "checkpoint")[0]
    tensors = load_file(tensor_path)
    from safetensors import safe_open

    with safe_open(str(tensor_path), "pt") as f:
        metadata = f.metadata()
    for bad in (torch.zeros(3), torch.full((3,), float("nan"))):
        save_file(tensors | {"/normalizer/obs_std": bad}, tensor_path, metadata=metadata)
        with pytest.raises(CheckpointError, match="state.normalizer.obs_std"):
            load_policy(tmp_path)
