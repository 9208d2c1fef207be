"""EpisodeIndex agrees with the index rules spelled out episode by episode."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ssorl_data.episode_index import EpisodeIndex

LENGTHS = st.lists(st.integers(1, 7), min_size=1, max_size=8)


def _by_hand(lengths: list[int]) -> tuple[list[int], list[int]]:
    """(episode, observation row) of every global step, walking the episodes in order."""
    episode, row, step = [], [], 0
    for e, n in enumerate(lengths):
        for _ in range(n):
            episode.append(e)
            row.append(step + e)
            step += 1
    return episode, row


@settings(max_examples=80, deadline=None)
@given(lengths=LENGTHS, data=st.data())
def test_index_matches_the_episode_by_episode_rules(lengths, data):
    index = EpisodeIndex.from_lengths(np.array(lengths))
    episode, row = _by_hand(lengths)
    n, e = len(episode), len(lengths)
    assert index.n_steps == n and index.n_episodes == e
    assert index.step_start.dtype == np.int64
    assert index.episode_of_step().tolist() == episode
    assert index.obs_rows().tolist() == row
    start = data.draw(st.integers(0, n - 1))
    stop = data.draw(st.integers(start + 1, n))
    assert index.episode_of_step(start, stop).tolist() == episode[start:stop]
    assert index.episodes_covering(start, stop) == (episode[start], episode[stop - 1] + 1)
    assert index.episode_at(np.arange(n)).tolist() == episode
    # T+1 observation rows per episode, one after another
    obs_episode = [k for k, length in enumerate(lengths) for _ in range(length + 1)]
    assert index.episode_at_row(np.arange(n + e)).tolist() == obs_episode
    assert index.obs_start.tolist() == [obs_episode.index(k) for k in range(e)]
    assert index.obs_stop.tolist() == np.cumsum(np.array(lengths) + 1).tolist()
    first = data.draw(st.integers(0, e))
    last = data.draw(st.integers(first, e))
    lo, hi = index.step_range(first, last)
    assert [g for g in range(n) if first <= episode[g] < last] == list(range(lo, hi))
    assert index.obs_range(first, last) == (lo + first, hi + last)
    chosen = data.draw(st.lists(st.integers(0, e - 1), max_size=4))
    got_episode, got_step = index.steps_of(np.array(chosen, dtype=np.int64))
    want = [(k, g) for k in chosen for g in range(n) if episode[g] == k]
    assert list(zip(got_episode.tolist(), got_step.tolist(), strict=True)) == want
    assert index.per_step(np.arange(e) * 10).tolist() == [10 * k for k in episode]


@given(lengths=LENGTHS, max_steps=st.integers(1, 12))
def test_runs_cover_every_episode_once_in_order_at_about_max_steps(lengths, max_steps):
    index = EpisodeIndex.from_lengths(np.array(lengths))
    runs = list(index.runs(max_steps))
    assert [k for first, last in runs for k in range(first, last)] == list(range(len(lengths)))
    for first, last in runs:
        assert last - first == 1 or sum(lengths[first:last]) <= max_steps


def test_an_index_without_episodes_is_empty():
    index = EpisodeIndex.from_lengths(np.zeros(0, np.int64))
    assert index.n_steps == 0 and index.episode_of_step().shape == (0,)
    assert index.step_range(0, 0) == (0, 0) and list(index.runs(4)) == []
