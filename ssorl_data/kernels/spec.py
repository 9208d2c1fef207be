"""The contract of each ssorl op, written once as a table.

One `OpSpec` per op lists its arguments in the order of its schema (csrc/ops.cpp):
each tensor's dtypes, its dimensions named by size symbols shared with the other
arguments (`lengths` is ("E",) like `step_start`), whether the op writes it; each
scalar's type and lower bound. Observations are float32 or uint8 rows of any shape,
[R, *obs_shape]: their "D" is the product of obs_shape (the kernels read R rows of D
values; outputs are flattened, [B, k+2, D] and [B, K, D]). `check_args` reads that
table for the numba and torch backends, for the fake kernels (torch.compile,
opcheck) and to word an error the C++ kernels raised, so a bad call gets the same
message whichever backend runs it. `index_error` words a bad sample index the same way for every
backend. The C++ checks (csrc/op_args.h) stay to guard the C++ entry itself;
tests/ops/test_spec.py checks that this table matches the registered schemas.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ssorl_data.errors import KernelIndexError
from ssorl_data.kernels import BAD_EPISODE, BAD_STEP, BAD_TABLE

# What each size symbol counts, as messages say it.
SIZES: Mapping[str, str] = {
    "R": "observation rows, N + E",
    "D": "observation dim",
    "N": "one per step",
    "A": "action dim",
    "E": "one per episode",
    "B": "one per sample",
    "W": "k + 2 window rows",
    "K": "context",
}

# Called with a condition and a message thunk; raises unless the condition holds.
Require = Callable[[Any, Callable[[], str]], None]


@dataclass(frozen=True)
class TensorArg:
    """A tensor argument: dtypes, one size symbol per dimension, written by the op or not."""

    name: str
    dtypes: tuple[torch.dtype, ...]  # the dtypes accepted (usually one)
    dims: tuple[str, ...]
    written: bool = False  # an output buffer (`Tensor(a!)` in the schema)
    # The last symbol counts the product of its dimension and all later ones, so the
    # tensor may have more dimensions than symbols (observations [R, *obs_shape]).
    flattens: bool = False

    def sizes_of(self, shape: tuple[Any, ...]) -> tuple[Any, ...]:
        """The tensor's shape as its symbols see it: trailing dimensions multiplied if flattens."""
        if not self.flattens:
            return shape
        last = len(self.dims) - 1
        return (*shape[:last], math.prod(shape[last:]))


@dataclass(frozen=True)
class ScalarArg:
    """An int or float argument, with an optional lower bound and the size it sets."""

    name: str
    kind: type[int] | type[float]
    minimum: int | None = None
    unit: str = ""  # what the value counts, for the message of the bound
    sets: tuple[str, int] | None = None  # (symbol, offset): that size is value + offset


@dataclass(frozen=True)
class BadIndex:
    """A sample (or, for returns_to_go, an episode) whose indices leave the episode table."""

    sample: int | None
    episode: int
    step: int | None  # the sample's step argument: a global step or a local start
    start: int  # step_start of the episode (0 if the episode does not exist)
    length: int
    sizes: Mapping[str, int]

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass(frozen=True)
class OpSpec:
    """Arguments of one op, and how its sample indices are checked and worded."""

    name: str
    args: tuple[TensorArg | ScalarArg, ...]
    # Arguments of the backends' `first_bad_<name>`: size symbols and argument names.
    index_inputs: tuple[str, ...]
    # (episode argument, step argument) of a sample; None when the op checks episodes only.
    sample_args: tuple[str, str] | None
    index_messages: Mapping[int, Callable[[BadIndex], str]] = field(repr=False)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.args)

    def bind(self, args: Sequence[Any]) -> dict[str, Any]:
        """Argument name -> value of one call, positional in schema order."""
        return dict(zip(self.names, args, strict=True))


def _bad_episode(f: BadIndex) -> str:
    return (
        f"sample {f.sample} has episode_index {f.episode}, outside [0, {f.sizes['E']}). "
        "Pass episode indices of this episode table."
    )


F32, I64, BOOL = (torch.float32,), (torch.int64,), (torch.bool,)
# Observation rows the window kernels read: float32 features or uint8 (image frames).
OBSERVATION_DTYPES = (torch.float32, torch.uint8)
OBSERVATIONS = TensorArg("observations", OBSERVATION_DTYPES, ("R", "D"), flattens=True)

IDM_WINDOWS = OpSpec(
    name="idm_windows",
    args=(
        OBSERVATIONS,
        TensorArg("step_start", I64, ("E",)),
        TensorArg("lengths", I64, ("E",)),
        TensorArg("episode_index", I64, ("B",)),
        TensorArg("step_index", I64, ("B",)),
        TensorArg("mean", F32, ("D",)),
        TensorArg("std", F32, ("D",)),
        ScalarArg("k", int, minimum=0, unit="past states", sets=("W", 2)),
        TensorArg("out", F32, ("B", "W", "D"), written=True),
        TensorArg("valid", BOOL, ("B", "W"), written=True),
    ),
    index_inputs=("R", "step_start", "lengths", "episode_index", "step_index"),
    sample_args=("episode_index", "step_index"),
    index_messages={
        BAD_EPISODE: _bad_episode,
        BAD_STEP: lambda f: (
            f"sample {f.sample} has step_index {f.step}, outside its episode {f.episode} "
            f"(global steps [{f.start}, {f.end})). Pass the global step of a step of that "
            "episode."
        ),
        BAD_TABLE: lambda f: (
            f"sample {f.sample} (episode {f.episode}, step {f.step}) needs observation rows "
            f"[{f.start + f.episode}, {f.step + f.episode + 2}) but observations has "
            f"{f.sizes['R']} rows. The episode table does not match the observations "
            "(N + E rows)."
        ),
    },
)

SUBTRAJECTORIES = OpSpec(
    name="subtrajectories",
    args=(
        OBSERVATIONS,
        TensorArg("actions", F32, ("N", "A")),
        TensorArg("returns_to_go", F32, ("N",)),
        TensorArg("step_start", I64, ("E",)),
        TensorArg("lengths", I64, ("E",)),
        TensorArg("episode_index", I64, ("B",)),
        TensorArg("start", I64, ("B",)),
        TensorArg("mean", F32, ("D",)),
        TensorArg("std", F32, ("D",)),
        ScalarArg("context", int, minimum=1, unit="steps", sets=("K", 0)),
        TensorArg("states_out", F32, ("B", "K", "D"), written=True),
        TensorArg("actions_out", F32, ("B", "K", "A"), written=True),
        TensorArg("rtg_out", F32, ("B", "K"), written=True),
        TensorArg("timesteps_out", I64, ("B", "K"), written=True),
        TensorArg("mask_out", BOOL, ("B", "K"), written=True),
    ),
    index_inputs=("R", "N", "step_start", "lengths", "episode_index", "start"),
    sample_args=("episode_index", "start"),
    index_messages={
        BAD_EPISODE: _bad_episode,
        BAD_STEP: lambda f: (
            f"sample {f.sample} has start {f.step}, outside its episode {f.episode} (local "
            f"steps [0, {f.length})). Pass a local step index of that episode."
        ),
        BAD_TABLE: lambda f: (
            f"sample {f.sample} (episode {f.episode}) spans global steps [{f.start}, {f.end}) "
            f"but the step arrays have {f.sizes['N']} rows and observations {f.sizes['R']}. "
            "The episode table does not match the arrays."
        ),
    },
)

RETURNS_TO_GO = OpSpec(
    name="returns_to_go",
    args=(
        TensorArg("rewards", F32, ("N",)),
        TensorArg("step_start", I64, ("E",)),
        TensorArg("lengths", I64, ("E",)),
        ScalarArg("gamma", float),
        TensorArg("out", F32, ("N",), written=True),
    ),
    index_inputs=("N", "step_start", "lengths"),
    sample_args=None,
    index_messages={
        BAD_TABLE: lambda f: (
            f"episode {f.episode} spans global steps [{f.start}, {f.end}) but rewards has "
            f"{f.sizes['N']} steps. Pass the episode table of these rewards (lengths >= 1)."
        ),
    },
)

SPECS: Mapping[str, OpSpec] = {s.name: s for s in (IDM_WINDOWS, SUBTRAJECTORIES, RETURNS_TO_GO)}

# Types a scalar of each kind may have (SymInt/SymFloat while torch.compile traces).
_SCALAR_TYPES = {
    int: (numbers.Integral, torch.SymInt),
    float: (numbers.Real, torch.SymInt, torch.SymFloat),
}


def check_args(spec: OpSpec, args: Sequence[Any], backend: str, require: Require) -> dict[str, Any]:
    """Check a call's arguments against the table, in the order the C++ checks run.

    Returns the size of every symbol. `backend` adds its device rule (numba: CPU
    only); every backend wants all tensors on the device of the first one.
    """
    op = f"ssorl.{spec.name}"
    tensors = [(a, t) for a, t in zip(spec.args, args, strict=True) if isinstance(a, TensorArg)]
    first = tensors[0]
    for a, t in tensors:
        _check_tensor(op, a, t, first, backend, require)
    sizes: dict[str, Any] = {}
    for a, v in zip(spec.args, args, strict=True):
        if isinstance(a, ScalarArg):
            _check_scalar(op, a, v, require)
            if a.sets is not None:
                sizes[a.sets[0]] = v + a.sets[1]
    for a, t in tensors:
        _check_sizes(op, a, tuple(t.shape), sizes, require)
    return sizes


def _check_tensor(
    op: str, a: TensorArg, t: Any, first: tuple[TensorArg, Any], backend: str, require: Require
) -> None:
    """Type, dtype, rank, device and layout of one tensor argument."""
    require(
        isinstance(t, torch.Tensor),
        lambda: f"{op}: expected {a.name} to be a torch.Tensor. Got {type(t).__name__} instead.",
    )
    require(
        t.dtype in a.dtypes,
        lambda: (
            f"{op}: expected {a.name} of dtype {' or '.join(map(str, a.dtypes))}. Got "
            f"{t.dtype} instead."
        ),
    )
    require(
        t.dim() >= len(a.dims) if a.flattens else t.dim() == len(a.dims),
        lambda: (
            f"{op}: expected {a.name} with {'at least ' if a.flattens else ''}{len(a.dims)} "
            f"dimensions. Got shape {list(t.shape)} instead."
        ),
    )
    require(
        backend != "numba" or t.device.type == "cpu",
        lambda: (
            f"{op}: the numba backend runs on CPU tensors. Got {a.name} on {t.device} "
            "instead; use backend='torch' or the cpp backend built with CUDA for GPU tensors."
        ),
    )
    first_arg, first_tensor = first
    require(
        t.device == first_tensor.device,
        lambda: (
            f"{op}: expected {a.name} on {first_tensor.device}, like {first_arg.name}. Got "
            f"{t.device} instead; move all arguments to one device."
        ),
    )
    require(
        t.is_contiguous(),
        lambda: (
            f"{op}: expected {a.name} to be contiguous. Got strides {list(t.stride())} "
            "instead; call .contiguous() first."
        ),
    )


def _check_scalar(op: str, a: ScalarArg, v: Any, require: Require) -> None:
    """Type and lower bound of one scalar argument."""
    require(
        isinstance(v, _SCALAR_TYPES[a.kind]),
        lambda: (
            f"{op}: expected {a.name} to be a Python {a.kind.__name__}. Got "
            f"{type(v).__name__} instead."
        ),
    )
    if a.minimum is not None:
        require(
            v >= a.minimum,
            lambda: f"{op}: expected {a.name} >= {a.minimum} {a.unit}. Got {v!r} instead.",
        )


def _check_sizes(
    op: str, a: TensorArg, shape: tuple[Any, ...], sizes: dict[str, Any], require: Require
) -> None:
    """Each dimension against the size its symbol has, binding symbols seen the first time."""
    seen = a.sizes_of(shape)
    for d, symbol in enumerate(a.dims):
        n = sizes.setdefault(symbol, seen[d])
        # require() builds the message at once, inside this iteration: no late binding.
        require(
            seen[d] == n,
            lambda: (
                f"{op}: expected {a.name}.shape[{d}] == {n} ({SIZES[symbol]}). Got shape "  # noqa: B023
                f"{list(shape)} instead."
            ),
        )


def index_error(
    spec: OpSpec, where: int, code: int, sizes: Mapping[str, int], args: Mapping[str, Any]
) -> KernelIndexError:
    """The error for the bad sample (or episode) `where` that a `first_bad_*` check found.

    `args` maps argument names to tensors or arrays; only the few entries quoted are read.
    """
    if spec.sample_args is None:
        sample, episode, step = None, where, None
    else:
        episode_arg, step_arg = spec.sample_args
        sample, episode, step = where, int(args[episode_arg][where]), int(args[step_arg][where])
    known = 0 <= episode < sizes["E"]
    start = int(args["step_start"][episode]) if known else 0
    length = int(args["lengths"][episode]) if known else 0
    bad = BadIndex(sample, episode, step, start, length, sizes)
    return KernelIndexError(f"ssorl.{spec.name}: {spec.index_messages[code](bad)}")


def fake_kernel(spec: OpSpec) -> Callable[..., None]:
    """A fake (meta) kernel for torch.library.register_fake: the table's checks, no data."""

    def fake(*args: Any, **kwargs: Any) -> None:
        values = (*args, *(kwargs[n] for n in spec.names[len(args) :]))  # positional or named
        check_args(spec, values, "fake", torch._check_value)

    fake.__name__ = f"{spec.name}_fake"
    return fake
