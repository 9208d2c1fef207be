"""One table per op: it matches the C++ schemas, and every backend words a bad call alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from ssorl_data import ops
from ssorl_data.errors import KernelIndexError, KernelInputError
from ssorl_data.kernels.spec import SPECS, TensorArg, fake_kernel

from .conftest import BACKENDS, HAS_COMPILER, sample_inputs


def _schema_of(spec_arg: object) -> tuple[str, str, bool]:
    if isinstance(spec_arg, TensorArg):
        return spec_arg.name, "Tensor", spec_arg.written
    return spec_arg.name, spec_arg.kind.__name__, False


@pytest.mark.parametrize("name", sorted(SPECS))
def test_spec_matches_the_registered_schema(cpp: None, name: str):
    schema = getattr(torch.ops.ssorl, name).default._schema
    got = [
        (a.name, str(a.type), bool(a.alias_info and a.alias_info.is_write))
        for a in schema.arguments
    ]
    assert got == [_schema_of(a) for a in SPECS[name].args]


@dataclass(frozen=True)
class Bad:
    """One bad call: the op, how its valid sample inputs are spoiled, what must be raised."""

    op: str
    spoil: Callable[[list], None]
    error: type[Exception]
    words: tuple[str, ...]
    same_text: bool = True  # False where a backend adds its own device rule (numba: CPU only)
    cxx_checks: bool = True  # the C++ entry itself raises for it (not only the dispatcher)


def _set(position: int, value: object) -> Callable[[list], None]:
    def spoil(args: list) -> None:
        args[position] = value(args[position]) if callable(value) else value

    return spoil


def _long(*values: int) -> Callable[[object], torch.Tensor]:
    return lambda _: torch.tensor(values, dtype=torch.int64)


BAD_CALLS = {
    "idm-dtype": Bad("idm_windows", _set(0, lambda t: t.double()), KernelInputError,
                     ("observations of dtype torch.float32 or torch.uint8", "Got torch.float64")),
    "idm-dtype-int": Bad("idm_windows", _set(0, lambda t: t.to(torch.int16)), KernelInputError,
                         ("observations of dtype torch.float32 or torch.uint8",
                          "Got torch.int16")),
    "idm-obs-rank": Bad("idm_windows", _set(0, lambda t: t[:, 0]), KernelInputError,
                        ("observations with at least 2 dimensions", "[10]")),
    "idm-frames-mean": Bad("idm_windows", _set(0, torch.zeros(10, 2, 3, dtype=torch.uint8)),
                           KernelInputError, ("mean.shape[0] == 6", "observation dim")),
    "idm-frames-strides": Bad("idm_windows", _set(0, lambda t: torch.zeros(10, 3, 2).mT),
                              KernelInputError, ("observations to be contiguous",)),
    "idm-rank": Bad("idm_windows", _set(5, lambda t: t[None]), KernelInputError,
                    ("mean with 1 dimensions", "[1, 3]")),
    "idm-strides": Bad("idm_windows", _set(8, lambda t: t.transpose(0, 1)), KernelInputError,
                       ("out to be contiguous",)),
    "idm-lengths": Bad("idm_windows", _set(2, lambda t: t[:2]), KernelInputError,
                       ("lengths.shape[0] == 3",)),
    "idm-out": Bad("idm_windows", _set(8, torch.zeros(4, 4, 2)), KernelInputError,
                   ("out.shape[2] == 3", "observation dim")),
    "idm-valid": Bad("idm_windows", _set(9, lambda t: t.long()), KernelInputError,
                     ("valid of dtype torch.bool",)),
    "idm-k": Bad("idm_windows", _set(7, -1), KernelInputError, ("k >= 0",)),
    "idm-k-float": Bad("idm_windows", _set(7, 1.5), KernelInputError,
                       ("k to be a Python int", "float"), cxx_checks=False),
    "idm-numpy": Bad("idm_windows", _set(0, lambda t: t.numpy()), KernelInputError,
                     ("observations to be a torch.Tensor", "ndarray"), cxx_checks=False),
    "idm-device": Bad("idm_windows", _set(8, lambda t: t.to("meta")), KernelInputError,
                      ("out on ", "meta"), same_text=False, cxx_checks=False),
    "idm-episode": Bad("idm_windows", _set(3, _long(0, 1, 1, 3)), KernelIndexError,
                       ("sample 3 has episode_index 3, outside [0, 3)",)),
    "idm-step": Bad("idm_windows", _set(4, _long(0, 1, 5, 6)), KernelIndexError,
                    ("sample 2 has step_index 5, outside its episode 1",)),
    "idm-table": Bad("idm_windows", _set(0, lambda t: t[:-1]), KernelIndexError,
                     ("sample 3 (episode 2, step 6) needs observation rows [7, 10)",)),
    "sub-context": Bad("subtrajectories", _set(9, 0), KernelInputError, ("context >= 1",)),
    "sub-dtype": Bad("subtrajectories", _set(0, lambda t: t.long()), KernelInputError,
                     ("observations of dtype torch.float32 or torch.uint8", "Got torch.int64")),
    "sub-frames-mean": Bad("subtrajectories", _set(0, torch.zeros(10, 3, 2, dtype=torch.uint8)),
                           KernelInputError, ("mean.shape[0] == 6", "observation dim")),
    "sub-mask": Bad("subtrajectories", _set(14, lambda t: t.float()), KernelInputError,
                    ("mask_out of dtype torch.bool",)),
    "sub-rtg-out": Bad("subtrajectories", _set(12, torch.zeros(3, 2)), KernelInputError,
                       ("rtg_out", "context")),
    "sub-rtg": Bad("subtrajectories", _set(2, lambda t: t[:-1]), KernelInputError,
                   ("returns_to_go.shape[0] == 7",)),
    "sub-start": Bad("subtrajectories", _set(6, _long(0, 4, 1)), KernelIndexError,
                     ("sample 1 has start 4, outside its episode 1 (local steps [0, 4))",)),
    "sub-table": Bad("subtrajectories", _set(4, _long(1, 4, 3)), KernelIndexError,
                     ("sample 2 (episode 2) spans global steps [5, 8)",)),
    "rtg-out": Bad("returns_to_go", _set(4, torch.zeros(6)), KernelInputError,
                   ("out.shape[0] == 7",)),
    "rtg-gamma": Bad("returns_to_go", _set(3, "0.9"), KernelInputError,
                     ("gamma to be a Python float",), cxx_checks=False),
    "rtg-table": Bad("returns_to_go", _set(2, _long(1, 4, 3)), KernelIndexError,
                     ("episode 2 spans global steps [5, 8) but rewards has 7 steps",)),
}  # fmt: skip


def _bad_args(bad: Bad) -> list:
    args = sample_inputs("cpu")[bad.op]
    bad.spoil(args)
    return args


def _raised(bad: Bad, backend: str) -> Exception:
    with pytest.raises(bad.error) as caught:
        getattr(ops, bad.op)(*_bad_args(bad), backend=backend)
    return caught.value


def _available() -> list[str]:
    return [b for b in BACKENDS if b != "cpp" or HAS_COMPILER]


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_every_backend_rejects_a_bad_call_alike(case: str):
    bad = BAD_CALLS[case]
    messages = {b: str(_raised(bad, b)) for b in _available()}
    for backend, message in messages.items():
        assert message.startswith(f"ssorl.{bad.op}: "), (backend, message)
        for word in bad.words:
            assert word in message, (backend, message)
    if bad.same_text:
        assert len(set(messages.values())) == 1, messages


@pytest.mark.parametrize("case", sorted(c for c, b in BAD_CALLS.items() if b.cxx_checks))
def test_cxx_entry_guards_itself(cpp: None, case: str):
    """Called directly, the C++ op raises the plain built-in, naming the op and the argument."""
    bad = BAD_CALLS[case]
    builtin = IndexError if bad.error is KernelIndexError else ValueError
    with pytest.raises(builtin, match=f"^ssorl.{bad.op}: ") as caught:
        getattr(torch.ops.ssorl, bad.op)(*_bad_args(bad))
    assert not isinstance(caught.value, (KernelIndexError, KernelInputError))
    if builtin is IndexError:  # what a compiled graph raises: the CPU kernels word it alike
        assert str(caught.value) == str(_raised(bad, "numba"))


@pytest.mark.parametrize(
    "case", sorted(c for c, b in BAD_CALLS.items() if b.error is KernelInputError and b.same_text)
)
def test_fake_kernel_checks_the_same_table(case: str):
    """The fake kernels (torch.compile, opcheck) raise ValueError with the eager message."""
    bad = BAD_CALLS[case]
    want = str(_raised(bad, "torch"))
    with pytest.raises(ValueError) as caught:
        fake_kernel(SPECS[bad.op])(*_bad_args(bad))
    assert str(caught.value) == want


def test_fake_kernel_takes_named_arguments():
    args = sample_inputs("cpu")["returns_to_go"]
    fake_kernel(SPECS["returns_to_go"])(*args[:3], gamma=args[3], out=args[4])
    with pytest.raises(ValueError, match="out.shape"):
        fake_kernel(SPECS["returns_to_go"])(*args[:3], gamma=0.9, out=torch.zeros(2))


def _cpp_raising(monkeypatch: pytest.MonkeyPatch, name: str, exc: Exception) -> None:
    def op(*args: object) -> None:
        raise exc

    monkeypatch.setattr(torch.ops.ssorl, name, op)


@pytest.mark.parametrize(
    ("raised", "error", "text"),
    [
        (ValueError("ssorl.idm_windows: only C++ saw this"), KernelInputError, "only C++"),
        (IndexError("ssorl.idm_windows: only C++ saw this"), KernelIndexError, "only C++"),
        (
            NotImplementedError("Could not run 'ssorl::idm_windows' with arguments from the "
                                "'CUDA' backend."),
            KernelInputError,
            "built without cpu support. Got observations on cpu",
        ),
    ],
)  # fmt: skip
def test_cpp_errors_the_spec_cannot_word_keep_their_text(
    cpp: None, monkeypatch: pytest.MonkeyPatch, raised: Exception, error: type, text: str
):
    """A valid call the C++ side still refuses: the one mapping gives it the ssorl class."""
    _cpp_raising(monkeypatch, "idm_windows", raised)
    with pytest.raises(error, match=text):
        ops.idm_windows(*sample_inputs("cpu")["idm_windows"], backend="cpp")


def test_other_cpp_failures_pass_through(cpp: None, monkeypatch: pytest.MonkeyPatch):
    _cpp_raising(monkeypatch, "returns_to_go", RuntimeError("CUDA error: an illegal access"))
    with pytest.raises(RuntimeError, match="illegal access") as caught:
        ops.returns_to_go(*sample_inputs("cpu")["returns_to_go"], backend="cpp")
    assert not isinstance(caught.value, (KernelIndexError, KernelInputError))
