"""IDM training holds only the visible episodes' rows, and trains exactly as from the whole
store; observation statistics stream over every row; uint8 frame stores load the same way."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ssorl_data.episodes import concat_batches, make_episode
from ssorl_data.idm import train_idm
from ssorl_data.idm import training as idm_training
from ssorl_data.idm.labelled import episode_runs, read_labelled
from ssorl_data.splits import make_split
from ssorl_data.store import TrajectoryStore
from ssorl_data.streaming_stats import store_observation_stats
from tests.data.factories import make_store, random_batch
from tests.idm.conftest import TINY, make_dynamics_store, record_reads

CONFIG = dataclasses.replace(TINY, k=2, max_steps=60, eval_every=20, max_val_steps=150)


def full_read_arrays(store: TrajectoryStore) -> tuple[idm_training.IdmArrays, np.ndarray]:
    """The IDM training data as it was made before streaming: every row of the store read
    whole, statistics over all of it, the action space's (finite) bounds; and the bounds."""
    observations = store.read_observations(0, store.n_steps + store.n_episodes)
    observations = observations.reshape(observations.shape[0], -1).astype(np.float32)
    actions = store.read_steps("actions", 0, store.n_steps).reshape(store.n_steps, -1)
    flat = observations.astype(np.float64)
    mean = flat.mean(0).astype(np.float32)
    std = np.maximum(flat.std(0), 1e-6).astype(np.float32)
    low = store.action_space.low.astype(np.float64).ravel()
    high = store.action_space.high.astype(np.float64).ravel()
    mid, half = (high + low) / 2, (high - low) / 2
    arrays = idm_training.IdmArrays(
        observations=observations,
        index=store.episode_table(),
        actions=((actions - mid) / half).astype(np.float32),
        step_mask=store.read_steps("action_mask", 0, store.n_steps),
        mean=mean,
        std=std,
    )
    return arrays, np.stack([low, high])


def test_training_from_the_visible_rows_equals_training_from_the_whole_store(tmp_path) -> None:
    path = make_dynamics_store(tmp_path / "store", seed=1, chunk_steps=16)
    with TrajectoryStore.open(path) as store:
        result = train_idm(store, "half", None, CONFIG, progress=False)
        visible = store.read_split("half").visible
        arrays, bounds = full_read_arrays(store)
    spec = result.idm.spec
    assert spec.obs_mean == tuple(arrays.mean.tolist())  # streamed equals whole, here exactly
    assert spec.obs_std == tuple(arrays.std.tolist())
    assert (spec.action_low, spec.action_high) == tuple(tuple(b.tolist()) for b in bounds)
    train_eps, val_eps = idm_training.split_train_val(visible, CONFIG.val_fraction, CONFIG.seed)
    assert result.idm.provenance["train_episodes"] == train_eps.tolist()
    assert result.idm.provenance["val_episodes"] == val_eps.tolist()
    network, best, history, self_trained = idm_training._fit(
        spec, arrays, train_eps, val_eps, CONFIG, "cpu", progress=False
    )
    assert history == result.history  # same windows drawn, same validation set
    assert self_trained is None and result.idm.provenance["self_training"] is None
    ours, theirs = result.idm.network.state_dict(), network.state_dict()
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name


def test_training_reads_only_the_visible_steps(tmp_path, monkeypatch) -> None:
    path = make_dynamics_store(tmp_path / "store", seed=2, chunk_steps=16)
    with TrajectoryStore.open(path) as store:
        table = store.episode_table()
        visible = store.read_split("half").visible
        reads = record_reads(monkeypatch)
        train_idm(store, "half", None, dataclasses.replace(CONFIG, max_steps=2), progress=False)
        n_steps = store.n_steps
    action_reads = [(lo, hi) for name, lo, hi in reads if name == "steps/actions"]
    chunks_read = [c for lo, hi in action_reads for c in range(lo // 16, -(-hi // 16))]
    visible_steps = table.steps_of(np.flatnonzero(visible))[1]
    assert sorted(chunks_read) == sorted(set((visible_steps // 16).tolist()))  # each once
    assert len(chunks_read) < -(-n_steps // 16)  # not every chunk
    assert all(hi - lo <= 4 * 16 for lo, hi in action_reads)  # a block of chunks at a time
    # the statistics stream every observation row, one chunk per read
    obs_reads = [(lo, hi) for name, lo, hi in reads if name == "observations"]
    assert max(hi - lo for lo, hi in obs_reads) <= 4 * 16


def test_episode_runs_merge_adjacent_episodes() -> None:
    first, last = episode_runs(np.array([9, 2, 3, 4, 7, 9, 12, 13]))
    assert first.tolist() == [2, 7, 9, 12] and last.tolist() == [5, 8, 10, 14]
    assert [a.size for a in episode_runs(np.array([], np.int64))] == [0, 0]


def frames_store(path, chunk_steps: int = 7):
    """A store of 8x8x3 uint8 frames: 6 labelled episodes and 3 action-free ones."""
    rng = np.random.default_rng(5)
    kwargs = {"obs_shape": (8, 8, 3), "obs_dtype": np.uint8, "act_shape": (2,)}
    labelled = random_batch(rng, [5, 9, 3, 12, 6, 8], **kwargs)
    free = random_batch(rng, [10, 4, 7], labelling="none", **kwargs)
    order = [labelled.episode(0), free.episode(0), labelled.episode(1), labelled.episode(2),
             free.episode(1), labelled.episode(3), labelled.episode(4), free.episode(2),
             labelled.episode(5)]  # fmt: skip
    make_store(path, concat_batches(order), chunk_steps=chunk_steps, **kwargs)
    with TrajectoryStore.open(path, mode="a") as store:
        make_split(store, "some", episodes=[2, 3, 5, 8])
    return path


def test_uint8_frames_load_as_the_whole_read_does(tmp_path) -> None:
    path = frames_store(tmp_path / "frames")
    with TrajectoryStore.open(path) as store:
        table = store.episode_table()
        episodes = np.flatnonzero(store.read_split("some").visible)
        labelled = read_labelled(store, episodes, table)
        observations = store.read_observations(0, store.n_steps + store.n_episodes)
        actions = store.read_steps("actions", 0, store.n_steps)
        mean, std = store_observation_stats(store)
    assert labelled.observations.shape[1] == 192 and labelled.observations.dtype == np.uint8
    rows = np.concatenate([np.arange(table.obs_start[e], table.obs_stop[e]) for e in episodes])
    steps = table.steps_of(episodes)[1]
    np.testing.assert_array_equal(labelled.observations, observations[rows].reshape(rows.size, -1))
    np.testing.assert_array_equal(labelled.actions, actions[steps])
    assert labelled.action_mask.all()
    assert labelled.index.lengths.tolist() == table.lengths[episodes].tolist()
    assert labelled.local(np.array([5, 2])).tolist() == [2, 0]
    with pytest.raises(KeyError, match="Episode 4"):
        labelled.local(np.array([4]))
    flat = observations.reshape(observations.shape[0], -1).astype(np.float64)
    np.testing.assert_array_max_ulp(mean, flat.mean(0).astype(np.float32), maxulp=1)
    np.testing.assert_array_max_ulp(std, flat.std(0).astype(np.float32), maxulp=1)


def test_an_idm_trains_on_uint8_frames_as_on_their_float32_copy(tmp_path) -> None:
    """The labelled frames stay uint8 (the kernels normalise them as they gather); the IDM
    equals one trained on the whole store read as float32, with the same statistics."""
    path = frames_store(tmp_path / "frames")
    config = dataclasses.replace(CONFIG, k=1, max_steps=4, eval_every=2, batch_size=16)
    with TrajectoryStore.open(path) as store:
        result = train_idm(store, "some", tmp_path / "idm", config, progress=False)
        arrays, _ = full_read_arrays(store)
        visible = store.read_split("some").visible
    spec = result.idm.spec
    assert spec.obs_shape == (8, 8, 3) and len(spec.obs_mean) == 192
    assert len(result.history) == 2 and np.isfinite(result.history[-1]["val_nll"])
    assert arrays.observations.dtype == np.float32
    arrays = dataclasses.replace(
        arrays, mean=np.array(spec.obs_mean, np.float32), std=np.array(spec.obs_std, np.float32)
    )
    train_eps, val_eps = idm_training.split_train_val(visible, config.val_fraction, config.seed)
    network, _, history, _ = idm_training._fit(
        spec, arrays, train_eps, val_eps, config, "cpu", False
    )
    assert history == result.history
    for name, weights in result.idm.network.state_dict().items():
        assert torch.equal(weights, network.state_dict()[name]), name


def test_unbounded_action_bounds_come_from_visible_episodes_only(tmp_path) -> None:
    """A hidden episode's actions (the split hides them) do not widen the IDM's bounds."""
    import gymnasium as gym

    rng = np.random.default_rng(0)
    episodes = []
    for scale in (1.0, 1.0, 1.0, 100.0):
        obs = rng.standard_normal((6, 3)).astype(np.float32)
        act = (rng.uniform(-1, 1, (5, 2)) * scale).astype(np.float32)
        episodes.append(make_episode(obs, act, np.zeros(5, np.float32)))
    obs_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    act_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    with TrajectoryStore.create(tmp_path / "s", obs_space, act_space, chunk_steps=4) as store:
        store.append(concat_batches(episodes))
        make_split(store, "three", episodes=[0, 1, 2])
        result = train_idm(store, "three", None, dataclasses.replace(CONFIG, max_steps=2),
                           progress=False)  # fmt: skip
    seen = np.concatenate([e.actions for e in episodes[:3]])
    lo, hi = seen.min(0).astype(np.float64), seen.max(0).astype(np.float64)
    margin = 0.05 * (hi - lo) + 1e-3
    np.testing.assert_allclose(result.idm.spec.action_low, lo - margin)
    np.testing.assert_allclose(result.idm.spec.action_high, hi + margin)
