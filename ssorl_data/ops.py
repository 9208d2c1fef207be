"""Typed wrappers of the ssorl kernels; the only module that calls torch.ops.ssorl.

Every op fills caller-owned output tensors and returns None, so training loops
reuse their batch buffers. Indices follow the store's arithmetic
(DESIGN.md "The store"): global step g of episode e has observation row
g + e and next observation row g + e + 1.

The backend (`cpp` or `numba`) is chosen once per process on first use: the
C++ library is built and loaded if possible, else numba with one
`KernelBuildWarning`; `SSORL_BACKEND=cpp|numba` forces one. `backend_info()`
says which and why. Each wrapper also takes `backend=` to run a specific one
(tests and benchmarks compare them).

Bad indices raise `KernelIndexError` (an IndexError) naming the sample and
its values; bad dtypes, shapes, devices or layouts raise `KernelInputError`
(a ValueError). Inside a torch.compile'd graph the C++ op raises the plain
IndexError / ValueError with the same message, so catch the built-ins. Nothing
is ever read out of bounds.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ssorl_data.errors import KernelBuildError, KernelIndexError, KernelInputError
from ssorl_data.kernels import backend as _backend
from ssorl_data.kernels.backend import BackendInfo

__all__ = [
    "BackendInfo",
    "active_backend",
    "backend_info",
    "idm_windows",
    "returns_to_go",
    "subtrajectories",
]

_ACTIVE: BackendInfo | None = None
_CPP_LOADED = False


def backend_info() -> BackendInfo:
    """The backend the ops use in this process (resolving it, and building C++, on first call)."""
    global _ACTIVE
    if _ACTIVE is None:
        info = _backend.resolve()
        if info.name == "cpp":
            _register_fakes()
        _ACTIVE = info
    return _ACTIVE


def active_backend() -> str:
    """Name of the active backend: "cpp" or "numba"."""
    return backend_info().name


def _use_cpp(backend: str | None) -> bool:
    """Whether this call runs the C++ op; loads it when asked for explicitly."""
    if backend is None:
        return (_ACTIVE or backend_info()).name == "cpp"
    if backend not in _backend.BACKENDS:
        raise KernelInputError(
            f"Expected backend to be one of {_backend.BACKENDS!r} or None. Got {backend!r} instead."
        )
    if backend == "cpp" and not _CPP_LOADED:
        try:
            _backend.build_cpp(_backend.cuda_build_requested())
        except Exception as exc:  # any build or load failure
            first_line = (str(exc).splitlines() or [""])[0]
            raise KernelBuildError(
                f"backend='cpp' was asked for, but the C++ kernels in {_backend.csrc_dir()} could "
                f"not be built ({type(exc).__name__}: {first_line}). Install a C++ compiler, or "
                "use backend='numba'."
            ) from exc
        _register_fakes()
    return backend == "cpp"


# --------------------------------------------------------------------------- ops


def idm_windows(
    observations: Tensor,
    step_start: Tensor,
    lengths: Tensor,
    episode_index: Tensor,
    step_index: Tensor,
    mean: Tensor,
    std: Tensor,
    k: int,
    out: Tensor,
    valid: Tensor,
    *,
    backend: str | None = None,
) -> None:
    """Fill out [B, k+2, D] with normalised s_{t-k}..s_t, s_{t+1}; valid is False where clamped."""
    if _use_cpp(backend):
        try:
            torch.ops.ssorl.idm_windows(
                observations,
                step_start,
                lengths,
                episode_index,
                step_index,
                mean,
                std,
                k,
                out,
                valid,
            )
        except IndexError as exc:
            raise KernelIndexError(str(exc)) from None
        except ValueError as exc:
            raise KernelInputError(str(exc)) from None
        return
    op = "idm_windows"
    obs = _array(observations, op, "observations", torch.float32, 2)
    n_rows, n_dim = obs.shape
    ss, ln = _table(step_start, lengths, op)
    ei = _array(episode_index, op, "episode_index", torch.int64, 1)
    batch = ei.shape[0]
    si = _array(step_index, op, "step_index", torch.int64, 1, (batch,), "one step per sample")
    mu = _array(mean, op, "mean", torch.float32, 1, (n_dim,), "observation dim")
    sd = _array(std, op, "std", torch.float32, 1, (n_dim,), "observation dim")
    if k < 0:
        raise KernelInputError(f"ssorl.{op}: expected k >= 0 past states. Got {k!r} instead.")
    y = _array(out, op, "out", torch.float32, 3, (batch, k + 2, n_dim), "batch, k + 2, obs dim")
    v = _array(valid, op, "valid", torch.bool, 2, (batch, k + 2), "batch, k + 2")
    from ssorl_data.kernels import numba_ops

    b, code = numba_ops.first_bad_idm_sample(n_rows, ss, ln, ei, si)
    if b >= 0:
        _raise_idm_index_error(op, int(b), int(code), n_rows, ss, ln, ei, si)
    numba_ops.idm_windows(obs, ss, ei, si, mu, sd, k, y, v)


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
    *,
    backend: str | None = None,
) -> None:
    """Fill left-padded K-step windows from local step `start`: real steps last, pad rows zero."""
    if _use_cpp(backend):
        try:
            torch.ops.ssorl.subtrajectories(
                observations,
                actions,
                returns_to_go,
                step_start,
                lengths,
                episode_index,
                start,
                mean,
                std,
                context,
                states_out,
                actions_out,
                rtg_out,
                timesteps_out,
                mask_out,
            )
        except IndexError as exc:
            raise KernelIndexError(str(exc)) from None
        except ValueError as exc:
            raise KernelInputError(str(exc)) from None
        return
    op = "subtrajectories"
    obs = _array(observations, op, "observations", torch.float32, 2)
    n_rows, n_dim = obs.shape
    act = _array(actions, op, "actions", torch.float32, 2)
    n_steps, n_act = act.shape
    rtg = _array(returns_to_go, op, "returns_to_go", torch.float32, 1, (n_steps,), "one per step")
    ss, ln = _table(step_start, lengths, op)
    ei = _array(episode_index, op, "episode_index", torch.int64, 1)
    batch = ei.shape[0]
    st = _array(start, op, "start", torch.int64, 1, (batch,), "one start per sample")
    mu = _array(mean, op, "mean", torch.float32, 1, (n_dim,), "observation dim")
    sd = _array(std, op, "std", torch.float32, 1, (n_dim,), "observation dim")
    if context < 1:
        raise KernelInputError(f"ssorl.{op}: expected context >= 1 steps. Got {context!r} instead.")
    shape = (batch, context)
    so = _array(states_out, op, "states_out", torch.float32, 3, (*shape, n_dim), "B, K, obs dim")
    ao = _array(actions_out, op, "actions_out", torch.float32, 3, (*shape, n_act), "B, K, act dim")
    ro = _array(rtg_out, op, "rtg_out", torch.float32, 2, shape, "batch, context")
    to = _array(timesteps_out, op, "timesteps_out", torch.int64, 2, shape, "batch, context")
    mo = _array(mask_out, op, "mask_out", torch.bool, 2, shape, "batch, context")
    from ssorl_data.kernels import numba_ops

    b, code = numba_ops.first_bad_subtrajectory_sample(n_rows, n_steps, ss, ln, ei, st)
    if b >= 0:
        _raise_subtrajectory_index_error(op, int(b), int(code), n_rows, n_steps, ss, ln, ei, st)
    numba_ops.subtrajectories(obs, act, rtg, ss, ln, ei, st, mu, sd, so, ao, ro, to, mo)


def returns_to_go(
    rewards: Tensor,
    step_start: Tensor,
    lengths: Tensor,
    gamma: float,
    out: Tensor,
    *,
    backend: str | None = None,
) -> None:
    """Fill out[g] with the discounted return from step g to its episode's end (float64 sums)."""
    if _use_cpp(backend):
        try:
            torch.ops.ssorl.returns_to_go(rewards, step_start, lengths, gamma, out)
        except IndexError as exc:
            raise KernelIndexError(str(exc)) from None
        except ValueError as exc:
            raise KernelInputError(str(exc)) from None
        return
    op = "returns_to_go"
    r = _array(rewards, op, "rewards", torch.float32, 1)
    n_steps = r.shape[0]
    ss, ln = _table(step_start, lengths, op)
    y = _array(out, op, "out", torch.float32, 1, (n_steps,), "one per step, like rewards")
    from ssorl_data.kernels import numba_ops

    e = int(numba_ops.first_bad_episode(n_steps, ss, ln))
    if e >= 0:
        raise KernelIndexError(
            f"ssorl.{op}: episode {e} spans global steps [{ss[e]}, {ss[e] + ln[e]}) but rewards "
            f"has {n_steps} steps. Pass the episode table of these rewards (lengths >= 1)."
        )
    numba_ops.returns_to_go(r, ss, ln, float(gamma), y)


# --------------------------------------------------------------------------- fake kernels


def _register_fakes() -> None:
    """Register shape-checking fake kernels once the C++ schemas exist (torch.compile, opcheck)."""
    global _CPP_LOADED
    if _CPP_LOADED:
        return
    torch.library.register_fake("ssorl::idm_windows")(_idm_windows_fake)
    torch.library.register_fake("ssorl::subtrajectories")(_subtrajectories_fake)
    torch.library.register_fake("ssorl::returns_to_go")(_returns_to_go_fake)
    _CPP_LOADED = True


def _idm_windows_fake(
    observations: Tensor,
    step_start: Tensor,
    lengths: Tensor,
    episode_index: Tensor,
    step_index: Tensor,
    mean: Tensor,
    std: Tensor,
    k: int,
    out: Tensor,
    valid: Tensor,
) -> None:
    batch, n_dim = episode_index.shape[0], observations.shape[1]
    torch._check(k >= 0, lambda: f"ssorl.idm_windows: expected k >= 0. Got {k} instead.")
    torch._check(lengths.shape[0] == step_start.shape[0], lambda: "lengths/step_start mismatch")
    torch._check(step_index.shape[0] == batch, lambda: "step_index must have one step per sample")
    torch._check(mean.shape[0] == n_dim and std.shape[0] == n_dim, lambda: "mean/std: obs dim")
    torch._check(out.shape == (batch, k + 2, n_dim), lambda: f"out must be {[batch, k + 2, n_dim]}")
    torch._check(valid.shape == (batch, k + 2), lambda: f"valid must be {[batch, k + 2]}")


def _subtrajectories_fake(
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
    batch, n_dim, n_act = episode_index.shape[0], observations.shape[1], actions.shape[1]
    torch._check(context >= 1, lambda: f"ssorl.subtrajectories: context >= 1, got {context}")
    torch._check(returns_to_go.shape[0] == actions.shape[0], lambda: "returns_to_go: one per step")
    torch._check(lengths.shape[0] == step_start.shape[0], lambda: "lengths/step_start mismatch")
    torch._check(start.shape[0] == batch, lambda: "start must have one step per sample")
    torch._check(mean.shape[0] == n_dim and std.shape[0] == n_dim, lambda: "mean/std: obs dim")
    torch._check(states_out.shape == (batch, context, n_dim), lambda: "states_out: [B, K, D]")
    torch._check(actions_out.shape == (batch, context, n_act), lambda: "actions_out: [B, K, A]")
    for t in (rtg_out, timesteps_out, mask_out):
        torch._check(t.shape == (batch, context), lambda: "rtg/timesteps/mask_out: [B, K]")


def _returns_to_go_fake(
    rewards: Tensor, step_start: Tensor, lengths: Tensor, gamma: float, out: Tensor
) -> None:
    torch._check(lengths.shape[0] == step_start.shape[0], lambda: "lengths/step_start mismatch")
    torch._check(out.shape == rewards.shape, lambda: "out must have the shape of rewards")


# --------------------------------------------------------------------------- numba-side checks


def _array(
    t: Tensor,
    op: str,
    name: str,
    dtype: torch.dtype,
    ndim: int,
    shape: tuple[int, ...] | None = None,
    what: str = "",
) -> np.ndarray:
    """Check one argument as the C++ kernels do and view it as a NumPy array (no copy)."""
    if not isinstance(t, Tensor):
        raise KernelInputError(
            f"ssorl.{op}: expected {name} to be a torch.Tensor. Got {type(t).__name__} instead."
        )
    if t.dtype != dtype:
        raise KernelInputError(
            f"ssorl.{op}: expected {name} of dtype {dtype}. Got {t.dtype} instead."
        )
    if t.dim() != ndim:
        raise KernelInputError(
            f"ssorl.{op}: expected {name} with {ndim} dimensions. Got shape {tuple(t.shape)} "
            "instead."
        )
    if t.device.type != "cpu":
        raise KernelInputError(
            f"ssorl.{op}: the numba backend runs on CPU tensors. Got {name} on {t.device} instead; "
            "use the cpp backend built with CUDA for GPU tensors."
        )
    if not t.is_contiguous():
        raise KernelInputError(
            f"ssorl.{op}: expected {name} to be contiguous. Got strides {t.stride()} instead; "
            "call .contiguous() first."
        )
    if shape is not None and tuple(t.shape) != shape:
        raise KernelInputError(
            f"ssorl.{op}: expected {name} of shape {shape} ({what}). Got {tuple(t.shape)} instead."
        )
    return t.detach().numpy()


def _table(step_start: Tensor, lengths: Tensor, op: str) -> tuple[np.ndarray, np.ndarray]:
    ss = _array(step_start, op, "step_start", torch.int64, 1)
    ln = _array(lengths, op, "lengths", torch.int64, 1, ss.shape, "one length per episode")
    return ss, ln


def _raise_idm_index_error(
    op: str,
    b: int,
    code: int,
    n_rows: int,
    ss: np.ndarray,
    ln: np.ndarray,
    ei: np.ndarray,
    si: np.ndarray,
) -> None:
    from ssorl_data.kernels import numba_ops

    e, g = int(ei[b]), int(si[b])
    if code == numba_ops.BAD_EPISODE:
        raise KernelIndexError(
            f"ssorl.{op}: sample {b} has episode_index {e}, outside [0, {ss.shape[0]}). "
            "Pass episode indices of this episode table."
        )
    s, t = int(ss[e]), int(ln[e])
    if code == numba_ops.BAD_STEP:
        raise KernelIndexError(
            f"ssorl.{op}: sample {b} has step_index {g}, outside its episode {e} (global steps "
            f"[{s}, {s + t})). Pass the global step of a step of that episode."
        )
    raise KernelIndexError(
        f"ssorl.{op}: sample {b} (episode {e}, step {g}) needs observation rows [{s + e}, "
        f"{g + e + 2}) but observations has {n_rows} rows. The episode table does not match "
        "the observations (N + E rows)."
    )


def _raise_subtrajectory_index_error(
    op: str,
    b: int,
    code: int,
    n_rows: int,
    n_steps: int,
    ss: np.ndarray,
    ln: np.ndarray,
    ei: np.ndarray,
    st: np.ndarray,
) -> None:
    from ssorl_data.kernels import numba_ops

    e = int(ei[b])
    if code == numba_ops.BAD_EPISODE:
        raise KernelIndexError(
            f"ssorl.{op}: sample {b} has episode_index {e}, outside [0, {ss.shape[0]}). "
            "Pass episode indices of this episode table."
        )
    s, t = int(ss[e]), int(ln[e])
    if code == numba_ops.BAD_STEP:
        raise KernelIndexError(
            f"ssorl.{op}: sample {b} has start {int(st[b])}, outside its episode {e} (local "
            f"steps [0, {t})). Pass a local step index of that episode."
        )
    raise KernelIndexError(
        f"ssorl.{op}: sample {b} (episode {e}) spans global steps [{s}, {s + t}) but the step "
        f"arrays have {n_steps} rows and observations {n_rows}. The episode table does not "
        "match the arrays."
    )
