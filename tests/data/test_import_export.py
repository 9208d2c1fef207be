"""Import and export: round trips through D4RL HDF5, NPZ and Minari, and bad input."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ssorl_data.errors import (
    EpisodeValidationError,
    ImportFormatError,
    InvalidNameError,
    SpaceMismatchError,
    StoreExistsError,
)
from ssorl_data.io.d4rl_export import export_d4rl_hdf5
from ssorl_data.io.flat import from_arrays
from ssorl_data.io.importing import import_dataset
from ssorl_data.io.minari_io import export_minari
from ssorl_data.store import TrajectoryStore
from ssorl_data.verify import verify_store
from tests.data.factories import make_store, random_batch

episode_plans = st.lists(
    st.tuples(st.integers(1, 12), st.sampled_from(["all", "none", "partial"]), st.booleans()),
    min_size=1,
    max_size=6,
)


def _batch(plan, seed):
    from ssorl_data.episodes import concat_batches
    from tests.data.factories import random_episode

    rng = np.random.default_rng(seed)
    return concat_batches(
        [random_episode(rng, t, labelling=lab, terminated=term) for t, lab, term in plan]
    )


def _assert_same_store(a, b):
    assert (a.n_episodes, a.n_steps) == (b.n_episodes, b.n_steps)
    x, y = a.read_episodes(0, a.n_episodes), b.read_episodes(0, b.n_episodes)
    for name in ("observations", "actions", "rewards", "terminations", "truncations", "lengths"):
        np.testing.assert_array_equal(getattr(x, name), getattr(y, name), err_msg=name)
    np.testing.assert_array_equal(a.episode_table().labelled, b.episode_table().labelled)
    assert a.observation_space == b.observation_space
    assert a.action_space == b.action_space


SETTINGS = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(plan=episode_plans, seed=st.integers(0, 2**16))
def test_d4rl_hdf5_round_trip_is_identical(tmp_path_factory, plan, seed):
    root = tmp_path_factory.mktemp("rt")
    make_store(root / "a", _batch(plan, seed), chunk_steps=8)
    with TrajectoryStore.open(root / "a") as a:
        export_d4rl_hdf5(a, root / "a.hdf5")
        import_dataset(root / "a.hdf5", root / "b", progress=False)
        with TrajectoryStore.open(root / "b") as b:
            _assert_same_store(a, b)
            assert verify_store(b).ok


@SETTINGS
@given(plan=episode_plans, seed=st.integers(0, 2**16))
def test_minari_round_trip_is_identical(tmp_path_factory, plan, seed):
    import minari

    root = tmp_path_factory.mktemp("rt")
    make_store(root / "a", _batch(plan, seed), chunk_steps=8)
    with TrajectoryStore.open(root / "a") as a:
        written = export_minari(a, "test/roundtrip-v0", root=root / "minari")
        assert minari.MinariDataset(written / "data").total_episodes == a.n_episodes
        import_dataset(written, root / "b", progress=False)
        with TrajectoryStore.open(root / "b") as b:
            _assert_same_store(a, b)


def test_exported_minari_dataset_loads_by_id_with_minari(tmp_path, monkeypatch):
    import minari

    make_store(tmp_path / "a", random_batch(np.random.default_rng(0), [3, 4], labelling="partial"))
    with TrajectoryStore.open(tmp_path / "a") as a:
        export_minari(a, "ssorl/tiny-v0", root=tmp_path / "m")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "m"))
    dataset = minari.load_dataset("ssorl/tiny-v0")
    lengths = [len(ep.rewards) for ep in dataset.iterate_episodes()]
    assert lengths == [3, 4]
    import_dataset("ssorl/tiny-v0", tmp_path / "b", progress=False)
    with TrajectoryStore.open(tmp_path / "a") as a, TrajectoryStore.open(tmp_path / "b") as b:
        _assert_same_store(a, b)


def test_npz_without_next_observations_drops_each_last_step(tmp_path):
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((7, 3)).astype(np.float32)
    arrays = {
        "observations": obs,
        "actions": rng.standard_normal((7, 2)),
        "rewards": np.arange(7.0),
        "terminals": [0, 0, 1, 0, 0, 0, 0],
        "timeouts": [0, 0, 0, 1, 0, 0, 1],
    }
    np.savez(tmp_path / "d.npz", **arrays)
    result = import_dataset(tmp_path / "d.npz", tmp_path / "s", env_id=None, progress=False)
    assert any("next_observations" in note for note in result.notes)
    with TrajectoryStore.open(tmp_path / "s") as store:
        # episodes [0,1,2] and [4,5,6] keep 2 steps each; the 1-step episode [3] is dropped
        np.testing.assert_array_equal(store.episode_table().lengths, [2, 2])
        got = store.read_episodes(0, 2)
        np.testing.assert_array_equal(got.observations, obs[[0, 1, 2, 4, 5, 6]])
        np.testing.assert_array_equal(got.rewards, [0, 1, 4, 5])
        assert verify_store(store).ok


def test_hdf5_without_actions_imports_action_free(tmp_path):
    with h5py.File(tmp_path / "f.hdf5", "w") as f:
        f["observations"] = np.zeros((4, 11), np.float32)
        f["next_observations"] = np.ones((4, 11), np.float32)
        f["rewards"] = np.ones(4, np.float32)
        f["terminals"] = np.array([0, 1, 0, 0], bool)
        f["timeouts"] = np.zeros(4, bool)
    import_dataset(tmp_path / "f.hdf5", tmp_path / "s", env_id="Hopper-v5", progress=False)
    with TrajectoryStore.open(tmp_path / "s") as store:
        assert not store.episode_table().labelled.any()
        assert store.read_steps("truncations", 0, 4).tolist() == [False, False, False, True]


def _write(path, **arrays):
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f[key] = value
    return path


GOOD = {
    "observations": np.zeros((4, 3), np.float32),
    "actions": np.zeros((4, 2), np.float32),
    "rewards": np.zeros(4, np.float32),
    "terminals": np.array([0, 1, 0, 1], bool),
}


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({k: v for k, v in GOOD.items() if k != "rewards"}, "missing required key 'rewards'"),
        ({**GOOD, "actions": np.zeros((3, 2), np.float32)}, "'actions' has 3 rows"),
        ({**GOOD, "observations": np.array(["a"] * 4, dtype="S1")}, "'observations' has dtype"),
        ({k: v for k, v in GOOD.items() if k != "terminals"}, "missing key 'terminals'"),
        ({**GOOD, "rewards": np.zeros((4, 2), np.float32)}, "expected 1-D"),
    ],
)
def test_bad_hdf5_is_refused_naming_file_and_key(tmp_path, arrays, message):
    path = _write(tmp_path / "bad.hdf5", **arrays)
    with pytest.raises(ImportFormatError, match=message) as error:
        import_dataset(path, tmp_path / "s", progress=False)
    assert "bad.hdf5" in str(error.value)
    assert not (tmp_path / "s").exists()


def test_nan_observation_names_the_episode_and_leaves_no_store(tmp_path):
    obs = np.zeros((4, 3), np.float32)
    obs[3, 1] = np.nan
    path = _write(tmp_path / "nan.hdf5", **{**GOOD, "observations": obs})
    with pytest.raises(EpisodeValidationError, match=r"nan.hdf5, episode 1: observation"):
        import_dataset(path, tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()


def test_truncated_and_non_hdf5_files_are_refused(tmp_path):
    path = _write(tmp_path / "t.hdf5", **{k: np.repeat(v, 5000, 0) for k, v in GOOD.items()})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImportFormatError, match="t.hdf5"):
        import_dataset(path, tmp_path / "s", progress=False)
    (tmp_path / "x.hdf5").write_text("not hdf5")
    with pytest.raises(ImportFormatError, match="not a readable HDF5 file"):
        import_dataset(tmp_path / "x.hdf5", tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()


def test_unknown_minari_id_is_refused_without_download(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "empty"))
    with pytest.raises(ImportFormatError, match="nothing is downloaded"):
        import_dataset("nobody/nothing-v0", tmp_path / "s", progress=False)


def test_invalid_minari_export_id_is_refused(tmp_path):
    make_store(tmp_path / "a", random_batch(np.random.default_rng(0), [2]))
    with TrajectoryStore.open(tmp_path / "a") as a:
        with pytest.raises(InvalidNameError, match="namespace/name-v0"):
            export_minari(a, "../escape", root=tmp_path / "m")


def test_append_requires_the_flag_and_matching_spaces(tmp_path):
    source = from_arrays(GOOD)
    import_dataset(source, tmp_path / "s", progress=False)
    with pytest.raises(StoreExistsError, match="--append"):
        import_dataset(from_arrays(GOOD), tmp_path / "s", progress=False)
    import_dataset(from_arrays(GOOD), tmp_path / "s", append=True, progress=False)
    with TrajectoryStore.open(tmp_path / "s") as store:
        assert store.n_episodes == 4
        assert [p["source"] for p in store.metadata.extra["imports"]] == ["arrays", "arrays"]
    wider = {**GOOD, "observations": np.zeros((4, 5), np.float32)}
    with pytest.raises(SpaceMismatchError, match="observation space"):
        import_dataset(from_arrays(wider), tmp_path / "s", append=True, progress=False)
    with TrajectoryStore.open(tmp_path / "s") as store:
        assert store.n_episodes == 4


def test_env_with_other_observation_shape_is_refused(tmp_path):
    with pytest.raises(ImportFormatError, match="Hopper-v5"):
        import_dataset(from_arrays(GOOD, env_id="Hopper-v5"), tmp_path / "s", progress=False)
