"""numba kernels with the exact semantics of the C++ ops (see csrc/cpu/).

Used when the C++ build is unavailable or SSORL_BACKEND=numba. Each kernel takes
the arguments of its op's schema, as NumPy arrays whose dtypes and shapes
ssorl_data.ops has checked against ssorl_data.kernels.spec; `first_bad_<op>`
finds the first sample (or episode) with invalid indices, with the inputs the
spec's `index_inputs` name, so ops can raise before any kernel reads out of bounds.
Arithmetic is float32 `(float32(x) - mean) / std` and a float64 backward accumulation
for returns-to-go, as in every backend, so results agree bit for bit. Observations
arrive as [R, D] views (ops flattens N-d rows) of float32 or uint8; numba compiles
one specialisation per dtype, and the explicit float32 cast keeps uint8 arithmetic in
float32 (numba would otherwise promote uint8 - float32 to float64).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from ssorl_data.kernels import BAD_EPISODE, BAD_STEP, BAD_TABLE, OK


@numba.njit(cache=True)
def first_bad_idm_windows(
    n_rows: int,
    step_start: np.ndarray,
    lengths: np.ndarray,
    episode_index: np.ndarray,
    step_index: np.ndarray,
) -> tuple[int, int]:
    """(sample, code) of the first sample whose window is not inside its episode, or (-1, OK)."""
    n_episodes = step_start.shape[0]
    for b in range(episode_index.shape[0]):
        e = episode_index[b]
        if e < 0 or e >= n_episodes:
            return b, BAD_EPISODE
        s = step_start[e]
        g = step_index[b]
        if g < s or g >= s + lengths[e]:
            return b, BAD_STEP
        if s < 0 or g + e + 1 >= n_rows:
            return b, BAD_TABLE
    return -1, OK


@numba.njit(cache=True)
def first_bad_subtrajectories(
    n_rows: int,
    n_steps: int,
    step_start: np.ndarray,
    lengths: np.ndarray,
    episode_index: np.ndarray,
    start: np.ndarray,
) -> tuple[int, int]:
    """(sample, code) of the first sample whose start is not inside its episode, or (-1, OK)."""
    n_episodes = step_start.shape[0]
    for b in range(episode_index.shape[0]):
        e = episode_index[b]
        if e < 0 or e >= n_episodes:
            return b, BAD_EPISODE
        s = step_start[e]
        t = lengths[e]
        if start[b] < 0 or start[b] >= t:
            return b, BAD_STEP
        if s < 0 or s + t > n_steps or s + t + e > n_rows:
            return b, BAD_TABLE
    return -1, OK


@numba.njit(cache=True)
def first_bad_returns_to_go(
    n_steps: int, step_start: np.ndarray, lengths: np.ndarray
) -> tuple[int, int]:
    """(episode, BAD_TABLE) of the first empty episode or one outside [0, n_steps), or (-1, OK)."""
    for e in range(step_start.shape[0]):
        if step_start[e] < 0 or lengths[e] < 1 or step_start[e] + lengths[e] > n_steps:
            return e, BAD_TABLE
    return -1, OK


@numba.njit(parallel=True, cache=True)
def idm_windows(
    observations: np.ndarray,
    step_start: np.ndarray,
    lengths: np.ndarray,  # in the schema; the sample check has used it
    episode_index: np.ndarray,
    step_index: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    k: int,
    out: np.ndarray,
    valid: np.ndarray,
) -> None:
    """Fill out[b] with normalised s_{t-k} .. s_t, s_{t+1}; clamp past rows to the episode start."""
    n_dim = observations.shape[1]
    for b in prange(episode_index.shape[0]):
        e = episode_index[b]
        first_row = step_start[e] + e
        row_t = step_index[b] + e
        for w in range(k + 2):
            row = row_t - k + w
            inside = row >= first_row
            if not inside:
                row = first_row
            valid[b, w] = inside
            for d in range(n_dim):
                out[b, w, d] = (np.float32(observations[row, d]) - mean[d]) / std[d]


@numba.njit(parallel=True, cache=True)
def subtrajectories(
    observations: np.ndarray,
    actions: np.ndarray,
    returns_to_go: np.ndarray,
    step_start: np.ndarray,
    lengths: np.ndarray,
    episode_index: np.ndarray,
    start: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    context: int,
    states_out: np.ndarray,
    actions_out: np.ndarray,
    rtg_out: np.ndarray,
    timesteps_out: np.ndarray,
    mask_out: np.ndarray,
) -> None:
    """Fill left-padded context windows: real steps last, zero pad rows masked False."""
    n_dim = observations.shape[1]
    n_act = actions.shape[1]
    for b in prange(episode_index.shape[0]):
        e = episode_index[b]
        t0 = start[b]
        n_real = min(context, lengths[e] - t0)
        pad = context - n_real
        g0 = step_start[e] + t0
        for p in range(pad):  # explicit loops: slice assignments would become nested parfors
            for d in range(n_dim):
                states_out[b, p, d] = 0.0
            for a in range(n_act):
                actions_out[b, p, a] = 0.0
            rtg_out[b, p] = 0.0
            timesteps_out[b, p] = 0
            mask_out[b, p] = False
        for i in range(n_real):
            p = pad + i
            g = g0 + i
            for d in range(n_dim):
                states_out[b, p, d] = (np.float32(observations[g + e, d]) - mean[d]) / std[d]
            for a in range(n_act):
                actions_out[b, p, a] = actions[g, a]
            rtg_out[b, p] = returns_to_go[g]
            timesteps_out[b, p] = t0 + i
            mask_out[b, p] = True


@numba.njit(parallel=True, cache=True)
def returns_to_go(
    rewards: np.ndarray, step_start: np.ndarray, lengths: np.ndarray, gamma: float, out: np.ndarray
) -> None:
    """out[g] = sum over later steps j of the episode of gamma^(j-g) r_j, in float64."""
    for e in prange(step_start.shape[0]):
        acc = 0.0
        for g in range(step_start[e] + lengths[e] - 1, step_start[e] - 1, -1):
            acc = np.float64(rewards[g]) + gamma * acc
            out[g] = np.float32(acc)
