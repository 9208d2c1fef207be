"""D4RL/NPZ data without `terminals` is refused unless --no-terminals says so (issue 12)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from ssorl_data.errors import ImportFormatError
from ssorl_data.io.flat import from_arrays
from ssorl_data.io.importing import import_dataset
from ssorl_data.store import TrajectoryStore
from ssorl_train.cli.main import cli

N = 6
TIMEOUTS = np.array([0, 0, 1, 0, 0, 1], bool)


def _arrays(**drop_or_add) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "observations": rng.standard_normal((N, 3)).astype(np.float32),
        "next_observations": rng.standard_normal((N, 3)).astype(np.float32),
        "actions": rng.standard_normal((N, 2)).astype(np.float32),
        "rewards": np.arange(N, dtype=np.float32),
        "timeouts": TIMEOUTS,
    }
    arrays.update(drop_or_add)
    return {k: v for k, v in arrays.items() if v is not None}


def _hdf5(path, arrays) -> str:
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f[key] = value
    return str(path)


@pytest.mark.parametrize("suffix", ["hdf5", "npz"])
def test_file_without_terminals_is_refused_naming_key_file_and_flag(tmp_path, suffix):
    path = tmp_path / f"noterm.{suffix}"
    if suffix == "npz":
        np.savez(path, **_arrays())
    else:
        _hdf5(path, _arrays())
    with pytest.raises(ImportFormatError) as error:
        import_dataset(path, tmp_path / "s", progress=False)
    message = str(error.value)
    assert "'terminals'" in message and "--no-terminals" in message
    assert f"noterm.{suffix}" in message
    assert not (tmp_path / "s").exists()


def test_no_terminals_imports_truncations_only_and_records_it(tmp_path):
    path = _hdf5(tmp_path / "noterm.hdf5", _arrays())
    result = import_dataset(path, tmp_path / "s", progress=False, no_terminals=True)
    assert (result.episodes_added, result.steps_added) == (2, 6)
    assert any("--no-terminals" in note for note in result.notes)
    with TrajectoryStore.open(tmp_path / "s") as store:
        assert not store.read_steps("terminations", 0, N).any()
        np.testing.assert_array_equal(store.read_steps("truncations", 0, N), TIMEOUTS)
        (entry,) = store.metadata.extra["imports"]
    assert entry["source"] == path
    assert entry["no_terminals"] is True
    assert entry["episode_end_keys"] == {"terminations": None, "truncations": "timeouts"}


def test_default_import_records_no_terminals_false(tmp_path):
    terminals = np.array([0, 1, 0, 0, 0, 0], bool)
    import_dataset(from_arrays(_arrays(terminals=terminals)), tmp_path / "s", progress=False)
    with TrajectoryStore.open(tmp_path / "s") as store:
        (entry,) = store.metadata.extra["imports"]
        np.testing.assert_array_equal(store.read_steps("terminations", 0, N), terminals)
    assert entry["no_terminals"] is False
    assert entry["episode_end_keys"] == {"terminations": "terminals", "truncations": "timeouts"}


def test_no_terminals_on_data_that_has_them_is_refused():
    arrays = _arrays(terminals=np.zeros(N, bool))
    with pytest.raises(ImportFormatError, match="has the key 'terminals'. Drop the flag"):
        from_arrays(arrays, no_terminals=True)


def test_no_terminals_still_needs_timeouts_to_end_episodes():
    with pytest.raises(ImportFormatError, match="with --no-terminals episodes end at 'timeouts'"):
        from_arrays(_arrays(timeouts=None), no_terminals=True)


def test_missing_timeouts_keeps_ends_at_terminals_and_says_so(tmp_path):
    """D4RL-era files often lack timeouts: episodes end at terminals and at the data's end."""
    terminals = np.array([0, 1, 0, 0, 0, 0], bool)
    source = from_arrays(_arrays(terminals=terminals, timeouts=None))
    assert any("no 'timeouts'" in note for note in source.notes)
    assert source.provenance["episode_end_keys"] == {
        "terminations": "terminals",
        "truncations": None,
    }
    import_dataset(source, tmp_path / "s", progress=False)
    with TrajectoryStore.open(tmp_path / "s") as store:
        np.testing.assert_array_equal(store.episode_table().lengths, [2, 4])
        np.testing.assert_array_equal(store.read_steps("terminations", 0, N), terminals)
        assert store.read_steps("truncations", 0, N).tolist() == [False] * 5 + [True]


def test_no_terminals_is_refused_for_minari_sources(tmp_path):
    with pytest.raises(ImportFormatError, match="--no-terminals applies to D4RL HDF5 and NPZ"):
        import_dataset("ns/name-v0", tmp_path / "s", progress=False, no_terminals=True)


def test_cli_refuses_without_the_flag_and_accepts_with_it(tmp_path):
    path = _hdf5(tmp_path / "noterm.hdf5", _arrays())
    runner = CliRunner()
    refused = runner.invoke(cli, ["data", "import", path, str(tmp_path / "s"), "--quiet"])
    assert refused.exit_code == 2, refused.output
    assert refused.output.startswith("Error: ") and "Traceback" not in refused.output
    assert "'terminals'" in refused.output and "--no-terminals" in refused.output
    args = ["data", "import", path, str(tmp_path / "s"), "--quiet", "--no-terminals"]
    accepted = runner.invoke(cli, args)
    assert accepted.exit_code == 0, accepted.output
    assert "imported 2 episodes (6 steps)" in accepted.output
    with TrajectoryStore.open(tmp_path / "s") as store:
        assert store.metadata.extra["imports"][0]["no_terminals"] is True


def test_cli_help_explains_the_flag():
    result = CliRunner().invoke(cli, ["data", "import", "--help"])
    assert result.exit_code == 0
    assert "--no-terminals" in result.output and "provenance" in result.output
