"""The package as users install it: an sdist and a wheel carry the C++ sources, found there.

Builds with setuptools' PEP 517 hooks in this venv (no index, no isolated env), on a
copy of the working tree so that no build output lands in the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from ssorl_data.kernels import backend
from ssorl_train.pipeline.config import tomllib

REPO = Path(__file__).resolve().parents[1]
CSRC = REPO / "csrc"
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", ".ci-venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
    ".hypothesis", "runs", "scratch", "ssorl-quickstart", "*.so",
)  # fmt: skip


def _cpp_sources() -> set[str]:
    return {p.relative_to(CSRC).as_posix() for p in CSRC.rglob("*") if p.is_file()}


def _build(hook: str, tree: Path, out: Path) -> Path:
    out.mkdir(exist_ok=True)
    code = f"from setuptools import build_meta; print(build_meta.{hook}({str(out)!r}))"
    result = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return out / result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """An sdist of the working tree, and a wheel built from that sdist (as pip does)."""
    root = tmp_path_factory.mktemp("pkg")
    tree = root / "tree"
    shutil.copytree(REPO, tree, symlinks=True, ignore=NOT_SOURCE)
    sdist = _build("build_sdist", tree, root / "dist")
    with tarfile.open(sdist) as archive:
        archive.extractall(root / "unpacked", filter="data")
    (unpacked,) = (root / "unpacked").iterdir()
    wheel = _build("build_wheel", unpacked, root / "wheels")
    site = root / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return {"sdist": sdist, "wheel": wheel, "site": site}


def test_build_env_does_not_need_torch():
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    assert requires and not [r for r in requires if r.lower().startswith("torch")]


def test_the_checkout_sees_the_sources_through_the_package():
    """ssorl_data/_csrc (a symlink in the repository) is csrc/ itself: one copy of the code."""
    assert backend.csrc_dir() == REPO / "ssorl_data" / backend.SOURCES_DIR
    assert backend.csrc_dir().resolve() == CSRC.resolve()


def test_sdist_and_wheel_carry_every_cpp_source(built):
    expected = _cpp_sources()
    assert {"ops.cpp", "op_args.h", "cpu/idm_windows.cpp", "cuda/kernels.cu"} <= expected
    with tarfile.open(built["sdist"]) as archive:
        members = {m.name.split("/", 1)[1]: m for m in archive.getmembers() if "/" in m.name}
    for name in expected:
        for where in (f"csrc/{name}", f"ssorl_data/_csrc/{name}"):
            assert where in members and members[where].isfile(), where
    with zipfile.ZipFile(built["wheel"]) as archive:
        shipped = {
            n.removeprefix("ssorl_data/_csrc/")
            for n in archive.namelist()
            if n.startswith("ssorl_data/_csrc/")
        }
    assert shipped == expected
    for name in expected:
        assert (built["site"] / "ssorl_data/_csrc" / name).read_bytes() == (
            CSRC / name
        ).read_bytes()


def _in_wheel(site: Path, code: str, **env: str) -> subprocess.CompletedProcess:
    """Run `code` with the unpacked wheel first on the path (deps from this venv)."""
    full_env = {**os.environ, "PYTHONPATH": str(site), **env}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=site.parent, env=full_env, capture_output=True,
        text=True,
    )  # fmt: skip


REPORT = (
    "import json, ssorl_data; from ssorl_data.kernels.diagnostics import environment_report; "
    "print(json.dumps({'package': ssorl_data.__file__, **environment_report()}))"
)


def test_installed_wheel_finds_its_own_sources(built):
    site = built["site"].resolve()
    result = _in_wheel(built["site"], REPORT, SSORL_BACKEND="numba")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert Path(report["package"]).resolve().is_relative_to(site)
    sources = Path(report["sources"])
    assert sources.resolve().is_relative_to(site) and not sources.is_symlink()
    assert report["sources_found"] is True
    assert (report["backend"], report["origin"]) == ("numba", None)


@pytest.mark.slow
def test_installed_wheel_builds_the_cpp_backend(built, tmp_path):
    """A cold cache: the C++ library is compiled from the wheel's sources (about a minute)."""
    result = _in_wheel(built["site"], REPORT, SSORL_BACKEND="cpp", SSORL_CACHE=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert (report["backend"], report["origin"]) == ("cpp", "jit")
    assert Path(report["library"]).resolve().is_relative_to(tmp_path.resolve())
    assert Path(report["sources"]).resolve().is_relative_to(built["site"].resolve())
