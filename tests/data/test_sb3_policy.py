"""Loading stable-baselines3 policies weights-only, and collecting with them."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import sys
import zipfile

import numpy as np
import pytest

from ssorl_data.errors import MissingDependencyError, PolicyLoadError, PolicyNotFoundError
from ssorl_data.sb3_policy import load_sb3_policy, parse_sb3_spec
from ssorl_data.store import TrajectoryStore

sb3 = pytest.importorskip("stable_baselines3")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Tiny SAC, SAC with Tanh, TD3 and PPO models trained briefly on Pendulum-v1, saved."""
    from torch import nn

    root = tmp_path_factory.mktemp("sb3")

    def arch(**more):  # a fresh dict each: SB3 adds keys to the one it is given
        return {"net_arch": [16, 16], **more}

    models = {
        "sac": sb3.SAC(
            "MlpPolicy", "Pendulum-v1", policy_kwargs=arch(), learning_starts=20, seed=0
        ),
        "sac_tanh": sb3.SAC(
            "MlpPolicy",
            "Pendulum-v1",
            policy_kwargs=arch(activation_fn=nn.Tanh),
            learning_starts=20,
            seed=0,
        ),
        "td3": sb3.TD3(
            "MlpPolicy", "Pendulum-v1", policy_kwargs=arch(), learning_starts=20, seed=0
        ),
        "ppo": sb3.PPO(
            "MlpPolicy", "Pendulum-v1", policy_kwargs=arch(), n_steps=64, batch_size=64, seed=0
        ),
    }
    for name, model in models.items():
        model.learn(100 if name == "sac" else 64)
        model.save(root / f"{name}.zip")
    return root, models


@pytest.fixture
def pendulum_obs():
    rng = np.random.default_rng(0)
    return rng.uniform([-1, -1, -8], [1, 1, 8], size=(64, 3)).astype(np.float32)


@pytest.mark.parametrize(
    ("name", "algo"), [("sac", "sac"), ("sac_tanh", "sac"), ("td3", "td3"), ("ppo", "ppo")]
)
def test_loaded_policy_acts_as_the_sb3_model(saved, pendulum_obs, name, algo):
    root, models = saved
    policy = load_sb3_policy(root / f"{name}.zip", "Pendulum-v1")
    expected, _ = models[name].predict(pendulum_obs, deterministic=True)
    actions = policy(pendulum_obs)
    assert policy.algo == algo
    assert actions.dtype == np.float32 and actions.shape == (64, 1)
    np.testing.assert_allclose(actions, expected, rtol=1e-6, atol=1e-6)


def test_the_algorithm_can_be_named_but_must_fit_the_weights(saved):
    root, _ = saved
    assert parse_sb3_spec(f"sb3:SAC:{root}/sac.zip") == ("sac", f"{root}/sac.zip")
    assert parse_sb3_spec("sb3:C:/models/sac.zip") == (None, "C:/models/sac.zip")
    assert load_sb3_policy(root / "td3.zip", "Pendulum-v1", algo="ddpg").algo == "ddpg"
    with pytest.raises(PolicyLoadError, match="a sac policy, not ppo"):
        load_sb3_policy(root / "sac.zip", "Pendulum-v1", algo="ppo")


def _rewrite_data(source, destination, edit) -> None:
    """Copy an SB3 zip, passing its `data` JSON through `edit`."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(destination, "w") as new:
        for item in old.infolist():
            content = old.read(item)
            if item.filename == "data":
                content = json.dumps(edit(json.loads(content))).encode()
            new.writestr(item, content)


class _MakesDirectory:
    """Unpickling this creates a directory: stands in for any code a file could run."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def test_a_serialized_payload_in_data_is_never_unpickled(saved, tmp_path, pendulum_obs):
    from stable_baselines3.common.save_util import json_to_data

    root, models = saved
    marker = tmp_path / "payload-ran"
    payload = base64.b64encode(pickle.dumps(_MakesDirectory(str(marker)))).decode()

    def plant(data: dict) -> dict:
        kwargs = {":type:": "<class 'dict'>", ":serialized:": payload, "net_arch": [16, 16]}
        return {**data, "policy_kwargs": kwargs}

    _rewrite_data(root / "sac.zip", tmp_path / "tampered.zip", plant)
    policy = load_sb3_policy(tmp_path / "tampered.zip", "Pendulum-v1")
    assert not marker.exists()
    expected, _ = models["sac"].predict(pendulum_obs, deterministic=True)
    np.testing.assert_allclose(policy(pendulum_obs), expected, rtol=1e-6, atol=1e-6)
    # The payload is live: SB3's own loading path runs it.
    json_to_data((zipfile.ZipFile(tmp_path / "tampered.zip").read("data")).decode())
    assert marker.exists()


def test_an_activation_outside_torch_nn_is_refused(saved, tmp_path):
    root, _ = saved

    def rename(data: dict) -> dict:
        kwargs = {**data["policy_kwargs"], "activation_fn": "<class 'evil.Swish'>"}
        return {**data, "policy_kwargs": kwargs}

    _rewrite_data(root / "sac_tanh.zip", tmp_path / "swish.zip", rename)
    with pytest.raises(PolicyLoadError, match=r"swish\.zip.*evil\.Swish"):
        load_sb3_policy(tmp_path / "swish.zip", "Pendulum-v1")


def test_a_policy_for_another_env_names_both_shapes_and_the_file(saved):
    root, _ = saved
    with pytest.raises(PolicyLoadError) as caught:
        load_sb3_policy(root / "sac.zip", "Hopper-v5")
    message = str(caught.value)
    assert "sac.zip" in message and "(3,)" in message and "(11,)" in message


def test_a_missing_file_or_a_non_zip_is_a_clear_error(tmp_path):
    with pytest.raises(PolicyNotFoundError, match="nope.zip"):
        load_sb3_policy(tmp_path / "nope.zip", "Pendulum-v1")
    (tmp_path / "text.zip").write_text("not a zip")
    with pytest.raises(PolicyLoadError, match="text.zip is not a zip file"):
        load_sb3_policy(tmp_path / "text.zip", "Pendulum-v1")


def test_without_stable_baselines3_the_error_names_the_extra(saved, monkeypatch):
    monkeypatch.setitem(sys.modules, "stable_baselines3", None)
    with pytest.raises(MissingDependencyError, match=r'pip install "ssorl\[collect\]"'):
        load_sb3_policy(saved[0] / "sac.zip", "Pendulum-v1")


def _invoke(*args: str):
    from click.testing import CliRunner

    from ssorl_train.cli.main import cli

    return CliRunner().invoke(cli, ["data", "collect", *args, "--quiet"])


def test_collect_command_records_the_sb3_policys_actions_and_provenance(saved, tmp_path):
    root, _ = saved
    zip_path = root / "sac.zip"
    result = _invoke(
        "Pendulum-v1", "--policy", f"sb3:{zip_path}", "--steps", "300", "--out", str(tmp_path / "s")
    )
    assert result.exit_code == 0, result.output
    policy = load_sb3_policy(zip_path, "Pendulum-v1")
    with TrajectoryStore.open(tmp_path / "s") as store:
        assert store.n_steps == 300
        assert store.metadata.extra["collect"]["policy"] == {
            "spec": f"sb3:sac:{zip_path.resolve()}",
            "sha256": hashlib.sha256(zip_path.read_bytes()).hexdigest(),
            "deterministic": True,
        }
        for index in range(store.n_episodes):
            episode = store.episode(index)
            np.testing.assert_allclose(
                episode.actions, policy(episode.observations[:-1]), rtol=1e-6, atol=1e-6
            )


def test_stochastic_collection_samples_and_is_seeded(saved, tmp_path):
    spec = f"sb3:{saved[0] / 'sac.zip'}"
    actions = []
    for run, mode in (("a", "--stochastic"), ("b", "--stochastic"), ("c", "--deterministic")):
        out = str(tmp_path / run)
        result = _invoke("Pendulum-v1", "--policy", spec, mode, "--steps", "40", "--out", out)
        assert result.exit_code == 0, result.output
        with TrajectoryStore.open(out) as store:
            recorded = store.metadata.extra["collect"]["policy"]["deterministic"]
            assert recorded is (mode == "--deterministic")
            actions.append(store.read_steps("actions", 0, store.n_steps))
    np.testing.assert_array_equal(actions[0], actions[1])
    assert not np.array_equal(actions[0], actions[2])


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("greedy", "Expected 'random', 'sb3:PATH'"), ("sb3:missing.zip", "missing.zip")],
)
def test_collect_command_rejects_a_bad_policy_naming_the_option(tmp_path, spec, expected):
    result = _invoke("Pendulum-v1", "--policy", spec, "--steps", "10", "--out", str(tmp_path / "s"))
    assert result.exit_code == 2
    assert "--policy" in result.output and expected in result.output
    assert not (tmp_path / "s").exists()
