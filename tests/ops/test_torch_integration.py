"""The C++ ops as torch custom ops: opcheck, torch.compile, CUDA builds."""

from __future__ import annotations

import os
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


@pytest.mark.parametrize("name", ["idm_windows", "subtrajectories"])
def test_opcheck_on_uint8_frames(cpp: None, name: str):
    """uint8 [R, 1, 3, 1] observations: the schema, fake kernel and C++ kernel agree."""
    args = sample_inputs("cpu", frames=True)[name]
    assert args[0].dtype == torch.uint8 and args[0].dim() == 4
    torch.library.opcheck(getattr(torch.ops.ssorl, name).default, args)


def test_torch_compile_traces_uint8_frames(cpp: None):
    args = sample_inputs("cpu", frames=True)["idm_windows"]
    out = args[8]

    @torch.compile(fullgraph=True, backend="aot_eager")
    def windows_sum(*a: torch.Tensor) -> torch.Tensor:
        ops.idm_windows(*a, backend="cpp")
        return out.sum(dim=2)

    compiled = windows_sum(*args).clone()
    ops.idm_windows(*args, backend="cpp")
    assert torch.equal(compiled, out.sum(dim=2))


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
@pytest.mark.parametrize("frames", [False, True], ids=["float32", "uint8-frames"])
@pytest.mark.parametrize("name", ["idm_windows", "subtrajectories", "returns_to_go"])
def test_cuda_matches_cpu(cpp: None, name: str, frames: bool):
    cpu_args = sample_inputs("cpu", frames)[name]
    cuda_args = sample_inputs("cuda", frames)[name]
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


def _launchers(obj: Path, which: str) -> set[str]:
    """Demangled ssorl::cuda launchers an object file defines or leaves undefined (`which`)."""
    listing = subprocess.run(
        ["nm", "-C", f"--{which}-only", str(obj)], capture_output=True, text=True, check=True
    )
    return {
        line[line.index("ssorl::cuda::") :]
        for line in listing.stdout.splitlines()
        if "ssorl::cuda::" in line and "_launch" in line
    }


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("nvcc") is None or shutil.which("nm") is None, reason="needs nvcc and nm"
)
def test_cuda_registration_calls_only_instantiated_launchers(tmp_path: Path):
    """register.cpp dispatches on the observation dtype; every launcher it calls (float and
    uint8 rows) must be instantiated in kernels.cu, or a CUDA build fails only at link time.

    A CPU build of torch lacks one generated CUDA header (cuda_cmake_macros.h); an empty
    stand-in is enough to compile register.cpp without linking it.
    """
    from torch.utils.cpp_extension import CUDA_HOME, include_paths

    src = kernel_backend.csrc_dir() / "cuda"
    stub = tmp_path / "stub" / "c10" / "cuda" / "impl"
    stub.mkdir(parents=True)
    (stub / "cuda_cmake_macros.h").write_text("#pragma once\n")
    kernels, register = tmp_path / "kernels.o", tmp_path / "register.o"
    subprocess.run(["nvcc", "-c", "-std=c++17", "--fmad=false", str(src / "kernels.cu"), "-o",
                    str(kernels)], check=True, capture_output=True)  # fmt: skip
    homes = (CUDA_HOME, os.environ.get("CUDA_PATH"), "/usr/local/cuda")
    found = [Path(h) / "include" for h in homes if h and (Path(h) / "include").is_dir()]
    if not found:
        pytest.skip("no CUDA toolkit headers (CUDA_HOME, CUDA_PATH, /usr/local/cuda)")
    cuda_include = found[0]
    includes = [f"-I{p}" for p in (*include_paths(), tmp_path / "stub", cuda_include)]
    result = subprocess.run(
        ["c++", "-c", "-std=c++17", "-fPIC", *includes, str(src / "register.cpp"), "-o",
         str(register)], capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    called, defined = _launchers(register, "undefined"), _launchers(kernels, "defined")
    assert any("unsigned char const*" in c for c in called)  # the uint8 dispatch is there
    assert called and called <= defined, called - defined
