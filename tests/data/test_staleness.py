"""Stale derived data: splits and relabel runs made before an append are shown as stale,
refused for training with the command that extends them, and extended to what a fresh run
over the whole store gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from click.testing import CliRunner

from ssorl_data.errors import StaleDataError
from ssorl_data.idm import IdmTrainConfig, train_idm
from ssorl_data.info import store_info
from ssorl_data.relabel import relabel
from ssorl_data.splits import extend_split, make_split
from ssorl_data.store import RelabelRun, TrajectoryStore
from ssorl_data.verify import verify_store
from ssorl_train.cli.main import cli
from ssorl_train.dataset import load_training_data
from ssorl_train.errors import MissingRelabelError
from tests.data.factories import make_store
from tests.idm.conftest import ACT_DIM, OBS_DIM, dynamics_batch

TINY = IdmTrainConfig(hidden=(16, 16), members=2, max_steps=20, eval_every=10, batch_size=64)
CHUNK = 16


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _run(*args) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def _batch(seed: int, n_episodes: int):
    rng = np.random.default_rng(seed)
    return dynamics_batch(rng, rng.integers(3, 30, size=n_episodes))


def _hdf5(tmp_path: Path, name: str, seed: int, n_episodes: int) -> Path:
    """A D4RL-layout file of dynamics episodes, written by `ssorl data export`."""
    store = make_store(tmp_path / f"{name}-src", _batch(seed, n_episodes),
                       obs_shape=(OBS_DIM,), act_shape=(ACT_DIM,))  # fmt: skip
    code, output = _run("data", "export", store, tmp_path / f"{name}.hdf5", "--format", "d4rl")
    assert code == 0, output
    return tmp_path / f"{name}.hdf5"


def _store_with_runs(path: Path, idm_dir: Path) -> Path:
    """A store of 20 episodes with split `half`, an IDM trained on it and run `r`."""
    make_store(path, _batch(0, 20), obs_shape=(OBS_DIM,), act_shape=(ACT_DIM,),
               chunk_steps=CHUNK)  # fmt: skip
    with TrajectoryStore.open(path, mode="a") as store:
        make_split(store, "half", labelled_fraction=0.5, seed=0)
        train_idm(store, "half", idm_dir, TINY, progress=False)
    relabel(path, idm_dir, "r", progress=False)
    return path


def _append(path: Path, seed: int = 1, n_episodes: int = 7) -> None:
    with TrajectoryStore.open(path, mode="a") as store:
        store.append(_batch(seed, n_episodes))


def _relabel_arrays(path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    with TrajectoryStore.open(path) as store:
        run = store.relabel_run(name)
        assert run.status == "complete" and run.done().all() and run.n_steps == store.n_steps
        return run.read("actions", 0, run.n_steps), run.read("uncertainty", 0, run.n_steps)


def test_append_makes_split_and_relabel_stale_until_extended_through_the_cli(tmp_path):
    first, more = _hdf5(tmp_path, "first", 0, 20), _hdf5(tmp_path, "more", 1, 7)
    store, idm, run_dir = tmp_path / "store", tmp_path / "idm", tmp_path / "agent"
    assert _run("data", "import", first, store, "--chunk-steps", CHUNK, "--quiet")[0] == 0
    assert _run("data", "split", store, "--name", "half", "--labelled-fraction", "0.5")[0] == 0
    code, output = _run("idm", "train", store, "--split", "half", "--out", idm, "--hidden",
                        "16,16", "--members", "2", "--max-steps", "20", "--quiet")  # fmt: skip
    assert code == 0, output
    assert _run("relabel", store, "--idm", idm, "--name", "r", "--quiet")[0] == 0
    with TrajectoryStore.open(store) as opened:
        old_steps, old_episodes = opened.n_steps, opened.n_episodes
    assert old_steps % CHUNK, "the old end must cut a chunk short for this test"

    assert _run("data", "import", more, store, "--append", "--quiet")[0] == 0
    with TrajectoryStore.open(store) as opened:
        n_steps, n_episodes = opened.n_steps, opened.n_episodes
    code, output = _run("data", "info", store)
    assert code == 0, output
    assert f"half: stale (covers {old_episodes} of {n_episodes} episodes)" in output
    assert f"r: stale (covers {old_steps} of {n_steps} steps)" in output
    code, output = _run("data", "verify", store, "--quiet")
    assert code == 0 and output.count("stale: ") == 2, output
    assert f"ssorl data split {store} --name half --extend" in output

    train = ["train", store, "--algo", "td3bc", "--mode", "semi-supervised", "--split", "half",
             "--relabel", "r", "--steps", "2", "--out", run_dir, "--eval-every", "0",
             "--log-every", "1", "--set", "hidden_dim=8", "--set", "batch_size=4",
             "--quiet"]  # fmt: skip
    code, output = _run(*train)
    assert code == 2 and "Error: " in output and "split is stale" in output
    assert f"`ssorl data split {store} --name half --extend`" in output
    assert "--name half --labelled-fraction 0.5 --seed 0 --overwrite" in output
    assert _run("data", "split", store, "--name", "half", "--extend", "--overwrite")[0] == 2
    code, output = _run("data", "split", store, "--name", "half", "--extend")
    assert code == 0 and f"covers {n_episodes} episodes (was {old_episodes})" in output

    code, output = _run(*train)
    assert code == 2 and "relabel run is stale" in output
    assert f"`ssorl relabel {store} --idm {idm.resolve()} --name r`" in output
    code, output = _run("relabel", store, "--idm", idm, "--name", "r", "--quiet")
    assert code == 0 and f"extended relabels/r from {old_steps} to {n_steps} steps" in output
    assert f"{old_steps // CHUNK} chunks resumed" in output  # only the new chunks computed
    code, output = _run("data", "info", store)
    assert "half: complete" in output and "r: complete" in output and "stale" not in output

    assert _run("relabel", store, "--idm", idm, "--name", "fresh", "--quiet")[0] == 0
    for extended, fresh in zip(_relabel_arrays(store, "r"), _relabel_arrays(store, "fresh"),
                               strict=True):  # fmt: skip
        np.testing.assert_array_equal(extended, fresh)
    code, output = _run(*train)
    assert code == 0, output
    source = json.loads((run_dir / "summary.json").read_text())["data_source"]
    assert source["store"]["n_steps"] == n_steps and source["store"]["n_episodes"] == n_episodes
    assert source["split"]["name"] == "half" and source["split"]["n_episodes"] == n_episodes
    assert source["relabel"]["n_steps"] == n_steps
    provenance = json.loads((idm / "provenance.json").read_text())
    assert provenance["store_identity"]["n_episodes"] == old_episodes
    assert provenance["split_identity"]["visible_sha256"] == source["split"]["visible_sha256"]


def test_relabel_extension_killed_anywhere_finishes_equal_to_a_fresh_run(tmp_path, monkeypatch):
    store = _store_with_runs(tmp_path / "store", tmp_path / "idm")
    _append(store)
    with TrajectoryStore.open(store, mode="a") as opened:
        extend_split(opened, "half")
    write_chunk, calls = RelabelRun.write_chunk, []

    def dying_write(self, index, actions, uncertainty):
        calls.append(index)
        if len(calls) == 2:
            raise KeyboardInterrupt
        write_chunk(self, index, actions, uncertainty)

    monkeypatch.setattr(RelabelRun, "write_chunk", dying_write)
    with pytest.raises(KeyboardInterrupt):
        relabel(store, tmp_path / "idm", "r", progress=False)
    monkeypatch.setattr(RelabelRun, "write_chunk", write_chunk)
    with TrajectoryStore.open(store) as opened:
        assert opened.relabel_run("r").status == "partial"
    with pytest.raises(MissingRelabelError, match="'partial', not complete"):
        load_training_data(store, "semi-supervised", "half", "r")  # not used while partial
    result = relabel(store, tmp_path / "idm", "r", progress=False)
    assert result.extended_from is None and result.chunks_written > 0  # an ordinary resume
    # killed inside extend_relabel, after the arrays grew but before the sizes changed
    _append(store, seed=2, n_episodes=3)
    with TrajectoryStore.open(store, mode="a") as opened:
        group = zarr.open_group(store / "relabels" / "r", mode="r+")
        group.update_attributes({"status": "partial"})
        group["actions"].resize((opened.n_steps, ACT_DIM))
        group["done"].resize((-(-opened.n_steps // CHUNK),))
        extend_split(opened, "half")
    relabel(store, tmp_path / "idm", "r", progress=False)
    relabel(store, tmp_path / "idm", "fresh", progress=False)
    for extended, fresh in zip(_relabel_arrays(store, "r"), _relabel_arrays(store, "fresh"),
                               strict=True):  # fmt: skip
        np.testing.assert_array_equal(extended, fresh)
    with TrajectoryStore.open(store) as opened:
        assert verify_store(opened).ok and not verify_store(opened).stale


def test_stale_data_is_refused_for_training_but_full_mode_ignores_the_split(tmp_path):
    store = _store_with_runs(tmp_path / "store", tmp_path / "idm")
    assert load_training_data(store, "semi-supervised", "half", "r").n_proxy > 0
    _append(store)
    with pytest.raises(StaleDataError, match=r"covers 20 of the store's 27 episodes"):
        load_training_data(store, "labelled-only", "half")
    with pytest.raises(StaleDataError, match="--extend"):
        load_training_data(store, "semi-supervised", "half", "r")
    assert load_training_data(store, "full", "half").n_episodes == 27
    with TrajectoryStore.open(store, mode="a") as opened:
        with pytest.raises(StaleDataError, match="training the IDM"):
            train_idm(opened, "half", None, TINY, progress=False)
        extended = extend_split(opened, "half")
        assert not extended.visible[20:].any() and extended.attrs["n_episodes"] == 27
    with pytest.raises(StaleDataError, match="relabel run is stale"):
        load_training_data(store, "semi-supervised", "half", "r")
    assert load_training_data(store, "labelled-only", "half").n_episodes == 27


def test_split_extension_keeps_its_identity_and_records_itself(tmp_path):
    store = _store_with_runs(tmp_path / "store", tmp_path / "idm")
    with TrajectoryStore.open(store) as opened:
        before = opened.read_split("half").attrs
    assert before["n_episodes"] == 20 and before["n_steps"] > 0 and before["visible_sha256"]
    _append(store)
    with TrajectoryStore.open(store, mode="a") as opened:
        extend_split(opened, "half")
        after = opened.read_split("half")
        assert opened.raw_array_info("splits/half/visible")[0] == (27,)
    assert after.attrs["visible_sha256"] == before["visible_sha256"]
    assert after.attrs["extended"][0]["from_episodes"] == 20
    assert after.attrs["extended"][0]["to_episodes"] == 27
    assert after.attrs["labelled_fraction"] == before["labelled_fraction"]  # its protocol


def test_a_remade_split_makes_runs_of_idms_trained_on_it_refused(tmp_path):
    store = _store_with_runs(tmp_path / "store", tmp_path / "idm")
    with TrajectoryStore.open(store, mode="a") as opened:
        make_split(opened, "half", labelled_fraction=0.5, seed=1, overwrite=True)
    with pytest.raises(StaleDataError, match="made again with other visible episodes"):
        load_training_data(store, "semi-supervised", "half", "r")


def test_verify_reports_a_split_edited_behind_its_back_but_not_a_stale_one(tmp_path):
    store = _store_with_runs(tmp_path / "store", tmp_path / "idm")
    _append(store)
    with TrajectoryStore.open(store) as opened:
        report = verify_store(opened)
    assert report.ok and len(report.stale) == 2
    visible = zarr.open_array(store / "splits" / "half" / "visible", mode="r+")
    visible[int(np.flatnonzero(~visible[:])[0])] = True  # a hidden episode made visible
    with TrajectoryStore.open(store) as opened:
        violations = verify_store(opened).violations
    assert any("visible_sha256 differs" in v for v in violations), violations


def test_stores_without_the_recorded_sizes_open_train_and_still_show_stale(tmp_path):
    store = _store_with_runs(tmp_path / "store", tmp_path / "idm")
    split = zarr.open_group(store / "splits" / "half", mode="r+")
    for key in ("n_episodes", "n_steps", "visible_sha256"):
        del split.attrs[key]  # as a split written before they were recorded
    run = zarr.open_group(store / "relabels" / "r", mode="r+")
    provenance = dict(run.attrs["idm_provenance"])
    del provenance["store_identity"], provenance["split_identity"]
    run.update_attributes({"idm_provenance": provenance})
    with TrajectoryStore.open(store) as opened:
        assert verify_store(opened).ok
        derived = {d["name"]: d for d in store_info(opened)["derived"]}
    assert derived["half"]["description"] == "complete" and derived["half"]["note"]
    data = load_training_data(store, "semi-supervised", "half", "r")
    assert data.source["split"]["visible_sha256"] and data.source["relabel"]["idm_split"] is None
    _append(store)
    with TrajectoryStore.open(store) as opened:
        derived = {d["name"]: d for d in store_info(opened)["derived"]}
    assert derived["half"]["description"] == "stale (covers 20 of 27 episodes)"
    with pytest.raises(StaleDataError):
        load_training_data(store, "labelled-only", "half")
