"""Pure-torch kernels with the exact semantics of the C++ ops, on any device.

Vectorised indexing; slower than the C++ kernels on CPU but needs no build, runs
on a GPU without the CUDA extension, and traces under torch.compile as plain
torch ops. Arithmetic matches the other backends bit for bit: float32
`(x - mean) / std` as two operations (uint8 rows are promoted to float32, exactly,
by the subtraction; ops passes N-d rows as [R, D] views), and returns-to-go
accumulated in float64 as `r + gamma * acc` (a multiply, then an add: never fused).

Each kernel takes its op's schema arguments and each `first_bad_<op>` returns
(sample, code) as ssorl_data.kernels.numba_ops does, with (-1, OK) when every
sample is valid; checking costs one device sync. ssorl_data.ops also uses these
checks to word an index error the C++ kernels raised, on whatever device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ssorl_data.kernels import BAD_EPISODE, BAD_STEP, BAD_TABLE, OK


def _first(bad: Tensor, codes: list[tuple[Tensor, int]]) -> tuple[int, int]:
    """The first True of `bad` and the code of the first mask in `codes` that holds there."""
    if not bool(bad.any()):
        return -1, OK
    b = int(torch.nonzero(bad)[0, 0])
    return b, next(code for mask, code in codes if bool(mask[b]))


def _episode_rows(step_start: Tensor, lengths: Tensor, episode_index: Tensor) -> tuple[Tensor, ...]:
    """(bad episode mask, step_start, length) per sample, looked up only for valid episodes."""
    n_episodes = step_start.shape[0]
    bad_episode = (episode_index < 0) | (episode_index >= n_episodes)
    safe = episode_index.clamp(0, max(n_episodes - 1, 0))
    if n_episodes == 0:  # every sample is bad; look nothing up
        zeros = torch.zeros_like(episode_index)
        return bad_episode, zeros, zeros
    return bad_episode, step_start[safe], lengths[safe]


def first_bad_idm_windows(
    n_rows: int, step_start: Tensor, lengths: Tensor, episode_index: Tensor, step_index: Tensor
) -> tuple[int, int]:
    """(sample, code) of the first sample whose window is not inside its episode, or (-1, OK)."""
    bad_episode, s, t = _episode_rows(step_start, lengths, episode_index)
    bad_step = ~bad_episode & ((step_index < s) | (step_index >= s + t))
    bad_table = ~bad_episode & ((s < 0) | (step_index + episode_index + 1 >= n_rows))
    bad = bad_episode | bad_step | bad_table
    return _first(bad, [(bad_episode, BAD_EPISODE), (bad_step, BAD_STEP), (bad_table, BAD_TABLE)])


def first_bad_subtrajectories(
    n_rows: int,
    n_steps: int,
    step_start: Tensor,
    lengths: Tensor,
    episode_index: Tensor,
    start: Tensor,
) -> tuple[int, int]:
    """(sample, code) of the first sample whose start is not inside its episode, or (-1, OK)."""
    bad_episode, s, t = _episode_rows(step_start, lengths, episode_index)
    bad_step = ~bad_episode & ((start < 0) | (start >= t))
    bad_table = ~bad_episode & ((s < 0) | (s + t > n_steps) | (s + t + episode_index > n_rows))
    bad = bad_episode | bad_step | bad_table
    return _first(bad, [(bad_episode, BAD_EPISODE), (bad_step, BAD_STEP), (bad_table, BAD_TABLE)])


def first_bad_returns_to_go(n_steps: int, step_start: Tensor, lengths: Tensor) -> tuple[int, int]:
    """(episode, BAD_TABLE) of the first empty episode or one outside [0, n_steps), or (-1, OK)."""
    bad = (step_start < 0) | (lengths < 1) | (step_start + lengths > n_steps)
    return _first(bad, [(bad, BAD_TABLE)])


def idm_windows(
    observations: Tensor,
    step_start: Tensor,
    lengths: Tensor,  # in the schema; the sample check has used it
    episode_index: Tensor,
    step_index: Tensor,
    mean: Tensor,
    std: Tensor,
    k: int,
    out: Tensor,
    valid: Tensor,
) -> None:
    """Fill out[b] with normalised s_{t-k} .. s_t, s_{t+1}; clamp past rows to the episode start."""
    offsets = torch.arange(-k, 2, device=observations.device)
    rows = (step_index + episode_index)[:, None] + offsets  # [B, k + 2]
    first_row = (step_start[episode_index] + episode_index)[:, None]
    torch.ge(rows, first_row, out=valid)
    rows = torch.maximum(rows, first_row)
    torch.sub(observations[rows], mean, out=out)
    out.div_(std)


def subtrajectories(
    observations: Tensor,
    actions: Tensor,
    returns_to_go: Tensor,
    step_start: Tensor,
    lengths: Tensor,
    episode_index: Tensor,
    start: Tensor,
    mean: Tensor,
    std: Tensor,
    context: int,
    states_out: Tensor,
    actions_out: Tensor,
    rtg_out: Tensor,
    timesteps_out: Tensor,
    mask_out: Tensor,
) -> None:
    """Fill left-padded context windows: real steps last, zero pad rows masked False."""
    position = torch.arange(context, device=observations.device)[None, :]
    n_real = torch.clamp(lengths[episode_index] - start, max=context)[:, None]
    pad = context - n_real
    torch.ge(position, pad, out=mask_out)
    # Pad positions point at the episode's first step (a valid row) and are zeroed below.
    local = torch.where(mask_out, start[:, None] + position - pad, 0)
    timesteps_out.copy_(local)
    steps = step_start[episode_index][:, None] + local  # [B, K]
    torch.sub(observations[steps + episode_index[:, None]], mean, out=states_out)
    states_out.div_(std)
    actions_out.copy_(actions[steps])
    rtg_out.copy_(returns_to_go[steps])
    pad_rows = ~mask_out
    states_out.masked_fill_(pad_rows[..., None], 0.0)
    actions_out.masked_fill_(pad_rows[..., None], 0.0)
    rtg_out.masked_fill_(pad_rows, 0.0)


def returns_to_go(
    rewards: Tensor, step_start: Tensor, lengths: Tensor, gamma: float, out: Tensor
) -> None:
    """out[g] = sum over later steps j of the episode of gamma^(j-g) r_j, in float64.

    Vectorised across episodes, one step back from every episode's end per
    iteration, so each episode sums in the same order as the other backends.
    """
    acc = torch.zeros(step_start.shape[0], dtype=torch.float64, device=rewards.device)
    last = step_start + lengths - 1
    for j in range(int(lengths.max()) if lengths.numel() else 0):
        active = torch.nonzero(lengths > j).flatten()
        steps = last[active] - j
        acc_active = rewards[steps].double() + acc[active] * gamma
        acc[active] = acc_active
        out[steps] = acc_active.float()
