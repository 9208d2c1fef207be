"""Typed wrappers of the ssorl kernels; the only module that calls torch.ops.ssorl.

Every op fills caller-owned output tensors and returns None, so training loops
reuse their batch buffers. Indices follow the store's arithmetic
(DESIGN.md "The store"): global step g of episode e has observation row
g + e and next observation row g + e + 1.

The backend (`cpp`, `numba` or `torch`) is chosen once per process on first
use: the C++ library is built and loaded if possible, else numba with one
`KernelBuildWarning`; `SSORL_BACKEND=cpp|numba|torch` forces one (`torch` is
pure vectorised torch: no build, any device, slower on CPU). `backend_info()`
says which and why. Each wrapper also takes `backend=` to run a specific one
(tests and benchmarks compare them).

Bad indices raise `KernelIndexError` (an IndexError) naming the sample and
its values; bad dtypes, shapes, devices or layouts raise `KernelInputError`
(a ValueError). Inside a torch.compile'd graph the C++ op raises the plain
IndexError / ValueError with the same message, so catch the built-ins. Nothing
is ever read out of bounds.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import torch
from torch import Tensor

from ssorl_data.errors import KernelBuildError, KernelIndexError, KernelInputError
from ssorl_data.kernels import BAD_EPISODE, BAD_STEP
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
    """Name of the active backend: "cpp", "numba" or "torch"."""
    return backend_info().name


def _select(backend: str | None) -> str:
    """The backend this call runs: the active one, or the one asked for (building C++ if needed)."""
    if backend is None:
        return (_ACTIVE or backend_info()).name
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
                "use backend='numba' or 'torch'."
            ) from exc
        _register_fakes()
    return backend


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
    name = _select(backend)
    if name == "cpp":
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
    obs = _checked(observations, op, "observations", torch.float32, 2, name)
    n_rows, n_dim = obs.shape
    dev = obs.device
    ss, ln = _table(step_start, lengths, op, name, dev)
    ei = _checked(episode_index, op, "episode_index", torch.int64, 1, name, dev)
    batch = ei.shape[0]
    si = _checked(step_index, op, "step_index", torch.int64, 1, name, dev, (batch,), "per sample")
    mu = _checked(mean, op, "mean", torch.float32, 1, name, dev, (n_dim,), "observation dim")
    sd = _checked(std, op, "std", torch.float32, 1, name, dev, (n_dim,), "observation dim")
    if k < 0:
        raise KernelInputError(f"ssorl.{op}: expected k >= 0 past states. Got {k!r} instead.")
    window = (batch, k + 2)
    y = _checked(out, op, "out", torch.float32, 3, name, dev, (*window, n_dim), "B, k + 2, D")
    v = _checked(valid, op, "valid", torch.bool, 2, name, dev, window, "batch, k + 2")
    kernels = _kernels(name)
    arrays = _as_backend(name, obs, ss, ln, ei, si, mu, sd, y, v)
    obs, ss, ln, ei, si, mu, sd, y, v = arrays
    b, code = kernels.first_bad_idm_sample(n_rows, ss, ln, ei, si)
    if b >= 0:
        _raise_idm_index_error(op, int(b), int(code), n_rows, *_host(ss, ln, ei, si))
    kernels.idm_windows(obs, ss, ei, si, mu, sd, k, y, v)


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
    name = _select(backend)
    if name == "cpp":
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
    obs = _checked(observations, op, "observations", torch.float32, 2, name)
    n_rows, n_dim = obs.shape
    dev = obs.device
    act = _checked(actions, op, "actions", torch.float32, 2, name, dev)
    n_steps, n_act = act.shape
    rtg = _checked(returns_to_go, op, "returns_to_go", torch.float32, 1, name, dev, (n_steps,), "N")
    ss, ln = _table(step_start, lengths, op, name, dev)
    ei = _checked(episode_index, op, "episode_index", torch.int64, 1, name, dev)
    batch = ei.shape[0]
    st = _checked(start, op, "start", torch.int64, 1, name, dev, (batch,), "one per sample")
    mu = _checked(mean, op, "mean", torch.float32, 1, name, dev, (n_dim,), "observation dim")
    sd = _checked(std, op, "std", torch.float32, 1, name, dev, (n_dim,), "observation dim")
    if context < 1:
        raise KernelInputError(f"ssorl.{op}: expected context >= 1 steps. Got {context!r} instead.")
    bk = (batch, context)
    so = _checked(states_out, op, "states_out", torch.float32, 3, name, dev, (*bk, n_dim), "B,K,D")
    ao = _checked(
        actions_out, op, "actions_out", torch.float32, 3, name, dev, (*bk, n_act), "B,K,A"
    )
    ro = _checked(rtg_out, op, "rtg_out", torch.float32, 2, name, dev, bk, "batch, context")
    to = _checked(timesteps_out, op, "timesteps_out", torch.int64, 2, name, dev, bk, "B, K")
    mo = _checked(mask_out, op, "mask_out", torch.bool, 2, name, dev, bk, "batch, context")
    kernels = _kernels(name)
    arrays = _as_backend(name, obs, act, rtg, ss, ln, ei, st, mu, sd, so, ao, ro, to, mo)
    obs, act, rtg, ss, ln, ei, st, mu, sd, so, ao, ro, to, mo = arrays
    b, code = kernels.first_bad_subtrajectory_sample(n_rows, n_steps, ss, ln, ei, st)
    if b >= 0:
        host = _host(ss, ln, ei, st)
        _raise_subtrajectory_index_error(op, int(b), int(code), n_rows, n_steps, *host)
    kernels.subtrajectories(obs, act, rtg, ss, ln, ei, st, mu, sd, so, ao, ro, to, mo)


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
    name = _select(backend)
    if name == "cpp":
        try:
            torch.ops.ssorl.returns_to_go(rewards, step_start, lengths, gamma, out)
        except IndexError as exc:
            raise KernelIndexError(str(exc)) from None
        except ValueError as exc:
            raise KernelInputError(str(exc)) from None
        return
    op = "returns_to_go"
    r = _checked(rewards, op, "rewards", torch.float32, 1, name)
    n_steps = r.shape[0]
    ss, ln = _table(step_start, lengths, op, name, r.device)
    y = _checked(out, op, "out", torch.float32, 1, name, r.device, (n_steps,), "one per step")
    kernels = _kernels(name)
    r, ss, ln, y = _as_backend(name, r, ss, ln, y)
    e = int(kernels.first_bad_episode(n_steps, ss, ln))
    if e >= 0:
        s, t = (int(x[e]) for x in _host(ss, ln))
        raise KernelIndexError(
            f"ssorl.{op}: episode {e} spans global steps [{s}, {s + t}) but rewards has "
            f"{n_steps} steps. Pass the episode table of these rewards (lengths >= 1)."
        )
    kernels.returns_to_go(r, ss, ln, float(gamma), y)


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


# --------------------------------------------------------------------------- numba / torch side


def _kernels(backend: str) -> ModuleType:
    """The module of Python-side kernels for a backend (imported on first use)."""
    if backend == "numba":
        from ssorl_data.kernels import numba_ops

        return numba_ops
    from ssorl_data.kernels import torch_ops

    return torch_ops


def _checked(
    t: Tensor,
    op: str,
    arg: str,
    dtype: torch.dtype,
    ndim: int,
    backend: str,
    device: torch.device | None = None,
    shape: tuple[int, ...] | None = None,
    what: str = "",
) -> Tensor:
    """Check one argument as the C++ kernels do: dtype, rank, device, layout, shape."""
    if not isinstance(t, Tensor):
        raise KernelInputError(
            f"ssorl.{op}: expected {arg} to be a torch.Tensor. Got {type(t).__name__} instead."
        )
    if t.dtype != dtype:
        raise KernelInputError(
            f"ssorl.{op}: expected {arg} of dtype {dtype}. Got {t.dtype} instead."
        )
    if t.dim() != ndim:
        raise KernelInputError(
            f"ssorl.{op}: expected {arg} with {ndim} dimensions. Got shape {tuple(t.shape)} "
            "instead."
        )
    if backend == "numba" and t.device.type != "cpu":
        raise KernelInputError(
            f"ssorl.{op}: the numba backend runs on CPU tensors. Got {arg} on {t.device} instead; "
            "use backend='torch' or the cpp backend built with CUDA for GPU tensors."
        )
    if device is not None and t.device != device:
        raise KernelInputError(
            f"ssorl.{op}: expected {arg} on {device}, like observations. Got {t.device} instead; "
            "move all arguments to one device."
        )
    if not t.is_contiguous():
        raise KernelInputError(
            f"ssorl.{op}: expected {arg} to be contiguous. Got strides {t.stride()} instead; "
            "call .contiguous() first."
        )
    if shape is not None and tuple(t.shape) != shape:
        raise KernelInputError(
            f"ssorl.{op}: expected {arg} of shape {shape} ({what}). Got {tuple(t.shape)} instead."
        )
    return t


def _table(
    step_start: Tensor, lengths: Tensor, op: str, backend: str, device: torch.device
) -> tuple[Tensor, Tensor]:
    ss = _checked(step_start, op, "step_start", torch.int64, 1, backend, device)
    n_episodes = tuple(ss.shape)
    ln = _checked(
        lengths, op, "lengths", torch.int64, 1, backend, device, n_episodes, "per episode"
    )
    return ss, ln


def _as_backend(backend: str, *tensors: Tensor) -> tuple:
    """NumPy views (no copy) for numba; the tensors themselves for torch."""
    if backend == "numba":
        return tuple(t.detach().numpy() for t in tensors)
    return tensors


def _host(*arrays: Tensor | np.ndarray) -> tuple[np.ndarray, ...]:
    """Host NumPy copies of small index arrays, to word an error message."""
    return tuple(a if isinstance(a, np.ndarray) else a.detach().cpu().numpy() for a in arrays)


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
    e, g = int(ei[b]), int(si[b])
    if code == BAD_EPISODE:
        raise KernelIndexError(
            f"ssorl.{op}: sample {b} has episode_index {e}, outside [0, {ss.shape[0]}). "
            "Pass episode indices of this episode table."
        )
    s, t = int(ss[e]), int(ln[e])
    if code == BAD_STEP:
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
    e = int(ei[b])
    if code == BAD_EPISODE:
        raise KernelIndexError(
            f"ssorl.{op}: sample {b} has episode_index {e}, outside [0, {ss.shape[0]}). "
            "Pass episode indices of this episode table."
        )
    s, t = int(ss[e]), int(ln[e])
    if code == BAD_STEP:
        raise KernelIndexError(
            f"ssorl.{op}: sample {b} has start {int(st[b])}, outside its episode {e} (local "
            f"steps [0, {t})). Pass a local step index of that episode."
        )
    raise KernelIndexError(
        f"ssorl.{op}: sample {b} (episode {e}) spans global steps [{s}, {s + t}) but the step "
        f"arrays have {n_steps} rows and observations {n_rows}. The episode table does not "
        "match the arrays."
    )
