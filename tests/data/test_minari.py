"""Minari datasets as users have them: made by minari's own API from the real Hopper-v5
(float64 observations), in both data formats, compared value by value with what
`minari.load_dataset` yields, exported back and loaded by minari again."""

from __future__ import annotations

import gymnasium as gym
import minari
import numpy as np
import pytest
from click.testing import CliRunner
from minari.data_collector import EpisodeBuffer

from ssorl_data.errors import ImportFormatError, SpaceMismatchError, StoreFormatError
from ssorl_data.io.importing import import_dataset
from ssorl_data.io.minari_io import export_minari
from ssorl_data.io.observations import ROUNDING_TOLERANCE, ObservationLayout, observation_layout
from ssorl_data.io.spaces import env_spaces
from ssorl_data.store import TrajectoryStore
from ssorl_train.cli.main import cli
from tests.data.factories import DictHopper, collect_minari, hopper_rollouts

FORMATS = ["hdf5", "arrow"]

# Minari nags that test datasets have no author, email or code permalink.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.* is set to None:UserWarning"),
    pytest.mark.filterwarnings("ignore:env_spec is None:UserWarning"),
]


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    """Minari reads and writes here, never under the user's ~/.minari."""
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _hopper(how: str, dataset_id: str, data_format: str) -> None:
    """A Hopper-v5 dataset written by DataCollector or by create_dataset_from_buffers."""
    if how == "collector":
        env = gym.make("Hopper-v5", max_episode_steps=40)
        collect_minari(dataset_id, env, n_episodes=4, data_format=data_format, seed=3)
    else:
        buffers = hopper_rollouts(n_episodes=4, max_steps=40, seed=5)
        minari.create_dataset_from_buffers(
            dataset_id, buffers, env="Hopper-v5", algorithm_name="random", data_format=data_format
        )


def _leaves(observations) -> dict:
    """{key path: array} of an observation (a dict, nested or not, or one array)."""
    if not isinstance(observations, dict):
        return {(): np.asarray(observations)}
    out = {}
    for key, value in observations.items():
        for path, array in _leaves(value).items():
            out[(key, *path)] = array
    return out


def _assert_store_is_minari(store: TrajectoryStore, dataset: minari.MinariDataset) -> float:
    """Every episode of `store` is what minari loads; returns the largest float32 rounding."""
    assert (store.n_episodes, store.n_steps) == (dataset.total_episodes, dataset.total_steps)
    space = dataset.observation_space
    largest = 0.0
    episodes = list(dataset.iterate_episodes())
    assert len(episodes) == store.n_episodes
    batch = store.read_episodes(0, store.n_episodes, store.episode_table())
    for i, episode in enumerate(episodes):
        ep = batch.episode(i)
        # gymnasium's own flatten of each step is the reference layout of a Dict space
        steps = len(episode.rewards) + 1
        if isinstance(space, gym.spaces.Dict):
            step_values = [_step(episode.observations, t) for t in range(steps)]
            expected = np.stack([gym.spaces.flatten(space, v) for v in step_values])
        else:
            expected = np.asarray(episode.observations)
        expected = expected.astype(np.float64)
        assert ep.observations.dtype == np.float32
        assert ep.observations.shape == expected.shape
        np.testing.assert_array_equal(ep.observations, expected.astype(np.float32))
        error = np.abs(ep.observations.astype(np.float64) - expected)
        assert np.all(error <= np.abs(expected) * np.finfo(np.float32).eps)
        largest = max(largest, float(error.max()))
        np.testing.assert_array_equal(ep.actions, episode.actions)
        np.testing.assert_array_equal(ep.rewards, np.asarray(episode.rewards, np.float32))
        np.testing.assert_array_equal(ep.terminations, episode.terminations)
        np.testing.assert_array_equal(ep.truncations, episode.truncations)
    return largest


def _step(observations, t: int):
    if isinstance(observations, dict):
        return {key: _step(value, t) for key, value in observations.items()}
    return np.asarray(observations)[t]


def _assert_minari_equal_after_rounding(
    exported: minari.MinariDataset, source: minari.MinariDataset
) -> None:
    """The export holds the source's episodes, observations rounded through float32."""
    assert exported.observation_space == source.observation_space
    assert exported.action_space == source.action_space
    assert exported.total_steps == source.total_steps
    pairs = zip(exported.iterate_episodes(), source.iterate_episodes(), strict=True)
    for back, original in pairs:
        ours, theirs = _leaves(back.observations), _leaves(original.observations)
        assert ours.keys() == theirs.keys()
        for key, values in theirs.items():
            assert ours[key].dtype == values.dtype, key
            rounded = values.astype(np.float32).astype(values.dtype)
            np.testing.assert_array_equal(ours[key], rounded, err_msg=str(key))
        np.testing.assert_array_equal(back.actions, original.actions)
        np.testing.assert_array_equal(
            back.rewards, np.asarray(original.rewards, np.float32).astype(back.rewards.dtype)
        )
        np.testing.assert_array_equal(back.terminations, original.terminations)
        np.testing.assert_array_equal(back.truncations, original.truncations)


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("how", ["collector", "buffers"])
def test_hopper_dataset_imports_as_minari_loads_it_and_exports_back(
    minari_root, tmp_path, how, data_format
):
    _hopper(how, "test/hopper-v0", data_format)
    source = minari.load_dataset("test/hopper-v0")
    assert source.observation_space.dtype == np.float64  # what every MuJoCo env declares
    assert source.storage.metadata["data_format"] == data_format

    result = _run("data", "import", "test/hopper-v0", tmp_path / "store", "--quiet")
    assert result.exit_code == 0, result.output
    with TrajectoryStore.open(tmp_path / "store") as store:
        largest = _assert_store_is_minari(store, source)
        assert store.env_id == "Hopper-v5"
        assert store.observation_space == env_spaces("Hopper-v5")[0]  # as an eval env's
        (record,) = store.metadata.extra["imports"]
        assert record["minari_data_format"] == data_format
        rounding = record["observation_rounding"]
        assert rounding["source_dtype"] == "float64"
        assert rounding["max_abs_error"] == largest > 0
        assert 0 < rounding["max_relative_error"] <= ROUNDING_TOLERANCE

    out_format = "arrow" if data_format == "hdf5" else "hdf5"  # cross the formats too
    result = _run(
        "data", "export", tmp_path / "store", "test/back-v0", "--format", "minari",
        "--minari-format", out_format,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    exported = minari.load_dataset("test/back-v0")
    assert exported.storage.metadata["data_format"] == out_format
    assert exported.spec.env_spec.id == "Hopper-v5"
    _assert_minari_equal_after_rounding(exported, source)


@pytest.mark.parametrize(
    ("data_format", "nested"), [("hdf5", False), ("arrow", False), ("hdf5", True)]
)
def test_dict_observations_are_flattened_in_gymnasium_order_and_restored(
    minari_root, tmp_path, data_format, nested
):
    env = DictHopper(gym.make("Hopper-v5", max_episode_steps=30), nested=nested)
    collect_minari("test/dict-v0", env, n_episodes=3, data_format=data_format)
    source = minari.load_dataset("test/dict-v0")
    assert isinstance(source.observation_space, gym.spaces.Dict)

    import_dataset("test/dict-v0", tmp_path / "store", progress=False)
    with TrajectoryStore.open(tmp_path / "store") as store:
        _assert_store_is_minari(store, source)  # against gymnasium.spaces.flatten per step
        flat = gym.spaces.flatten_space(source.observation_space)
        assert store.observation_space.shape == flat.shape
        np.testing.assert_array_equal(store.observation_space.low, flat.low.astype(np.float32))
        layout = store.metadata.extra["imports"][0]["observation_layout"]
        keys = [(leaf["key"], leaf["columns"]) for leaf in layout["leaves"]]
        expected = [(["achieved_goal"], [0, 2]), (["desired_goal"], [2, 4])]
        expected.append((["observation"], [4, 13]))
        if nested:
            expected += [(["sensors", "contact"], [13, 15]), (["sensors", "velocity"], [15, 21])]
        assert keys == expected
        export_minari(store, "test/dict-back-v0", data_format=data_format)
    exported = minari.load_dataset("test/dict-back-v0")
    assert list(exported.observation_space.spaces) == list(source.observation_space.spaces)
    _assert_minari_equal_after_rounding(exported, source)

    # and the exported Dict dataset imports again into the same store layout
    import_dataset("test/dict-back-v0", tmp_path / "again", progress=False)
    with (
        TrajectoryStore.open(tmp_path / "store") as a,
        TrajectoryStore.open(tmp_path / "again") as b,
    ):
        np.testing.assert_array_equal(
            a.read_episodes(0, a.n_episodes, a.episode_table()).observations,
            b.read_episodes(0, b.n_episodes, b.episode_table()).observations,
        )


def test_layout_matches_gymnasium_flatten_and_unflatten_on_samples():
    space = gym.spaces.Dict(
        {
            "z": gym.spaces.Box(-1, 1, (2,), dtype=np.float64),
            "a": gym.spaces.Dict(
                {
                    "m": gym.spaces.Box(0, 255, (2, 2), dtype=np.uint8),
                    "b": gym.spaces.Box(-3, 3, (3,), dtype=np.float32),
                }
            ),
        }
    )
    space.seed(0)
    layout = observation_layout(space, "test")
    samples = [space.sample() for _ in range(5)]
    batched = {
        "z": np.stack([s["z"] for s in samples]),
        "a": {k: np.stack([s["a"][k] for s in samples]) for k in ("m", "b")},
    }
    rows = layout.flatten(batched, "test")
    np.testing.assert_array_equal(rows, np.stack([gym.spaces.flatten(space, s) for s in samples]))
    back = layout.unflatten(rows.astype(np.float32))
    for i, sample in enumerate(samples):
        expected = gym.spaces.unflatten(space, gym.spaces.flatten(space, sample))
        assert back["a"]["m"].dtype == np.uint8
        np.testing.assert_array_equal(back["a"]["m"][i], expected["a"]["m"])
        np.testing.assert_array_equal(back["a"]["b"][i], expected["a"]["b"])
        np.testing.assert_array_equal(back["z"][i], expected["z"].astype(np.float32))
    assert ObservationLayout.from_json(layout.to_json(), "test") == layout


def test_edited_layout_in_provenance_is_refused():
    space = gym.spaces.Dict({"a": gym.spaces.Box(0, 1, (2,)), "b": gym.spaces.Box(0, 1, (3,))})
    recorded = observation_layout(space, "test").to_json()
    recorded["leaves"][0]["columns"] = [0, 3]
    with pytest.raises(StoreFormatError, match="does not match its space"):
        ObservationLayout.from_json(recorded, "store")


def _float64_dataset(dataset_id: str, offset: float) -> np.ndarray:
    """Two episodes of 3-dim float64 observations; dimension 2 is `offset` + small steps."""
    rng = np.random.default_rng(0)
    buffers, values = [], []
    for episode in range(2):
        obs = rng.normal(size=(6, 3))
        obs[:, 2] = offset + np.arange(6) * 1.37 + episode
        values.append(obs)
        buffers.append(
            EpisodeBuffer(
                id=episode,
                observations=obs,
                actions=rng.uniform(-1, 1, (5, 1)).astype(np.float32),
                rewards=rng.normal(size=5),
                terminations=np.array([0, 0, 0, 0, 1], bool),
                truncations=np.zeros(5, bool),
            )
        )
    minari.create_dataset_from_buffers(
        dataset_id,
        buffers,
        observation_space=gym.spaces.Box(-np.inf, np.inf, (3,), dtype=np.float64),
        action_space=gym.spaces.Box(-1, 1, (1,), dtype=np.float32),
        algorithm_name="test",
    )
    return np.concatenate(values)


def test_rounding_beyond_the_tolerance_is_refused_unless_the_flag_accepts_it(minari_root, tmp_path):
    # time stamps: float32 spacing at 1.7e9 is 128, the values vary by ~8 per episode
    values = _float64_dataset("test/stamps-v0", offset=1.7e9)
    with pytest.raises(ImportFormatError) as caught:
        import_dataset("test/stamps-v0", tmp_path / "store", progress=False)
    message = str(caught.value)
    assert "--accept-float32-rounding" in message and "observation[2]" in message
    assert "not float64" in message
    assert not (tmp_path / "store").exists()  # the failed import left nothing

    result = _run("data", "import", "test/stamps-v0", tmp_path / "store", "--quiet")
    assert result.exit_code == 2 and result.output.startswith("Error: ")
    assert "--accept-float32-rounding" in result.output and "Traceback" not in result.output

    result = _run(
        "data", "import", "test/stamps-v0", tmp_path / "store", "--quiet",
        "--accept-float32-rounding",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with TrajectoryStore.open(tmp_path / "store") as store:
        rounding = store.metadata.extra["imports"][0]["observation_rounding"]
    error = np.abs(values.astype(np.float32).astype(np.float64) - values)
    assert rounding["max_abs_error"] == float(error.max()) > 1
    assert rounding["max_relative_error"] > ROUNDING_TOLERANCE
    assert rounding["accept_float32_rounding"] is True
    assert rounding["worst_column"] == "observation[2]"


def test_rounding_within_the_tolerance_imports_without_the_flag(minari_root, tmp_path):
    values = _float64_dataset("test/small-v0", offset=3.0)
    import_dataset("test/small-v0", tmp_path / "store", progress=False)
    with TrajectoryStore.open(tmp_path / "store") as store:
        rounding = store.metadata.extra["imports"][0]["observation_rounding"]
        stored = store.read_episodes(0, 2, store.episode_table()).observations
    np.testing.assert_array_equal(stored, values.astype(np.float32))
    assert rounding["accept_float32_rounding"] is False
    assert 0 < rounding["max_relative_error"] <= ROUNDING_TOLERANCE


def test_values_beyond_float32_range_are_refused_even_with_the_flag(minari_root, tmp_path):
    _float64_dataset("test/huge-v0", offset=1e39)
    with pytest.raises(ImportFormatError, match="beyond float32's range"):
        import_dataset(
            "test/huge-v0", tmp_path / "store", progress=False, accept_float32_rounding=True
        )


def test_accept_float32_rounding_applies_to_minari_only(tmp_path):
    with pytest.raises(ImportFormatError, match="applies to Minari datasets only"):
        import_dataset(
            tmp_path / "x.hdf5", tmp_path / "store", progress=False, accept_float32_rounding=True
        )


def _dataset(dataset_id: str, observation_space: gym.Space, action_space: gym.Space) -> None:
    observation_space.seed(0)
    action_space.seed(0)
    obs = [observation_space.sample() for _ in range(4)]
    observations = (
        {k: np.stack([o[k] for o in obs]) for k in obs[0]}
        if isinstance(observation_space, gym.spaces.Dict)
        else np.stack(obs)
    )
    buffer = EpisodeBuffer(
        id=0,
        observations=observations,
        actions=np.stack([action_space.sample() for _ in range(3)]),
        rewards=np.zeros(3),
        terminations=np.array([0, 0, 1], bool),
        truncations=np.zeros(3, bool),
    )
    minari.create_dataset_from_buffers(
        dataset_id,
        [buffer],
        observation_space=observation_space,
        action_space=action_space,
        algorithm_name="test",
    )


BOX = gym.spaces.Box(-1, 1, (2,), dtype=np.float32)


@pytest.mark.parametrize(
    ("observation_space", "action_space", "named"),
    [
        (BOX, gym.spaces.Discrete(3), "action space Discrete(3) is not supported yet"),
        (BOX, gym.spaces.MultiDiscrete([2, 3]), "action space MultiDiscrete([2 3])"),
        (
            gym.spaces.Dict({"pos": BOX, "door": gym.spaces.Discrete(2)}),
            BOX,
            "observation key 'door' has space Discrete(2), which is not supported yet",
        ),
        (gym.spaces.Discrete(5), BOX, "observation space Discrete(5) is not supported yet"),
    ],
)
def test_unsupported_spaces_are_refused_by_name(
    minari_root, tmp_path, observation_space, action_space, named
):
    _dataset("test/odd-v0", observation_space, action_space)
    result = _run("data", "import", "test/odd-v0", tmp_path / "store", "--quiet")
    assert result.exit_code == 2 and result.output.startswith("Error: ")
    assert named in result.output
    assert not (tmp_path / "store").exists()


def test_append_of_a_dict_dataset_with_other_keys_is_refused(minari_root, tmp_path):
    unbounded = {"dtype": np.float64, "low": -np.inf, "high": np.inf}
    first = gym.spaces.Dict(
        {"a": gym.spaces.Box(shape=(2,), **unbounded), "b": gym.spaces.Box(shape=(3,), **unbounded)}
    )
    other = gym.spaces.Dict(
        {"a": gym.spaces.Box(shape=(3,), **unbounded), "b": gym.spaces.Box(shape=(2,), **unbounded)}
    )
    _dataset("test/first-v0", first, BOX)
    _dataset("test/other-v0", other, BOX)
    _dataset("test/same-v0", first, BOX)
    import_dataset("test/first-v0", tmp_path / "store", progress=False)
    import_dataset("test/same-v0", tmp_path / "store", append=True, progress=False)
    with pytest.raises(SpaceMismatchError, match="observation columns hold"):
        import_dataset("test/other-v0", tmp_path / "store", append=True, progress=False)
    with TrajectoryStore.open(tmp_path / "store") as store:
        assert store.n_episodes == 2


def _store_from_hopper(tmp_path) -> TrajectoryStore:
    _hopper("buffers", "test/hopper-v0", "hdf5")
    import_dataset("test/hopper-v0", tmp_path / "store", progress=False)
    return TrajectoryStore.open(tmp_path / "store")


def test_export_to_an_existing_id_is_refused_and_the_dataset_kept(minari_root, tmp_path):
    with _store_from_hopper(tmp_path) as store:
        result = _run("data", "export", store.path, "test/hopper-v0", "--format", "minari")
    assert result.exit_code == 2 and "exists already" in result.output
    assert minari.load_dataset("test/hopper-v0").total_episodes == 4  # still there


def test_a_failed_export_leaves_no_partial_dataset(minari_root, tmp_path, monkeypatch):
    import ssorl_data.io.minari_io as minari_io

    def fail(self, buffers):
        raise OSError("disk full")

    with _store_from_hopper(tmp_path) as store:
        monkeypatch.setattr(minari_io, "BLOCK_STEPS", 20)  # several blocks: create, then add
        monkeypatch.setattr(minari.MinariDataset, "update_dataset_from_buffer", fail)
        with pytest.raises(OSError, match="disk full"):
            export_minari(store, "test/partial-v0")
        monkeypatch.undo()
        monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_root))
        assert not (minari_root / "test" / "partial-v0").exists()
        assert sorted(p.name for p in minari_root.parent.iterdir()) == ["minari", "store"]
        monkeypatch.setattr(minari_io, "BLOCK_STEPS", 20)
        written = export_minari(store, "test/blocks-v0", data_format="arrow")
        assert written == minari_root / "test" / "blocks-v0"
    _assert_minari_equal_after_rounding(
        minari.load_dataset("test/blocks-v0"), minari.load_dataset("test/hopper-v0")
    )
