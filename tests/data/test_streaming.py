"""Streaming reads and statistics: equal to the whole-array results, a few chunks at a time."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ssorl_data import streaming_stats
from ssorl_data.store import TrajectoryStore
from ssorl_data.store.ranges import gather_ranges, iter_blocks
from ssorl_data.streaming_stats import Moments, observation_stats, store_observation_stats
from tests.data.factories import make_store, random_batch


def whole_array_stats(observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The definition before streaming: float64 moments of the float32 rows, read whole."""
    flat = observations.reshape(observations.shape[0], -1).astype(np.float32).astype(np.float64)
    return flat.mean(0).astype(np.float32), np.maximum(flat.std(0), 1e-6).astype(np.float32)


def assert_within_float32_rounding(got, expected) -> None:
    for a, b in zip(got, expected, strict=True):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_array_max_ulp(a, b, maxulp=1)


@st.composite
def chunked_rows(draw):
    """An array [n, d] (float32 with an offset, to make cancellation show, or uint8) and
    random cut points splitting it into blocks."""
    n = draw(st.integers(1, 300))
    d = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    if draw(st.booleans()):
        offset = draw(st.sampled_from([0.0, 1e3, -5e4]))
        rows = rng.standard_normal((n, d)) * draw(st.sampled_from([1e-3, 1.0, 50.0])) + offset
        rows = rows.astype(np.float32)
    else:
        rows = rng.integers(0, 256, (n, d), dtype=np.uint8)
    cuts = sorted(draw(st.sets(st.integers(1, max(1, n - 1)), max_size=8)))
    return rows, [c for c in cuts if c < n]


@given(chunked_rows(), st.integers(1, 64))
@settings(max_examples=150, deadline=None)
def test_moments_merged_over_random_chunks_equal_the_whole_array(case, slice_rows) -> None:
    rows, cuts = case
    moments = Moments.empty(rows.shape[1])
    old = streaming_stats.SLICE_BYTES
    streaming_stats.SLICE_BYTES = 8 * rows.shape[1] * slice_rows  # slices inside each block
    try:
        for block in np.split(rows, cuts):
            moments.update(block)
    finally:
        streaming_stats.SLICE_BYTES = old
    assert moments.count == rows.shape[0]
    assert_within_float32_rounding(moments.mean_std(), whole_array_stats(rows))


def test_merge_of_moments_is_the_moments_of_both() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(7, 2, (40, 3)), rng.normal(-1, 0.5, (25, 3))
    merged = Moments.of(a)
    merged.merge(Moments.of(b))
    both = np.concatenate([a, b])
    np.testing.assert_allclose(merged.mean, both.mean(0), rtol=1e-13)
    np.testing.assert_allclose(merged.m2, ((both - both.mean(0)) ** 2).sum(0), rtol=1e-12)
    empty = Moments.empty(3)
    empty.merge(Moments.empty(3))
    with pytest.raises(ValueError, match="at least one row"):
        empty.mean_std()


def test_constant_dimension_gets_the_std_floor() -> None:
    rows = np.ones((10, 2), np.float32)
    rows[:, 1] = np.arange(10)
    mean, std = observation_stats(rows)
    assert std[0] == np.float32(1e-6) and std[1] == np.float32(np.arange(10).std())
    assert mean.tolist() == [1.0, 4.5]


@given(
    chunk_steps=st.integers(1, 40),
    lengths=st.lists(st.integers(1, 30), min_size=1, max_size=8),
    uint8=st.booleans(),
)
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_store_stats_equal_the_whole_read(tmp_path_factory, chunk_steps, lengths, uint8) -> None:
    path = tmp_path_factory.mktemp("stats") / "store"
    kwargs = {"obs_shape": (4, 4, 3), "obs_dtype": np.uint8} if uint8 else {"obs_shape": (5,)}
    batch = random_batch(np.random.default_rng(len(lengths)), lengths, **kwargs)
    make_store(path, batch, chunk_steps=chunk_steps, **kwargs)
    with TrajectoryStore.open(path) as store:
        rows = store.read_observations(0, store.n_steps + store.n_episodes)
        got = store_observation_stats(store)
    assert got[0].shape == (48 if uint8 else 5,)
    assert_within_float32_rounding(got, whole_array_stats(rows))


class CountingReader:
    """Rows of `array` with the chunks each read decodes, as zarr would."""

    def __init__(self, array: np.ndarray, chunk: int) -> None:
        self.array, self.chunk, self.decoded, self.reads = array, chunk, [], []

    def __call__(self, start: int, stop: int) -> np.ndarray:
        self.reads.append((start, stop))
        self.decoded += list(range(start // self.chunk, -(-stop // self.chunk)))
        return self.array[start:stop].copy()


@given(
    size=st.integers(1, 200),
    chunk=st.integers(1, 17),
    block_chunks=st.integers(1, 4),
    data=st.data(),
)
@settings(max_examples=200, deadline=None)
def test_gather_ranges_reads_each_chunk_once(size, chunk, block_chunks, data) -> None:
    bounds = sorted(data.draw(st.lists(st.integers(0, size), max_size=12)))
    starts, stops = np.array(bounds[0::2], np.int64), np.array(bounds[1::2], np.int64)
    starts = starts[: stops.size]
    array = np.arange(size * 2).reshape(size, 2)
    reader = CountingReader(array, chunk)
    total = int((stops - starts).sum())
    out = np.empty((total, 2), np.float32)
    gather_ranges(reader, starts, stops, out, block_chunks * chunk, chunk)
    assert all(b - a <= block_chunks * chunk for a, b in reader.reads)  # a block at most
    expected = [array[lo:hi] for lo, hi in zip(starts, stops, strict=True)]
    np.testing.assert_array_equal(out, np.concatenate([np.empty((0, 2)), *expected]))
    assert len(reader.decoded) == len(set(reader.decoded))  # no chunk decoded twice
    needed = {r // chunk for lo, hi in zip(starts, stops, strict=True) for r in range(lo, hi)}
    assert set(reader.decoded) == needed  # and none that no range touches


def test_gather_ranges_refuses_overlaps_and_a_wrong_out() -> None:
    reader = CountingReader(np.arange(20), 4)
    with pytest.raises(ValueError, match="disjoint"):
        gather_ranges(reader, np.array([0, 3]), np.array([5, 8]), np.empty(10), 4, 4)
    with pytest.raises(ValueError, match="7 rows"):
        gather_ranges(reader, np.array([0, 5]), np.array([3, 9]), np.empty(6), 4, 4)


def test_iter_rows_and_read_ranges_of_a_store(tmp_path) -> None:
    kwargs = {"obs_shape": (3, 2, 3), "obs_dtype": np.uint8}
    batch = random_batch(np.random.default_rng(0), [9, 4, 13, 1, 7], **kwargs)
    make_store(tmp_path / "s", batch, chunk_steps=5, **kwargs)
    with TrajectoryStore.open(tmp_path / "s") as store:
        obs = store.read_observations(0, store.n_steps + store.n_episodes)
        blocks = list(store.iter_rows("observations", block_chunks=2))
        assert [start for start, _ in blocks] == list(range(0, obs.shape[0], 10))
        np.testing.assert_array_equal(np.concatenate([rows for _, rows in blocks]), obs)
        mask = np.concatenate([rows for _, rows in store.iter_rows("action_mask")])
        np.testing.assert_array_equal(mask, store.read_steps("action_mask", 0, store.n_steps))
        out = np.empty((9, 18), np.float32)
        store.read_ranges("observations", [2, 20], [6, 25], out.reshape(9, 3, 2, 3))
        np.testing.assert_array_equal(out, np.concatenate([obs[2:6], obs[20:25]]).reshape(9, -1))
        with pytest.raises(IndexError, match="outside the committed"):
            store.read_ranges("actions", [30], [40], np.empty((10, 2), np.float32))
        with pytest.raises(KeyError, match="observations or"):
            list(store.iter_rows("rewardz"))


def test_iter_blocks_covers_the_rows_once() -> None:
    reader = CountingReader(np.arange(23), 5)
    blocks = list(iter_blocks(reader, 23, 10))
    assert [b.tolist() for _, b in blocks] == [
        list(range(0, 10)),
        list(range(10, 20)),
        [20, 21, 22],
    ]
    assert reader.decoded == [0, 1, 2, 3, 4]
