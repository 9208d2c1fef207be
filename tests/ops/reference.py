"""Plain NumPy references of the ssorl ops, for tests only: slow, obvious, no kernels.

Observations [R, *obs_shape] of any dtype are flattened to [R, D] rows and converted
to float32 first (exact for uint8), then `(x - mean) / std` in float32: the order of
arithmetic every backend must reproduce bit for bit.
"""

from __future__ import annotations

import numpy as np


def _rows(observations: np.ndarray) -> np.ndarray:
    """[R, D] float32 rows of observations [R, *obs_shape]."""
    return observations.reshape(observations.shape[0], -1).astype(np.float32)


def idm_windows(
    observations: np.ndarray,
    step_start: np.ndarray,
    lengths: np.ndarray,
    episode_index: np.ndarray,
    step_index: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Windows [B, k+2, D] and valid [B, k+2], one sample at a time."""
    observations = _rows(observations)
    batch, n_dim = len(episode_index), observations.shape[1]
    out = np.empty((batch, k + 2, n_dim), np.float32)
    valid = np.empty((batch, k + 2), bool)
    for b, (e, g) in enumerate(zip(episode_index, step_index, strict=True)):
        t = g - step_start[e]  # local step
        for w, dt in enumerate(range(-k, 2)):
            local = t + dt
            valid[b, w] = local >= 0
            row = step_start[e] + e + max(local, 0)
            out[b, w] = (observations[row] - mean) / std
    return out, valid


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
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Left-padded (states, actions, rtg, timesteps, mask), one sample at a time."""
    observations = _rows(observations)
    batch, n_dim, n_act = len(episode_index), observations.shape[1], actions.shape[1]
    states = np.zeros((batch, context, n_dim), np.float32)
    acts = np.zeros((batch, context, n_act), np.float32)
    rtg = np.zeros((batch, context), np.float32)
    timesteps = np.zeros((batch, context), np.int64)
    mask = np.zeros((batch, context), bool)
    for b, (e, t0) in enumerate(zip(episode_index, start, strict=True)):
        local = np.arange(t0, min(t0 + context, lengths[e]))
        steps = step_start[e] + local
        n = len(local)
        states[b, context - n :] = (observations[steps + e] - mean) / std
        acts[b, context - n :] = actions[steps]
        rtg[b, context - n :] = returns_to_go[steps]
        timesteps[b, context - n :] = local
        mask[b, context - n :] = True
    return states, acts, rtg, timesteps, mask


def returns_to_go(
    rewards: np.ndarray, step_start: np.ndarray, lengths: np.ndarray, gamma: float
) -> np.ndarray:
    """Discounted returns-to-go, summed backwards in Python floats (float64)."""
    out = np.empty(len(rewards), np.float32)
    for s, n in zip(step_start, lengths, strict=True):
        acc = 0.0
        for g in range(s + n - 1, s - 1, -1):
            acc = float(rewards[g]) + gamma * acc
            out[g] = acc
    return out
