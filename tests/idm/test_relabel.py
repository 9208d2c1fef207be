"""Relabelling: chunk-aligned results equal to whole-store inference, resume, refusals, Dask."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ssorl_data import ops
from ssorl_data.errors import ReadOnlyStoreError, RelabelExistsError
from ssorl_data.idm import load_idm
from ssorl_data.relabel import relabel
from ssorl_data.store import RelabelRun, TrajectoryStore
from ssorl_data.verify import verify_store
from ssorl_train.cli.main import cli


def _arrays(store_path, name):
    with TrajectoryStore.open(store_path) as store:
        run = store.relabel_run(name)
        return run.read("actions", 0, run.n_steps), run.read("uncertainty", 0, run.n_steps)


def _whole_store_prediction(store_path, idm):
    """The same ensemble on windows built from the whole store at once (no chunks, no halo)."""
    with TrajectoryStore.open(store_path) as store:
        table = store.episode_table()
        obs = store.read_observations(0, store.n_steps + store.n_episodes)
    n, k = int(table.lengths.sum()), idm.spec.k
    windows = torch.empty(n, k + 2, obs.shape[1])
    valid = torch.empty(n, k + 2, dtype=torch.bool)
    episode = np.repeat(np.arange(table.n_episodes), table.lengths)
    ops.idm_windows(torch.from_numpy(obs), torch.from_numpy(table.step_start),
                    torch.from_numpy(table.lengths), torch.from_numpy(episode), torch.arange(n),
                    idm.mean, idm.std, k, windows, valid)  # fmt: skip
    with torch.inference_mode():
        actions, uncertainty, _ = idm.predict(windows)
    return actions.numpy(), uncertainty.numpy()


def test_relabel_writes_every_step_chunk_aligned_with_provenance(trained, store_copy):
    idm = load_idm(trained[1])
    result = relabel(store_copy, trained[1], "r", progress=False, batch_size=5)
    actions, uncertainty = _arrays(store_copy, "r")
    want_actions, want_uncertainty = _whole_store_prediction(store_copy, idm)
    np.testing.assert_allclose(actions, want_actions, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(uncertainty, want_uncertainty, rtol=1e-4, atol=1e-7)
    assert result.chunks_resumed == 0 and result.chunks_written == -(-result.n_steps // 16)
    with TrajectoryStore.open(store_copy) as store:
        run = store.relabel_run("r")
        attrs = run.attrs
        assert run.status == "complete" and run.done().all()
        assert verify_store(store).ok
    assert attrs["k"] == 1 and attrs["split"] == "half" and len(attrs["idm_hash"]) == 64
    assert attrs["idm_config"]["members"] == 3 and attrs["package_version"]
    m = attrs["metrics"]
    assert m["hidden_mse"] < 0.2 * m["hidden_action_variance"]
    assert m["recorded_n_steps"] == result.n_steps


class _Killed(Exception):
    pass


def test_killed_relabel_resumes_to_the_same_arrays(trained, store_copy, monkeypatch):
    relabel(store_copy, trained[1], "fresh", progress=False)
    write_chunk = RelabelRun.write_chunk
    calls = []

    def dying_write(self, index, actions, uncertainty):
        calls.append(index)
        if len(calls) == 4:  # killed halfway through writing the fourth chunk
            self._group["actions"][index * self.chunk_steps] = actions[0]
            raise _Killed
        write_chunk(self, index, actions, uncertainty)

    monkeypatch.setattr(RelabelRun, "write_chunk", dying_write)
    with pytest.raises(_Killed):
        relabel(store_copy, trained[1], "resumed", progress=False)
    monkeypatch.setattr(RelabelRun, "write_chunk", write_chunk)
    with TrajectoryStore.open(store_copy) as store:
        run = store.relabel_run("resumed")
        assert run.status == "partial" and run.done().sum() == 3
    result = relabel(store_copy, trained[1], "resumed", progress=False)
    assert result.chunks_resumed == 3
    for a, b in zip(_arrays(store_copy, "fresh"), _arrays(store_copy, "resumed"), strict=True):
        np.testing.assert_array_equal(a, b)


def test_existing_runs_are_refused_unless_overwritten(trained, store_copy, tmp_path):
    relabel(store_copy, trained[1], "r", progress=False)
    with pytest.raises(RelabelExistsError, match="--overwrite"):
        relabel(store_copy, trained[1], "r", progress=False)
    assert relabel(store_copy, trained[1], "r", overwrite=True, progress=False).chunks_written
    with TrajectoryStore.open(store_copy, mode="a") as store:
        store.create_relabel("partial-other", {"idm_hash": "0" * 64})
    with pytest.raises(RelabelExistsError, match="another IDM"):
        relabel(store_copy, trained[1], "partial-other", progress=False)
    with TrajectoryStore.open(store_copy) as store:
        with pytest.raises(ReadOnlyStoreError, match="mode='a'"):
            store.create_relabel("x", {})


def test_verify_reports_non_finite_actions_in_done_chunks(trained, store_copy):
    import zarr

    relabel(store_copy, trained[1], "r", progress=False)
    zarr.open_array(store_copy / "relabels" / "r" / "actions", mode="r+")[20] = np.nan
    with TrajectoryStore.open(store_copy) as store:
        violations = verify_store(store).violations
    assert any("chunk 1 is marked done but step 20" in v for v in violations)


def test_cli_train_eval_relabel(trained, store_copy, tmp_path):
    runner = CliRunner()
    out = tmp_path / "idm"
    result = runner.invoke(cli, ["idm", "train", str(store_copy), "--split", "half", "--out",
                                 str(out), "--hidden", "16,16", "--members", "2", "--max-steps",
                                 "20", "--eval-every", "10", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "trained 2-member IDM" in result.output and (out / "model.safetensors").is_file()
    result = runner.invoke(cli, ["idm", "eval", str(store_copy), "--idm", str(out), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert {"hidden_mse", "hidden_action_variance", "hidden_outside_uncertainty",
            "val_nll"} <= set(metrics)  # fmt: skip
    result = runner.invoke(cli, ["relabel", str(store_copy), "--idm", str(out), "--name", "c",
                                 "--quiet"])  # fmt: skip
    assert result.exit_code == 0 and "relabelled" in result.output, result.output
    result = runner.invoke(cli, ["relabel", str(store_copy), "--idm", str(out), "--name", "c"])
    assert result.exit_code == 2 and "--overwrite" in result.output


def test_dask_local_cluster_equals_the_in_process_run(trained, store_copy):
    pytest.importorskip("distributed")
    relabel(store_copy, trained[1], "local", progress=False)
    result = relabel(store_copy, trained[1], "dask", workers=2, progress=False)
    assert result.chunks_written > 2
    for a, b in zip(_arrays(store_copy, "local"), _arrays(store_copy, "dask"), strict=True):
        np.testing.assert_array_equal(a, b)


def test_sigkilled_relabel_process_resumes_to_the_same_arrays(trained, store_copy):
    from ssorl_data.verify import verify_store

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "tests.idm.relabel_worker", str(store_copy),
               str(trained[1]), "killed"]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, cwd=root, env=env) as proc:
        assert proc.stdout is not None
        for _ in range(5):  # let five chunks land, then kill it while it writes more
            assert proc.stdout.readline().strip() == b"chunk"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the relabel finished before it was killed"
    with TrajectoryStore.open(store_copy) as store:
        run = store.relabel_run("killed")
        assert run.status == "partial" and 5 <= run.done().sum() < run.n_chunks
        assert verify_store(store).ok
    result = relabel(store_copy, trained[1], "killed", progress=False)
    assert result.chunks_resumed >= 5
    relabel(store_copy, trained[1], "clean", progress=False)
    for a, b in zip(_arrays(store_copy, "clean"), _arrays(store_copy, "killed"), strict=True):
        np.testing.assert_array_equal(a, b)
