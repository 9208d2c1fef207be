"""Typed wrappers of the ssorl kernels; the only module that calls torch.ops.ssorl.

Every op fills caller-owned output tensors and returns None, so training loops
reuse their batch buffers. The window ops read observations [R, *obs_shape] of
float32 or uint8 (image frames stay uint8: never converted whole) and write float32
`(float(x) - mean) / std` with per-dimension mean/std [D], D = prod(obs_shape); their
outputs are flattened to [B, k+2, D] / [B, K, D]. Every backend reads N-d rows as
[R, D] without a copy (C++: the contiguous memory itself; numba/torch: a view).
Indices follow the store's arithmetic (DESIGN.md "The store"): global step g of
episode e has observation row g + e and next observation row g + e + 1.

The backend (`cpp`, `numba` or `torch`) is chosen once per process on first
use: the C++ library is built and loaded if possible, else numba with one
`KernelBuildWarning`; `SSORL_BACKEND=cpp|numba|torch` forces one (`torch` is
pure vectorised torch: no build, any device, slower on CPU). `backend_info()`
says which and why. Each wrapper also takes `backend=` to run a specific one
(tests and benchmarks compare them).

Each op's arguments are one table in ssorl_data.kernels.spec, which checks the
calls of the numba and torch backends, drives the fake kernels and words any
error the C++ kernels raise (`_run_cpp`, the one place that maps them), so a bad
call gets the same message on every backend. Bad indices raise
`KernelIndexError` (an IndexError) naming the sample and its values; bad dtypes,
shapes, devices or layouts raise `KernelInputError` (a ValueError). Inside a
torch.compile'd graph a bad argument stops tracing (torch's error quotes the
fake kernel's ValueError, same message) and a bad index raises the C++ kernel's
plain IndexError (same message on CPU), so catch the built-ins. Nothing is ever
read out of bounds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from ssorl_data.errors import KernelBuildError, KernelIndexError, KernelInputError
from ssorl_data.kernels import backend as _backend
from ssorl_data.kernels import spec as _spec
from ssorl_data.kernels.backend import BackendInfo
from ssorl_data.kernels.spec import IDM_WINDOWS, RETURNS_TO_GO, SUBTRAJECTORIES, OpSpec

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
    """Fill out [B, k+2, D] with normalised s_{t-k}..s_t, s_{t+1}; valid is False where clamped.

    `observations` [R, *obs_shape] float32 or uint8; D = prod(obs_shape) (windows of
    frames are flattened: view them as [B, k+2, *obs_shape] where a network wants that).
    """
    args = (observations, step_start, lengths, episode_index, step_index, mean, std, k, out, valid)
    _run(IDM_WINDOWS, args, backend)


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
    """Fill left-padded K-step windows from local step `start`: real steps last, pad rows zero.

    `observations` [R, *obs_shape] float32 or uint8; states_out is [B, K, D] float32 with
    D = prod(obs_shape), normalised like idm_windows.
    """
    args = (
        observations, actions, returns_to_go, step_start, lengths, episode_index, start, mean,
        std, context, states_out, actions_out, rtg_out, timesteps_out, mask_out,
    )  # fmt: skip
    _run(SUBTRAJECTORIES, args, backend)


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
    _run(RETURNS_TO_GO, (rewards, step_start, lengths, gamma, out), backend)


# --------------------------------------------------------------------------- running an op


def _run(spec: OpSpec, args: Sequence[Any], backend: str | None) -> None:
    """Check the arguments against the spec, then the sample indices, then run the kernel."""
    name = _select(backend)
    if name == "cpp":
        _run_cpp(spec, args)
        return
    sizes = _spec.check_args(spec, args, name, _require)
    kernels = _kernels(name)
    arrays = _as_backend(name, spec, args, sizes)
    named = spec.bind(arrays)
    where, code = _first_bad(spec, kernels, sizes, named)
    if where >= 0:
        raise _spec.index_error(spec, where, code, sizes, named)
    getattr(kernels, spec.name)(*arrays)


def _run_cpp(spec: OpSpec, args: Sequence[Any]) -> None:
    """Call torch.ops.ssorl; map what it raises to the error every backend raises for that call."""
    try:
        getattr(torch.ops.ssorl, spec.name)(*args)
        return
    except (IndexError, ValueError, TypeError, RuntimeError) as exc:
        error = _cpp_error(spec, args, exc)
    raise error from None


def _cpp_error(spec: OpSpec, args: Sequence[Any], exc: Exception) -> Exception:
    """The spec's wording of the bad argument or index behind a C++ error, else the C++ text.

    Runs only after a failure, so the fast path pays nothing for the common wording.
    """
    try:
        sizes = _spec.check_args(spec, args, "cpp", _require)
    except KernelInputError as bad_argument:
        return bad_argument
    if isinstance(exc, NotImplementedError):  # the dispatcher has no kernel for this device
        first = args[0]
        return KernelInputError(
            f"ssorl.{spec.name}: the C++ kernels were built without {first.device.type} "
            f"support. Got {spec.names[0]} on {first.device} instead; build them with "
            "SSORL_BUILD_CUDA=1 or use backend='torch'."
        )
    if isinstance(exc, IndexError):
        from ssorl_data.kernels import torch_ops  # the checks run on any device

        named = spec.bind(args)
        where, code = _first_bad(spec, torch_ops, sizes, named)
        if where >= 0:
            return _spec.index_error(spec, where, code, sizes, named)
        return KernelIndexError(str(exc))
    if isinstance(exc, ValueError):
        return KernelInputError(str(exc))
    return exc


def _require(ok: bool, message: Callable[[], str]) -> None:
    if not ok:
        raise KernelInputError(message())


def _first_bad(
    spec: OpSpec, kernels: ModuleType, sizes: dict[str, Any], named: dict[str, Any]
) -> tuple[int, int]:
    """(sample or episode, code) from the backend's `first_bad_<op>`, fed as the spec says."""
    inputs = [sizes[n] if n in sizes else named[n] for n in spec.index_inputs]
    where, code = getattr(kernels, f"first_bad_{spec.name}")(*inputs)
    return int(where), int(code)


def _kernels(backend: str) -> ModuleType:
    """The module of Python-side kernels for a backend (imported on first use)."""
    if backend == "numba":
        from ssorl_data.kernels import numba_ops

        return numba_ops
    from ssorl_data.kernels import torch_ops

    return torch_ops


def _as_backend(
    backend: str, spec: OpSpec, args: Sequence[Any], sizes: dict[str, Any]
) -> tuple[Any, ...]:
    """Scalars as their spec's kind; tensors as the kernels' shapes, as NumPy for numba.

    No copy: observations [R, *obs_shape] (checked contiguous) become a [R, D] view, and
    numba gets NumPy views of the tensors' memory.
    """

    def tensor(a: _spec.TensorArg, v: Tensor) -> Any:
        if a.flattens and v.dim() > len(a.dims):
            v = v.view(*v.shape[: len(a.dims) - 1], sizes[a.dims[-1]])
        return v.detach().numpy() if backend == "numba" else v

    return tuple(
        a.kind(v) if isinstance(a, _spec.ScalarArg) else tensor(a, v)
        for a, v in zip(spec.args, args, strict=True)
    )


# --------------------------------------------------------------------------- fake kernels


def _register_fakes() -> None:
    """Register the spec's fake kernels once the C++ schemas exist (torch.compile, opcheck)."""
    global _CPP_LOADED
    if _CPP_LOADED:
        return
    for spec in _spec.SPECS.values():
        torch.library.register_fake(f"ssorl::{spec.name}")(_spec.fake_kernel(spec))
    _CPP_LOADED = True
