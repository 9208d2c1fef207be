"""A crafted or edited IDM checkpoint is refused (IdmCheckpointError naming file and key)
before its network is allocated; an IDM directory is replaced only with overwrite."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest
from click.testing import CliRunner

from ssorl_data.errors import DirectoryLockedError, IdmCheckpointError, IdmExistsError
from ssorl_data.idm import IdmTrainConfig, load_idm, train_idm
from ssorl_data.idm import checkpoint as idm_checkpoint
from ssorl_data.store import TrajectoryStore
from ssorl_data.store.lock import DirectoryLock
from ssorl_train.cli.main import cli

QUICK = IdmTrainConfig(hidden=(16, 16), members=2, max_steps=10, eval_every=5)


@pytest.fixture
def idm_copy(trained, tmp_path):
    shutil.copytree(trained[1], tmp_path / "idm")
    return tmp_path / "idm"


def _edit_config(directory, **changes) -> None:
    path = directory / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


@pytest.mark.parametrize(
    ("key", "changes"),
    [
        ("obs_std", lambda c: {"obs_std": [0.0] * len(c["obs_std"])}),
        ("obs_std", lambda c: {"obs_std": [-1.0] * len(c["obs_std"])}),
        ("obs_std", lambda c: {"obs_std": [float("nan")] * len(c["obs_std"])}),
        ("obs_mean", lambda c: {"obs_mean": [float("inf")] * len(c["obs_mean"])}),
        ("obs_mean", lambda c: {"obs_mean": c["obs_mean"][:-1]}),
        ("k", lambda c: {"k": "1"}),
        ("k", lambda c: {"k": -1}),
        ("members", lambda c: {"members": 2.0}),
        ("hidden", lambda c: {"hidden": [0]}),
        ("shared_trunk", lambda c: {"shared_trunk": 1}),
        ("action_high", lambda c: {"action_high": c["action_low"]}),
    ],
)
def test_a_crafted_config_is_refused_naming_the_key(idm_copy, key, changes):
    config = json.loads((idm_copy / "config.json").read_text())
    _edit_config(idm_copy, **changes(config))
    with pytest.raises(IdmCheckpointError, match=f"config.json: key '{key}'"):
        load_idm(idm_copy)


def test_huge_hidden_sizes_are_refused_before_allocation(idm_copy, monkeypatch):
    _edit_config(idm_copy, hidden=[200_000, 200_000])  # 160 GB if built
    real_build = idm_checkpoint.build_network

    def meta_only(spec):
        import torch

        assert torch.empty(0).device.type == "meta", "a network was built before the check"
        return real_build(spec)

    monkeypatch.setattr(idm_checkpoint, "build_network", meta_only)
    with pytest.raises(IdmCheckpointError, match="model.safetensors: weights do not fit"):
        load_idm(idm_copy)


@pytest.mark.parametrize(
    "content",
    [pickle.dumps({"weights": [1, 2, 3]}), b"garbage" * 10, b""],
    ids=["pickle", "garbage", "empty"],
)
def test_a_weights_file_that_is_not_safetensors_is_refused(idm_copy, content):
    (idm_copy / "model.safetensors").write_bytes(content)
    with pytest.raises(IdmCheckpointError, match="model.safetensors: not a readable safetensors"):
        load_idm(idm_copy)


@pytest.mark.parametrize("document", ["[1, 2]", '"text"', "{broken"])
def test_provenance_and_config_must_be_json_objects(idm_copy, trained, document):
    (idm_copy / "provenance.json").write_text(document)
    with pytest.raises(IdmCheckpointError, match="provenance.json"):
        load_idm(idm_copy)
    shutil.copy(trained[1] / "provenance.json", idm_copy)
    (idm_copy / "config.json").write_text(document)
    with pytest.raises(IdmCheckpointError, match="config.json"):
        load_idm(idm_copy)


def test_the_cli_reports_a_crafted_idm_without_a_traceback(trained, idm_copy):
    _edit_config(idm_copy, k="1")
    result = CliRunner().invoke(cli, ["idm", "eval", str(trained[0]), "--idm", str(idm_copy)])
    assert result.exit_code == 2 and result.output.startswith("Error: ")
    assert "key 'k'" in result.output and "Traceback" not in result.output


def test_an_existing_idm_is_replaced_only_with_overwrite(trained, idm_copy, tmp_path):
    before = (idm_copy / "model.safetensors").read_bytes()
    with TrajectoryStore.open(trained[0]) as store:
        with pytest.raises(IdmExistsError, match="--overwrite"):
            train_idm(store, "half", idm_copy, QUICK, progress=False)
        assert (idm_copy / "model.safetensors").read_bytes() == before
        train_idm(store, "half", idm_copy, QUICK, progress=False, overwrite=True)
    assert load_idm(idm_copy).spec.hidden == (16, 16)
    args = ["idm", "train", str(trained[0]), "--split", "half", "--out", str(idm_copy),
            "--hidden", "16,16", "--members", "2", "--max-steps", "10", "--eval-every", "5",
            "--quiet"]  # fmt: skip
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 2 and "--overwrite" in refused.output
    assert "Traceback" not in refused.output
    assert CliRunner().invoke(cli, [*args, "--overwrite"]).exit_code == 0


def test_a_second_writer_of_an_idm_directory_is_refused(trained, tmp_path):
    with DirectoryLock(tmp_path / "idm", "IDM checkpoint"):
        with TrajectoryStore.open(trained[0]) as store:
            with pytest.raises(DirectoryLockedError, match="another process"):
                train_idm(store, "half", tmp_path / "idm", QUICK, progress=False)
    assert not (tmp_path / "idm" / "model.safetensors").exists()
