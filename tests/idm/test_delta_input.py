"""The IDM's difference input (`--delta`): its statistics equal NumPy's over within-episode
pairs only, the network reads s_{t+1} - s_t at unit variance, and checkpoints round-trip
(old ones, without the key, still load)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from ssorl_data.episode_index import EpisodeIndex
from ssorl_data.errors import IdmCheckpointError
from ssorl_data.idm import train_idm
from ssorl_data.idm.checkpoint import CONFIG, build_network, load_idm
from ssorl_data.store import TrajectoryStore
from ssorl_data.streaming_stats import difference_std
from ssorl_train.cli.main import cli
from tests.idm.conftest import TINY, make_dynamics_store


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 7), min_size=1, max_size=6),
    dim=st.integers(1, 3),
    uint8=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_difference_std_equals_numpy_over_pairs_inside_episodes(lengths, dim, uint8, seed):
    index = EpisodeIndex.from_lengths(np.array(lengths, np.int64))
    rng = np.random.default_rng(seed)
    rows = sum(lengths) + len(lengths)
    observations = (rng.integers(0, 256, (rows, dim)).astype(np.uint8) if uint8
                    else rng.standard_normal((rows, dim)).astype(np.float32))  # fmt: skip
    pairs = []
    start = 0
    for length in lengths:  # T+1 rows per episode: T within-episode differences
        block = observations[start : start + length + 1].astype(np.float64)
        pairs.append(np.diff(block, axis=0))
        start += length + 1
    expected = np.concatenate(pairs)
    if expected.shape[0] == 0:
        with pytest.raises(ValueError):
            difference_std(observations, index)
        return
    want = np.maximum(expected.std(0), 1e-6)
    np.testing.assert_allclose(difference_std(observations, index), want, rtol=1e-5, atol=1e-6)


def test_the_network_reads_the_scaled_difference_of_the_last_two_states() -> None:
    spec_std, delta_std = (2.0, 4.0), (0.5, 1.0)
    torch.manual_seed(0)
    net = build_network_for(k=1, obs_std=spec_std, delta_std=delta_std).eval()
    x = torch.randn(5, 3 * 2)  # k + 2 = 3 states of D = 2, normalised
    # (s_{t+1} - s_t) / obs_std, times obs_std / delta_std: (s_{t+1} - s_t) / delta_std
    widened = torch.cat([x, (x[:, 4:6] - x[:, 2:4]) * torch.tensor([4.0, 4.0])], 1)
    assert net.trunk[0].in_features == 8
    mean, _ = net(x)
    h = net.trunk(widened).expand(net.members, -1, -1)
    assert torch.equal(mean, net.head(h).chunk(2, dim=-1)[0])
    assert "delta_scale" not in net.state_dict()  # config.json carries it, not the weights


def build_network_for(k: int, obs_std, delta_std):
    from ssorl_data.idm.checkpoint import IdmSpec

    spec = IdmSpec(k=k, hidden=(8,), members=2, dropout=0.0, shared_trunk=True, obs_shape=(2,),
                   act_shape=(1,), obs_mean=(0.0, 0.0), obs_std=obs_std, action_low=(-1.0,),
                   action_high=(1.0,), delta_std=delta_std)  # fmt: skip
    return build_network(spec)


def test_an_idm_with_the_difference_input_saves_loads_and_predicts_the_same(tmp_path) -> None:
    path = make_dynamics_store(tmp_path / "store", seed=3)
    config = dataclasses.replace(TINY, max_steps=100, delta=True)
    with TrajectoryStore.open(path) as store:
        result = train_idm(store, "half", tmp_path / "idm", config, progress=False)
    spec = result.idm.spec
    assert spec.delta_std is not None and len(spec.delta_std) == spec.obs_dim
    loaded = load_idm(tmp_path / "idm")
    assert loaded.spec == spec
    windows = torch.randn(7, spec.k + 2, spec.obs_dim)
    with torch.inference_mode():
        assert torch.equal(result.idm.predict(windows)[0], loaded.predict(windows)[0])
    # a config.json written before the key existed loads as an IDM without the input
    config_path = tmp_path / "plain" / CONFIG
    with TrajectoryStore.open(path) as store:
        train_idm(store, "half", tmp_path / "plain", dataclasses.replace(config, delta=False),
                  progress=False)  # fmt: skip
    document = json.loads(config_path.read_text())
    assert document.pop("delta_std") is None
    config_path.write_text(json.dumps(document))
    assert load_idm(tmp_path / "plain").spec.delta_std is None
    # a wrong-sized difference std is refused, naming the key
    bad = json.loads((tmp_path / "idm" / CONFIG).read_text())
    bad["delta_std"] = bad["delta_std"][:-1]
    (tmp_path / "idm" / CONFIG).write_text(json.dumps(bad))
    with pytest.raises(IdmCheckpointError, match="delta_std"):
        load_idm(tmp_path / "idm")


def test_idm_train_cli_takes_delta(tmp_path) -> None:
    path = make_dynamics_store(tmp_path / "store", seed=6)
    done = CliRunner().invoke(cli, [
        "idm", "train", str(path), "--split", "half", "--out", str(tmp_path / "idm"),
        "--hidden", "16", "--members", "2", "--max-steps", "20", "--eval-every", "10",
        "--delta", "--quiet",
    ])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert load_idm(tmp_path / "idm").spec.delta_std is not None
