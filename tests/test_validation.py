"""Every compute command checks its inputs before its first expensive step: a bad argument
exits with code 2 and one line naming it and what it accepts (no traceback), and the Python
API behind it refuses the same values."""

from __future__ import annotations

import os
import socket
import typing
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ssorl_data.errors import (
    InvalidArgumentError,
    SchedulerUnreachableError,
    SpaceMismatchError,
    StoreNotFoundError,
    UnknownEnvError,
)
from ssorl_data.expect import Expect
from ssorl_data.idm.training import IDM_FIELDS, IdmTrainConfig
from ssorl_data.io.importing import import_dataset
from ssorl_train import loop
from ssorl_train.algos import ALGORITHMS, make_config
from ssorl_train.cli.main import cli
from ssorl_train.dataset import load_training_data
from ssorl_train.errors import AlgorithmConfigError, MissingSplitError, PipelineConfigError
from ssorl_train.pipeline.config import DEFAULTS, PipelineConfig, key_types
from ssorl_train.sweep import SweepConfig
from tests.data.factories import make_store, random_batch
from tests.train.test_cli import _hopper_store


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_refused(result, *words: str) -> None:
    """Exit code 2, every word in the message, and no traceback."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.output, (word, result.output)


@pytest.fixture
def hopper(tmp_path) -> Path:
    _hopper_store(tmp_path / "store")
    return tmp_path / "store"


def train_args(store: Path, out: Path, *extra: str) -> list[str]:
    small = ["--set", "hidden_dim=8", "--set", "batch_size=4", "--eval-episodes", "1"]
    return ["train", store, "--algo", "td3bc", "--steps", "2", "--out", out, *small, *extra]


# --------------------------------------------------------------------- modes and splits


@pytest.mark.parametrize("mode", ["labelled-only", "semi-supervised"])
def test_a_mode_that_hides_actions_needs_a_split(hopper, tmp_path, mode) -> None:
    extra = ["--relabel", "r"] if mode == "semi-supervised" else []
    result = invoke(*train_args(hopper, tmp_path / "run", "--mode", mode, *extra))
    assert_refused(result, "needs a split", "--split", "--mode full")
    assert not (tmp_path / "run").exists()
    with pytest.raises(MissingSplitError):
        load_training_data(hopper, mode, relabel="r" if extra else None)


# --------------------------------------------------------------------------- import


def test_append_into_a_missing_path_is_refused(tmp_path) -> None:
    source = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(source, observations=rng.normal(size=(6, 3)), actions=rng.normal(size=(6, 2)),
             rewards=np.zeros(6), terminals=np.eye(6)[5].astype(bool))  # fmt: skip
    result = invoke("data", "import", source, tmp_path / "missing", "--append")
    assert_refused(result, str(tmp_path / "missing"), "Drop", "--append")
    assert not (tmp_path / "missing").exists()
    with pytest.raises(StoreNotFoundError):
        import_dataset(source, tmp_path / "missing", append=True, progress=False)


def test_an_unknown_env_id_is_refused_at_import(tmp_path) -> None:
    result = invoke("data", "import", tmp_path / "d.hdf5", tmp_path / "s", "--env-id",
                    "NotAnEnv-v0")  # fmt: skip
    assert_refused(result, "'NotAnEnv-v0'", "pprint_registry")
    close = invoke("data", "import", tmp_path / "d.hdf5", tmp_path / "s", "--env-id", "Hoper-v5")
    assert_refused(close, "Did you mean", "'Hopper-v5'")


# ----------------------------------------------------------------------- train / eval


@pytest.mark.parametrize(
    ("env_id", "words"),
    [
        ("HalfCheetah-v5", ["17 and 6", "11 observation and 3 action"]),
        ("NotAnEnv-v0", ["not know"]),
    ],
)
def test_train_checks_the_env_before_training(hopper, tmp_path, env_id, words) -> None:
    result = invoke(*train_args(hopper, tmp_path / "run", "--env-id", env_id))
    assert_refused(result, repr(env_id), *words)
    assert not (tmp_path / "run" / "log.csv").exists()  # not one step trained


def test_eval_checks_the_env_against_the_checkpoint(hopper, tmp_path) -> None:
    result = invoke(*train_args(hopper, tmp_path / "run", "--eval-every", "0"))
    assert result.exit_code == 0, result.output
    wrong = invoke("eval", tmp_path / "run", "--env-id", "HalfCheetah-v5", "--episodes", "1")
    assert_refused(wrong, "'HalfCheetah-v5'", "17 and 6")


@pytest.mark.parametrize(
    ("option", "value", "range_text"),
    [
        ("--steps", "-5", "x>=1"),
        ("--log-every", "0", "x>=1"),
        ("--eval-episodes", "0", "x>=1"),
        ("--checkpoint-every", "-1", "x>=0"),
        ("--eval-every", "-1", "x>=0"),
        ("--drop-uncertain", "1.5", "0<=x<1"),
        ("--weight-beta", "-1", "x>=0"),
        ("--seed", "-1", "x>=0"),
        ("--threads", "0", "x>=1"),
    ],
)
def test_train_refuses_numbers_out_of_range(hopper, tmp_path, option, value, range_text) -> None:
    result = invoke(*train_args(hopper, tmp_path / "run"), option, value)
    assert_refused(result, option, range_text)
    assert not (tmp_path / "run").exists()


def test_eval_refuses_zero_episodes(tmp_path) -> None:
    (tmp_path / "run").mkdir()
    assert_refused(invoke("eval", tmp_path / "run", "--episodes", "0"), "--episodes", "x>=1")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--hidden", "0"], ["--hidden", "integers >= 1"]),
        (["--hidden", "abc"], ["--hidden", "'abc'"]),
        (["--hidden", "256,"], ["--hidden"]),
        (["--lr", "0"], ["--lr", "x>0"]),
        (["--dropout", "1"], ["--dropout", "0<=x<1"]),
        (["--threads", "0"], ["--threads", "x>=1"]),
    ],
)
def test_idm_train_refuses_bad_sizes(tmp_path, args, words) -> None:
    result = invoke("idm", "train", tmp_path / "s", "--split", "a", "--out", tmp_path / "i", *args)
    assert_refused(result, *words)


@pytest.mark.parametrize(
    ("config", "values"),
    [
        (loop.LoopConfig, {"steps": -5}),
        (loop.LoopConfig, {"steps": 10, "log_every": 0}),
        (loop.LoopConfig, {"steps": 10, "eval_episodes": 0}),
        (loop.LoopConfig, {"steps": 10, "checkpoint_every": -1}),
        (loop.LoopConfig, {"steps": 2.5}),
        (IdmTrainConfig, {"hidden": (0,)}),
        (IdmTrainConfig, {"hidden": ()}),
        (IdmTrainConfig, {"lr": -1.0}),
        (IdmTrainConfig, {"members": True}),
    ],
)
def test_the_python_configs_refuse_what_the_cli_refuses(config, values) -> None:
    with pytest.raises(InvalidArgumentError, match=list(values)[-1]):
        config(**values)


def test_set_values_of_the_wrong_type_are_refused(hopper, tmp_path) -> None:
    assert_refused(invoke(*train_args(hopper, tmp_path / "r"), "--set", "batch_size=2.5"),
                   "batch_size", "integer")  # fmt: skip
    assert_refused(invoke(*train_args(hopper, tmp_path / "r"), "--set", "alpha=abc"),
                   "alpha", "number")  # fmt: skip
    for typed in ({"alpha": "2.5"}, {"batch_size": 2.5}, {"alpha": True}, {"alpha": [1.0]}):
        with pytest.raises(AlgorithmConfigError, match=next(iter(typed))):
            make_config("td3bc", typed, parse_strings=False)


def test_a_resume_mismatch_names_only_the_differing_fields(tmp_path) -> None:
    from tests.train.conftest import make_training_data

    data = make_training_data()
    small = {"hidden_dim": 8, "batch_size": 4}

    def run(alpha: float, resume: bool) -> None:
        loop.train(data, "td3bc", make_config("td3bc", small | {"alpha": alpha}),
                   loop.LoopConfig(steps=2, eval_every=0, log_every=1), tmp_path,
                   resume=resume, progress=False)  # fmt: skip

    run(2.5, resume=False)
    with pytest.raises(Exception, match=r"algo_config\.alpha: 2\.5 -> 1\.0") as caught:
        run(1.0, resume=True)
    assert "actor_lr" not in str(caught.value)  # an unchanged field is not printed


def test_threads_sets_torch_threads(hopper, tmp_path) -> None:
    before = torch.get_num_threads()
    try:
        result = invoke(*train_args(hopper, tmp_path / "run", "--eval-every", "0"),
                        "--threads", "1")  # fmt: skip
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    for command in (["train"], ["idm", "train"], ["relabel"]):
        help_text = " ".join(invoke(*command, "--help").output.split())
        assert "One thread per process is fastest" in help_text


# --------------------------------------------------------------------------------- TOML

BASE = {"data": {"env_id": "Hopper-v5"}}


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("train", "seeds", 0, "a non-empty list of integers >= 0"),
        ("train", "modes", "full", "a non-empty list of strings"),
        ("train", "steps", "100", "an integer >= 1"),
        ("train", "steps", 2.5, "an integer >= 1"),
        ("train", "overrides", "alpha=2", "a table"),
        ("eval", "eval_episodes", 0, "an integer >= 1"),
        ("split", "labelled_fraction", "0.1", "a number in [0, 1]"),
        ("idm", "hidden", 256, "a non-empty list of integers >= 1"),
        ("idm", "shared_trunk", 1, "a boolean"),
        ("data", "seed", True, "an integer >= 0"),
    ],
)
def test_toml_values_of_the_wrong_type_are_refused(section, key, value, expected) -> None:
    raw = BASE | {section: BASE.get(section, {}) | {key: value}}
    with pytest.raises(PipelineConfigError) as caught:
        PipelineConfig.from_dict(raw, where="c.toml")
    message = str(caught.value)
    assert f"c.toml: [{section}]" in message and key in message and expected in message
    assert f"Got {value!r}" in message


def test_every_schema_key_has_a_type() -> None:
    types = key_types()
    known = {name: set(keys) for name, keys in DEFAULTS.items()}
    known["data"] |= {"source", "env_id"}
    known["idm"] |= {f.name for f in fields(IdmTrainConfig)}
    for section, keys in known.items():
        assert keys <= set(types[section]), (section, keys - set(types[section]))
        assert all(isinstance(e, Expect) for e in types[section].values())
    # every IdmTrainConfig field is in its table, so its __post_init__ checks them all
    assert set(IDM_FIELDS) == {f.name for f in fields(IdmTrainConfig)}


def test_toml_overrides_of_the_wrong_type_are_refused() -> None:
    raw = BASE | {"train": {"overrides": {"alpha": "2.5"}}}
    with pytest.raises(AlgorithmConfigError, match="alpha"):
        PipelineConfig.from_dict(raw)


def test_sweep_values_of_the_wrong_type_are_refused() -> None:
    for sweep, words in (
        ({"jobs": True}, "jobs"),
        ({"seeds": 0}, "seeds"),
        ({"labelled_fraction": ["0.1"]}, "labelled_fraction"),
        ({"algo": ["td3bc"], "train": {"td3bc": 5}}, "sweep.train.td3bc"),
    ):
        with pytest.raises(PipelineConfigError, match=words):
            SweepConfig.from_dict(BASE | {"sweep": sweep})
    with pytest.raises(PipelineConfigError, match=r"\[train\]: expected seeds"):
        SweepConfig.from_dict(BASE | {"train": {"seeds": 0}, "sweep": {}})


def test_algorithm_config_fields_all_have_a_checkable_type() -> None:
    from ssorl_data.expect import expect_of

    for config_cls, _ in ALGORITHMS.values():
        hints = typing.get_type_hints(config_cls)
        assert all(expect_of(hints[f.name]) is not None for f in fields(config_cls))


# ------------------------------------------------------------------------ dask, minari


def closed_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens


def test_an_unreachable_scheduler_fails_fast() -> None:
    import time

    from ssorl_data.relabel import check_scheduler

    tick = time.perf_counter()
    with pytest.raises(SchedulerUnreachableError, match="No dask.distributed scheduler"):
        check_scheduler(f"tcp://127.0.0.1:{closed_loopback_port()}", timeout=2.0)
    assert time.perf_counter() - tick < 2.5  # refused at once: nothing listens there
    with pytest.raises(SchedulerUnreachableError, match="tcp://HOST:PORT"):
        check_scheduler("tcp://127.0.0.1:notaport")


def test_minari_export_to_a_relative_root(tmp_path, monkeypatch) -> None:
    import minari

    from ssorl_data.store import TrajectoryStore

    monkeypatch.chdir(tmp_path)
    make_store(Path("s"), random_batch(np.random.default_rng(0), [4, 5]))
    result = invoke("data", "export", "s", "ns/x-v0", "--format", "minari", "--minari-root", "rel")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "rel" / "ns" / "x-v0" / "data").is_dir()

    def fail(**kwargs):
        (Path(os.environ["MINARI_DATASETS_PATH"]) / "ns" / "y-v0" / "data").mkdir(parents=True)
        raise OSError("disk full")

    monkeypatch.setattr(minari, "create_dataset_from_buffers", fail)
    with TrajectoryStore.open("s") as store, pytest.raises(OSError, match="disk full"):
        from ssorl_data.io.minari_io import export_minari

        export_minari(store, "ns/y-v0", root="rel")
    assert not (tmp_path / "rel" / "ns" / "y-v0").exists()  # the failed export left nothing


def test_env_checks_in_python() -> None:
    from ssorl_data.envs import check_env_spaces

    assert check_env_spaces("Hopper-v5", 11, 3)[1].shape == (3,)
    with pytest.raises(SpaceMismatchError, match="HalfCheetah-v5"):
        check_env_spaces("HalfCheetah-v5", 11, 3)
    with pytest.raises(UnknownEnvError, match="pprint_registry"):
        check_env_spaces("NotAnEnv-v0", 11, 3)
