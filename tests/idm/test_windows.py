"""Range windows (chunk + halo) equal the windows built from the whole store."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssorl_data import ops
from ssorl_data.idm.windows import RangeWindows
from ssorl_data.store import EpisodeTable


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 9), min_size=1, max_size=8),
    k=st.integers(0, 4),
    data=st.data(),
)
def test_range_windows_equal_whole_store_windows(lengths, k, data):
    lengths = np.array(lengths, dtype=np.int64)
    step_start = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
    n, e = int(lengths.sum()), len(lengths)
    table = EpisodeTable(step_start, lengths, np.zeros(e), np.ones(e, bool))
    obs = np.random.default_rng(0).standard_normal((n + e, 2)).astype(np.float32)
    mean, std = torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.5])
    episode = np.repeat(np.arange(e), lengths)
    whole = torch.empty(n, k + 2, 2)
    whole_valid = torch.empty(n, k + 2, dtype=torch.bool)
    ops.idm_windows(torch.from_numpy(obs), torch.from_numpy(step_start),
                    torch.from_numpy(lengths), torch.from_numpy(episode), torch.arange(n),
                    mean, std, k, whole, whole_valid)  # fmt: skip
    start = data.draw(st.integers(0, n - 1))
    stop = data.draw(st.integers(start + 1, n))
    builder = RangeWindows(table, k, mean, std, max_steps=n, obs_dim=2)
    lo, hi = builder.rows(start, stop)
    assert 0 <= lo and hi <= n + e and hi - lo <= stop - start + k + e
    windows, valid = builder.build(obs[lo:hi], start, stop)
    torch.testing.assert_close(windows, whole[start:stop], rtol=0, atol=0)
    assert torch.equal(valid, whole_valid[start:stop])


def test_range_windows_of_uint8_frames_equal_float32_windows():
    """A chunk of uint8 [n, 2, 3, 2] frames, passed as read (no float32 copy), gives the
    flattened float32 windows [n, k+2, 12] of the whole store's float32 values."""
    lengths = np.array([3, 1, 6, 2], dtype=np.int64)
    step_start = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
    n, e, k = int(lengths.sum()), len(lengths), 2
    table = EpisodeTable(step_start, lengths, np.zeros(e), np.ones(e, bool))
    frames = np.random.default_rng(1).integers(0, 256, (n + e, 2, 3, 2), dtype=np.uint8)
    mean, std = torch.full((12,), 127.5), torch.linspace(20.0, 80.0, 12)
    whole = torch.empty(n, k + 2, 12)
    whole_valid = torch.empty(n, k + 2, dtype=torch.bool)
    ops.idm_windows(torch.from_numpy(frames.reshape(n + e, 12).astype(np.float32)),
                    torch.from_numpy(step_start), torch.from_numpy(lengths),
                    torch.from_numpy(np.repeat(np.arange(e), lengths)), torch.arange(n),
                    mean, std, k, whole, whole_valid)  # fmt: skip
    builder = RangeWindows(table, k, mean, std, max_steps=n, obs_dim=12)
    for start, stop in [(0, n), (4, 9), (9, 12)]:
        lo, hi = builder.rows(start, stop)
        windows, valid = builder.build(frames[lo:hi], start, stop)
        assert windows.dtype == torch.float32 and windows.shape == (stop - start, k + 2, 12)
        assert windows.numpy().tobytes() == whole[start:stop].numpy().tobytes()
        assert torch.equal(valid, whole_valid[start:stop])
