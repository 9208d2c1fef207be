"""One vocabulary across the algorithm configs; old names fail for users, load from checkpoints."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from ssorl_train.algos import ALGORITHMS, make_algorithm, make_config
from ssorl_train.algos.renames import RENAMED_FIELDS, RENAMED_STATE
from ssorl_train.checkpoint import load_checkpoint, paths, save_checkpoint
from ssorl_train.cli.main import cli
from ssorl_train.errors import AlgorithmConfigError
from ssorl_train.evaluate import load_policy
from tests.train.test_loop import SMALL, _run, _tensors

RENAMES = [(algo, old, new) for algo, names in RENAMED_FIELDS.items() for old, new in names.items()]


def _fields(algo: str) -> set[str]:
    return {f.name for f in fields(ALGORITHMS[algo][0])}


def test_shared_concepts_have_one_name_in_every_config() -> None:
    for algo in ALGORITHMS:
        assert {"batch_size", "hidden_dim"} <= _fields(algo), algo
    for algo in ("td3bc", "iql", "cql"):  # actor-critic: one learning rate per network
        assert {"actor_lr", "critic_lr", "gamma", "tau"} <= _fields(algo), algo
        assert "actor" in ALGORITHMS[algo][1]._state_names, algo
    assert "n_layers" in _fields("cql") and "n_layers" in _fields("dt")


@pytest.mark.parametrize(("algo", "old", "new"), RENAMES)
def test_an_old_field_name_is_an_error_that_names_the_new_one(algo, old, new) -> None:
    assert new in _fields(algo) and old not in _fields(algo)
    for value in ("3", 3):  # from --set / TOML strings and from Python values
        with pytest.raises(AlgorithmConfigError, match=f"{old} was renamed to {new}"):
            make_config(algo, {old: value})


def test_renamed_state_keys_are_the_algorithms_state_names() -> None:
    for algo, names in RENAMED_STATE.items():
        state_names = ALGORITHMS[algo][1]._state_names
        assert set(names.values()) <= set(state_names) and not set(names) & set(state_names)


def test_set_and_toml_overrides_with_an_old_name_fail_without_a_traceback(tmp_path) -> None:
    runner = CliRunner()
    args = ["train", str(tmp_path), "--algo", "cql", "--steps", "1", "--out", str(tmp_path / "r")]
    result = runner.invoke(cli, [*args, "--set", "policy_lr=1e-4"])
    assert result.exit_code == 2 and "policy_lr was renamed to actor_lr" in result.output
    assert "Traceback" not in result.output
    toml = tmp_path / "run.toml"
    toml.write_text(
        '[data]\nenv_id = "Hopper-v5"\n[train]\nalgo = "dt"\noverrides = { embed_dim = 64 }\n'
    )
    result = runner.invoke(cli, ["run", str(toml), "--out", str(tmp_path / "p")])
    assert result.exit_code == 2 and "embed_dim was renamed to hidden_dim" in result.output
    assert "Traceback" not in result.output


def _write_as_before_the_renames(stem: Path, algo: str, obs_dim: int, act_dim: int) -> None:
    """Rewrite a checkpoint with the field names and state keys (and, for DT, the single
    AdamW parameter group) that checkpoints had before the renames."""
    state, meta = load_checkpoint(stem)
    old_fields = {new: old for old, new in RENAMED_FIELDS.get(algo, {}).items()}
    old_keys = {new: old for old, new in RENAMED_STATE.get(algo, {}).items()}
    config = {old_fields.get(k, k): v for k, v in meta["algo_config"].items()}
    algorithm = {old_keys.get(k, k): v for k, v in state["algorithm"].items()}
    if algo == "dt":
        fresh = make_algorithm(
            algo, make_config(algo, SMALL[algo]), obs_dim, act_dim, torch.device("cpu")
        )
        position = {id(p): i for i, p in enumerate(fresh.model.parameters())}
        order = [position[id(p)] for g in fresh.optimizer.param_groups for p in g["params"]]
        optimizer = algorithm["optimizer"]
        (group, _) = optimizer["param_groups"]
        algorithm["optimizer"] = {
            "state": {order[i]: moments for i, moments in optimizer["state"].items()},
            "param_groups": [group | {"params": sorted(order)}],
        }
    save_checkpoint(stem, state | {"algorithm": algorithm}, meta | {"algo_config": config})


@pytest.mark.parametrize("algo", ["iql", "cql", "dt"])
def test_a_checkpoint_from_before_the_renames_evaluates_and_resumes_exactly(
    algo, make_data, tmp_path
) -> None:
    data = make_data(episode_lengths=(20, 9, 25))
    _run(data, algo, tmp_path / "straight", steps=8)
    _run(data, algo, tmp_path / "old", steps=4)
    stem = tmp_path / "old" / "checkpoint"
    _write_as_before_the_renames(stem, algo, data.obs_dim, data.act_dim)
    written = json.loads(paths(stem)[1].read_text())  # the JSON skeleton of the state
    state_keys = {k for k, _ in dict(written["state"]["__dict__"])["algorithm"]["__dict__"]}
    assert set(RENAMED_FIELDS.get(algo, {})) <= set(written["meta"]["algo_config"])
    assert set(RENAMED_STATE.get(algo, {})) <= state_keys

    algorithm, _, _ = load_policy(tmp_path / "old")
    assert algorithm.config == make_config(algo, SMALL[algo]) and algorithm.step == 4
    _run(data, algo, tmp_path / "old", steps=8, resume=True)
    straight, _ = load_checkpoint(tmp_path / "straight" / "checkpoint")
    resumed, _ = load_checkpoint(stem)
    pairs = dict(_tensors(straight))
    assert pairs.keys() == dict(_tensors(resumed)).keys()
    for name, tensor in _tensors(resumed):
        assert torch.equal(tensor, pairs[name]), name
