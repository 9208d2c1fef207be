"""The C++ ops as torch custom ops: opcheck, torch.compile, CUDA builds."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from ssorl_data import ops
from ssorl_data.kernels import backend as kernel_backend

from .conftest import sample_inputs


@pytest.mark.parametrize("name", ["idm_windows", "subtrajectories", "returns_to_go"])
def test_opcheck(cpp: None, name: str):
    op = getattr(torch.ops.ssorl, name).default
    torch.library.opcheck(op, sample_inputs("cpu")[name])


def _compiled_windows_match_eager(compiler: str) -> None:
    args = sample_inputs("cpu")["idm_windows"]
    out, valid = args[8], args[9]

    @torch.compile(fullgraph=True, backend=compiler)
    def windows_sum(*a: torch.Tensor) -> torch.Tensor:
        ops.idm_windows(*a, backend="cpp")
        return out.sum(dim=2)

    compiled = windows_sum(*args).clone()
    ops.idm_windows(*args, backend="cpp")
    assert torch.equal(compiled, out.sum(dim=2))
    assert valid[0].tolist() == [False, False, True, True]


def test_torch_compile_fullgraph_traces_the_op(cpp: None):
    """Dynamo + AOT autograd with the fake kernel, without inductor's slow C++ codegen."""
    _compiled_windows_match_eager("aot_eager")


def test_compiled_graph_words_bad_calls_as_eager(cpp: None):
    """Bad shapes stop tracing with the fake kernel's message; bad indices raise IndexError."""

    @torch.compile(fullgraph=True, backend="aot_eager")
    def windows(*a: torch.Tensor) -> None:
        ops.idm_windows(*a, backend="cpp")

    args = sample_inputs("cpu")["idm_windows"]
    args[8] = torch.zeros(4, 4, 2)
    with pytest.raises(RuntimeError, match=re.escape("expected out.shape[2] == 3")):
        windows(*args)
    args = sample_inputs("cpu")["idm_windows"]
    args[3] = torch.tensor([0, 1, 1, 3])
    with pytest.raises(IndexError, match=re.escape("sample 3 has episode_index 3, outside")):
        windows(*args)


@pytest.mark.slow
# Inductor itself touches a deprecated torch.jit API while compiling; not ours to fix.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_torch_compile_fullgraph_inductor(cpp: None):
    """The default inductor backend (about 30 s on 2 cores, hence slow)."""
    _compiled_windows_match_eager("inductor")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["idm_windows", "subtrajectories", "returns_to_go"])
def test_cuda_matches_cpu(cpp: None, name: str):
    cpu_args, cuda_args = sample_inputs("cpu")[name], sample_inputs("cuda")[name]
    getattr(ops, name)(*cpu_args, backend="cpp")
    getattr(ops, name)(*cuda_args, backend="cpp")
    for a, b in zip(cpu_args, cuda_args, strict=True):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b.cpu())


def _cuda_sources() -> list[Path]:
    return sorted((kernel_backend.csrc_dir() / "cuda").glob("*.cu"))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("source", _cuda_sources(), ids=lambda p: p.name)
def test_cuda_sources_compile_with_nvcc(source: Path, tmp_path: Path):
    result = subprocess.run(
        ["nvcc", "-c", "-std=c++17", "--fmad=false", str(source), "-o", str(tmp_path / "k.o")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "k.o").stat().st_size > 0


def test_cuda_sources_exist():
    assert [p.name for p in _cuda_sources()] == ["kernels.cu"]
