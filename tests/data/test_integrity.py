"""Damaged chunks and edited zarr.json files are reported by verify and refused by readers.

Zarr reads an absent chunk as fill values and Blosc decodes a cut-short chunk into
garbage, so each case here deletes or truncates one real chunk file of a tiny store
(16-step chunks, so there are several) and checks that `verify` lists it, that training
refuses it with a named error that says which file and what to do, and that the CLI
prints that message with exit code 2 (verify: exit 1), never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ssorl_data.errors import CorruptChunkError, MissingChunkError, StoreFormatError
from ssorl_data.info import store_info
from ssorl_data.store import TrajectoryStore
from ssorl_data.verify import verify_store
from ssorl_train.cli.main import cli
from ssorl_train.dataset import load_training_data
from tests.data.factories import hopper_shaped_store, make_store, random_batch, random_episode

CHUNK = 16
LENGTHS = (40, 30, 50)  # 120 steps: 8 step chunks, 123 observation rows: 8 chunks


def _store(path: Path, **kwargs) -> Path:
    """Episodes 0 and 2 labelled, 1 action-free; a split and a complete relabel run."""
    rng = np.random.default_rng(0)
    from ssorl_data.episodes import concat_batches

    batch = concat_batches(
        [
            random_episode(rng, LENGTHS[0]),
            random_episode(rng, LENGTHS[1], labelling="none"),
            random_episode(rng, LENGTHS[2]),
        ]
    )
    make_store(path, batch, chunk_steps=CHUNK, **kwargs)
    with TrajectoryStore.open(path, mode="a") as store:
        store.write_split("half", np.array([True, False, False]), {"method": "test"})
        run = store.create_relabel("r", {"idm": "test"})
        for index in range(run.n_chunks):
            start, stop = run.chunk_range(index)
            actions = rng.uniform(-1, 1, (stop - start, 2)).astype(np.float32)
            run.write_chunk(index, actions, rng.random(stop - start).astype(np.float32))
        store.complete_relabel("r", {})
    return path


def _load(path: Path, array: str) -> None:
    """The training view that reads `array`."""
    if array.startswith("splits/"):
        load_training_data(path, mode="labelled-only", split="half")
    elif array.startswith("relabels/"):
        load_training_data(path, mode="semi-supervised", split="half", relabel="r")
    elif array == "steps/action_mask":  # training derives the mask from the actions
        with TrajectoryStore.open(path) as store:
            store_info(store)
    else:
        load_training_data(path)


# (array, chunk file under it, what the violation names); step chunk 2 is steps 32-47.
CHUNKS = [
    ("observations", "c/4/0", "observation rows 64-79"),
    ("steps/actions", "c/2/0", "steps 32-47"),
    ("steps/action_mask", "c/2", "steps 32-47"),
    ("steps/rewards", "c/3", "steps 48-63"),
    ("steps/terminations", "c/2", "steps 32-47"),
    ("steps/truncations", "c/7", "steps 112-119"),
    ("episodes/step_start", "c/0", "episodes 0-2"),
    ("episodes/length", "c/0", "episodes 0-2"),
    ("episodes/return", "c/0", "episodes 0-2"),
    ("episodes/labelled", "c/0", "episodes 0-2"),
    ("splits/half/visible", "c/0", "episodes 0-2"),
    ("relabels/r/actions", "c/1/0", "steps 16-31"),
    ("relabels/r/uncertainty", "c/5", "steps 80-95"),
]


@pytest.mark.parametrize(("array", "key", "rows"), CHUNKS, ids=[c[0] for c in CHUNKS])
def test_a_deleted_chunk_is_a_violation_and_training_refuses_it(tmp_path, array, key, rows):
    path = _store(tmp_path / "s")
    chunk = path / array / key
    chunk.unlink()
    with TrajectoryStore.open(path) as store:
        report = verify_store(store)
    assert not report.ok
    assert any(
        str(chunk) in v and f"of {array} ({rows}) is missing" in v for v in report.violations
    ), report.violations
    with pytest.raises(MissingChunkError, match="is missing") as error:
        _load(path, array)
    assert str(chunk) in str(error.value)
    if array.startswith(("splits/", "relabels/")):
        assert "--overwrite" in str(error.value)
    else:
        assert "backup" in str(error.value) and "ssorl data import" in str(error.value)


@pytest.mark.parametrize(
    ("array", "key"),
    [
        ("observations", "c/4/0"),
        ("steps/actions", "c/2/0"),
        ("episodes/return", "c/0"),
        ("splits/half/visible", "c/0"),  # zstd-compressed: zarr's default codec
        ("relabels/r/uncertainty", "c/5"),
    ],
)
def test_a_truncated_chunk_is_a_violation_and_training_refuses_it(tmp_path, array, key):
    path = _store(tmp_path / "s")
    chunk = path / array / key
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    with TrajectoryStore.open(path) as store:
        report = verify_store(store)
    assert any(str(chunk) in v and "does not decode" in v for v in report.violations), (
        report.violations
    )
    with pytest.raises(CorruptChunkError, match="does not decode") as error:
        _load(path, array)
    assert str(chunk) in str(error.value)


def test_an_uncompressed_truncated_chunk_is_refused(tmp_path):
    path = _store(tmp_path / "s", compression="none")
    chunk = path / "steps/rewards/c/1"
    chunk.write_bytes(chunk.read_bytes()[:10])
    with TrajectoryStore.open(path) as store:
        assert any("does not decode" in v for v in verify_store(store).violations)
        with pytest.raises(CorruptChunkError, match="steps 16-31"):
            store.read_steps("rewards", 0, store.n_steps)


def test_a_chunk_that_does_not_decode_is_named(tmp_path):
    """Garbage of the right size passes the header check; the codec's error is turned
    into CorruptChunkError naming the chunk, in verify and in readers."""
    path = _store(tmp_path / "s", compression="none")
    chunk = path / "splits/half/visible/c/0"  # zstd, whatever the store's compression
    chunk.write_bytes(b"\x00" * chunk.stat().st_size)
    with TrajectoryStore.open(path) as store:
        assert any(
            str(chunk) in v and "does not decode (RuntimeError" in v
            for v in verify_store(store).violations
        )
        with pytest.raises(CorruptChunkError, match="splits/half/visible"):
            store.read_split("half")


def test_every_chunk_is_stored_even_one_of_fill_values_only(tmp_path):
    """Zarr skips chunks equal to the fill value by default; then an absent chunk could
    not be told from a lost one. Action-free steps (NaN) and no terminations (False)."""
    rng = np.random.default_rng(1)
    path = make_store(tmp_path / "s", random_batch(rng, [20], labelling="none"), chunk_steps=8)
    for array in ("steps/actions", "steps/action_mask", "steps/terminations"):
        stored = [p for p in (path / array / "c").rglob("*") if p.is_file()]
        assert len(stored) == 3, (array, stored)  # 20 steps in chunks of 8
    with TrajectoryStore.open(path) as store:
        assert store.metadata.every_chunk_written and verify_store(store).ok


def test_a_store_from_before_every_chunk_was_written_reads_absent_chunks_as_fill(tmp_path):
    """No false alarm on older stores: without `every_chunk_written` an absent chunk may
    be one zarr skipped (all NaN actions), but a truncated one is still refused."""
    rng = np.random.default_rng(2)
    path = make_store(tmp_path / "s", random_batch(rng, [20], labelling="none"), chunk_steps=8)
    _edit_root(path, lambda attrs: attrs.pop("every_chunk_written"))
    (path / "steps/actions/c/1/0").unlink()
    with TrajectoryStore.open(path) as store:
        assert not store.metadata.every_chunk_written
        assert verify_store(store).ok
        assert np.isnan(store.read_steps("actions", 0, 20)).all()
    chunk = path / "observations/c/1/0"
    chunk.write_bytes(chunk.read_bytes()[:20])
    with TrajectoryStore.open(path) as store:
        assert any("does not decode" in v for v in verify_store(store).violations)


def test_a_relabel_chunk_not_done_yet_may_be_absent(tmp_path):
    """Only chunks flagged done must be stored: a partial run is read as NaN elsewhere."""
    path = make_store(tmp_path / "s", random_batch(np.random.default_rng(3), [40]), chunk_steps=16)
    with TrajectoryStore.open(path, mode="a") as store:
        run = store.create_relabel("r", {})
        run.write_chunk(1, np.zeros((16, 2), np.float32), np.ones(16, np.float32))
        assert np.isnan(run.read("actions", 0, 40)[:16]).all()
        assert (run.read("uncertainty", 0, 40)[16:32] == 1).all()
        assert verify_store(store).ok
        (path / "relabels/r/uncertainty/c/1").unlink()
        with pytest.raises(MissingChunkError, match="relabels/r/uncertainty"):
            run.read("uncertainty", 0, 40)


# ------------------------------------------------------------------ the CLI


def _hopper_store(path: Path) -> Path:
    """A store with Hopper-v5's spaces and 16-step chunks (random data)."""
    return hopper_shaped_store(path, n_steps=60, ends=(19, 44), chunk_steps=CHUNK)


def _train(store: Path, out: Path) -> list[str]:
    return ["train", str(store), "--algo", "td3bc", "--steps", "2", "--out", str(out),
            "--eval-every", "0", "--eval-episodes", "1", "--log-every", "1",
            "--set", "hidden_dim=8", "--set", "batch_size=4", "--quiet"]  # fmt: skip


@pytest.mark.parametrize("key", ["observations/c/1/0", "steps/actions/c/2/0"])
def test_cli_verify_exits_1_and_train_exits_2_on_a_deleted_chunk(tmp_path, key):
    store = _hopper_store(tmp_path / "s")
    (store / key).unlink()
    verify = CliRunner().invoke(cli, ["data", "verify", str(store), "--quiet"])
    assert verify.exit_code == 1, verify.output
    assert f"violation: {store / key}" in verify.output and "is missing" in verify.output
    train = CliRunner().invoke(cli, _train(store, tmp_path / "run"))
    assert train.exit_code == 2, train.output
    assert train.output.startswith("Error: ") and str(store / key) in train.output
    assert "backup" in train.output and "Traceback" not in train.output


def test_cli_verify_reports_a_truncated_chunk_without_a_traceback(tmp_path):
    store = _hopper_store(tmp_path / "s")
    chunk = store / "observations/c/2/0"
    chunk.write_bytes(chunk.read_bytes()[:30])
    verify = CliRunner().invoke(cli, ["data", "verify", str(store), "--quiet"])
    assert verify.exit_code == 1 and "does not decode" in verify.output
    assert "Traceback" not in verify.output


# ------------------------------------------------------------------ edited zarr.json


def _edit_root(path: Path, edit) -> None:
    file = path / "zarr.json"
    meta = json.loads(file.read_text())
    edit(meta["attributes"])
    file.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("n_episodes", 2, "disagree with the episode table"),  # lowered, n_steps kept
        ("n_steps", 100, "disagree with the episode table"),  # lowered, n_episodes kept
        ("n_steps", 121, "disagree with the episode table"),  # raised within the arrays
        ("n_episodes", 1000, "commit"),  # beyond the arrays
        ("n_steps", -5, "non-negative integer"),
        ("n_episodes", -1, "non-negative integer"),
        ("n_steps", "120", "non-negative integer"),
        ("n_steps", 120.0, "non-negative integer"),
        ("n_episodes", True, "non-negative integer"),
        ("n_episodes", None, "non-negative integer"),
    ],
)
def test_edited_committed_sizes_are_refused_on_open(tmp_path, key, value, message):
    path = _store(tmp_path / "s")
    _edit_root(path, lambda attrs: attrs.__setitem__(key, value))
    with pytest.raises(StoreFormatError, match=message) as error:
        TrajectoryStore.open(path)
    assert f"{path / 'zarr.json'}" in str(error.value) and key in str(error.value)
    for command in (["data", "info", str(path)], ["data", "verify", str(path), "--quiet"]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 2 and result.output.startswith("Error: "), result.output
        assert message in result.output and "Traceback" not in result.output


def test_lowered_n_episodes_with_matching_n_steps_is_an_earlier_commit(tmp_path):
    """Sizes that agree with the table are a valid earlier commit, not an edit."""
    path = _store(tmp_path / "s")
    _edit_root(path, lambda attrs: attrs.update(n_episodes=2, n_steps=70))
    with TrajectoryStore.open(path) as store:
        assert store.n_episodes == 2 and store.episode_table().lengths.sum() == 70


@pytest.mark.parametrize(
    "file",
    [
        "zarr.json",
        "observations/zarr.json",
        "steps/zarr.json",
        "episodes/length/zarr.json",
        "splits/half/zarr.json",
        "splits/half/visible/zarr.json",
        "relabels/r/zarr.json",
        "relabels/r/uncertainty/zarr.json",
    ],
)
def test_invalid_json_in_any_zarr_json_names_the_file(tmp_path, file):
    path = _store(tmp_path / "s")
    (path / file).write_text('{"zarr_format": 3, "node_type": ')

    def every_read() -> None:
        load_training_data(path, mode="semi-supervised", split="half", relabel="r")

    with pytest.raises(StoreFormatError, match="cannot be read as zarr metadata") as error:
        every_read()
    assert str(path / file) in str(error.value)
    result = CliRunner().invoke(
        cli, ["train", str(path), "--algo", "td3bc", "--mode", "semi-supervised", "--split", "half",
              "--relabel", "r", "--steps", "1", "--out", str(tmp_path / "run"), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 2 and str(path / file) in result.output, result.output
    assert "Traceback" not in result.output


def test_a_relabel_run_with_edited_sizes_is_refused(tmp_path):
    path = _store(tmp_path / "s")
    file = path / "relabels/r/zarr.json"
    meta = json.loads(file.read_text())
    meta["attributes"]["n_steps"] = -3
    file.write_text(json.dumps(meta))
    with TrajectoryStore.open(path) as store, pytest.raises(StoreFormatError, match="n_steps"):
        store.relabel_run("r")
