"""Backend choice: the SSORL_BACKEND override, the numba fallback and `ssorl doctor`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ssorl_data.cli.doctor import doctor
from ssorl_data.errors import KernelBuildError, KernelBuildWarning
from ssorl_data.kernels import backend

REPO = Path(__file__).resolve().parents[2]


def _failing_build(with_cuda: bool) -> Path:
    raise OSError("g++: command not found")


def test_failed_build_falls_back_to_numba_with_one_warning(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(backend.BACKEND_ENV, raising=False)
    monkeypatch.setattr(backend, "build_cpp", _failing_build)
    with pytest.warns(KernelBuildWarning, match="g\\+\\+: command not found") as record:
        info = backend.resolve()
    assert len(record) == 1
    assert (info.name, info.build_error) == ("numba", "OSError: g++: command not found")


def test_forced_cpp_that_cannot_build_is_an_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(backend.BACKEND_ENV, "cpp")
    monkeypatch.setattr(backend, "build_cpp", _failing_build)
    with pytest.raises(KernelBuildError, match="SSORL_BACKEND=cpp"):
        backend.resolve()


@pytest.mark.parametrize("name", ["numba", "torch"])
def test_forced_python_backends_do_not_build(monkeypatch: pytest.MonkeyPatch, name: str):
    monkeypatch.setenv(backend.BACKEND_ENV, name)
    monkeypatch.setattr(backend, "build_cpp", _failing_build)
    info = backend.resolve()
    assert (info.name, info.origin, info.library) == (name, None, None)


def test_unknown_backend_name_is_rejected(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(backend.BACKEND_ENV, "cuda")
    with pytest.raises(ValueError, match="Expected SSORL_BACKEND to be one of"):
        backend.requested_backend()


def test_unknown_cuda_switch_is_rejected(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(backend.CUDA_ENV, "yes")
    with pytest.raises(ValueError, match="Expected SSORL_BUILD_CUDA to be 0, 1 or unset"):
        backend.cuda_build_requested()


def test_cuda_build_switch_is_explicit(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(backend.CUDA_ENV, "1")
    assert backend.cuda_build_requested()
    monkeypatch.setenv(backend.CUDA_ENV, "0")
    assert not backend.cuda_build_requested()


def test_sources_are_found_through_the_package():
    """Not through the repository: ssorl_data/_csrc is what wheels and sdists also carry."""
    import ssorl_data

    assert backend.csrc_dir() == Path(ssorl_data.__file__).parent / "_csrc"
    assert (backend.csrc_dir() / "ops.cpp").is_file()


def test_missing_sources_name_the_package_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr(backend, "csrc_dir", lambda: tmp_path)
    with pytest.raises(FileNotFoundError, match="lacks the package data ssorl_data/_csrc/"):
        backend.build_cpp(False)


def test_environment_override_reaches_a_fresh_process(tmp_path: Path):
    env = {**os.environ, backend.BACKEND_ENV: "numba", "PYTHONPATH": str(REPO)}
    code = "from ssorl_data import ops; print(ops.active_backend())"
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], env=env, cwd=tmp_path, capture_output=True,
        text=True, check=True,
    )  # fmt: skip
    assert result.stdout.strip() == "numba"


def test_doctor_reports_backend_as_json():
    result = CliRunner().invoke(doctor, ["--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["backend"] in backend.BACKENDS
    assert {"torch", "backend_reason", "cuda_built", "library"} <= set(report)
    assert report["origin"] == ("jit" if report["backend"] == "cpp" else None)
    assert report["sources"] == str(backend.csrc_dir()) and report["sources_found"] is True
    assert report["cache"] == str(backend.cache_dir())


def test_doctor_prints_a_table():
    result = CliRunner().invoke(doctor, [])
    assert result.exit_code == 0, result.output
    assert "backend_reason" in result.output


def test_missing_compiler_really_falls_back(tmp_path: Path):
    """A fresh cache and a compiler that does not exist: numba, and the warning says why."""
    env = {
        **os.environ, "CXX": str(tmp_path / "no-such-c++"), backend.CACHE_ENV: str(tmp_path),
        "PYTHONPATH": str(REPO),
    }  # fmt: skip
    env.pop(backend.BACKEND_ENV, None)
    code = (
        "import warnings; warnings.simplefilter('always')\n"
        "from ssorl_data import ops; print(ops.active_backend())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    assert result.stdout.strip() == "numba"
    assert result.stderr.count("KernelBuildWarning") == 1


def test_failed_cuda_build_keeps_the_cpu_kernels(monkeypatch: pytest.MonkeyPatch):
    def build(with_cuda: bool) -> Path:
        if with_cuda:
            raise RuntimeError("nvcc fatal: unsupported gpu architecture")
        return Path("/cache/ssorl_ops.so")

    monkeypatch.delenv(backend.BACKEND_ENV, raising=False)
    monkeypatch.setenv(backend.CUDA_ENV, "1")
    monkeypatch.setattr(backend, "build_cpp", build)
    with pytest.warns(KernelBuildWarning, match="CUDA kernels could not be built"):
        info = backend.resolve()
    assert (info.name, info.cuda_built) == ("cpp", False)


def test_a_build_lock_left_by_a_killed_builder_does_not_block_the_next_build(cpp) -> None:
    """torch's plain `lock` file outlives a SIGKILLed builder; the next build must not wait
    on it forever (the fault-injection suite hung there before builds took an flock)."""
    directory = backend.build_cpp(False).parent
    (directory / "lock").touch()  # what a builder killed mid-build leaves behind
    code = "from ssorl_data.kernels import backend; print(backend.resolve().name)"
    env = {**os.environ, backend.BACKEND_ENV: "cpp"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, cwd=REPO, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "cpp" and not (directory / "lock").exists()
