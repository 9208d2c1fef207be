"""Choice and build of the kernel backend.

The C++ ops in `csrc/` are compiled on first use with
`torch.utils.cpp_extension.load` into a cache directory and loaded as the
`torch.ops.ssorl` library. The sources travel inside the package as
`ssorl_data/_csrc/` (a symlink to `csrc/` in the repository, real files in a wheel
or sdist) and are found through the package, so `pip install .`, wheels, sdists and
editable installs all build the same kernels (just in time, against the torch that
is installed, never an ahead-of-time build tied to one torch ABI). When the build
fails (no compiler, no headers) ssorl falls back to the numba kernels with one
`KernelBuildWarning`. The environment variable `SSORL_BACKEND=cpp|numba|torch`
forces a backend; a forced `cpp` that cannot be built is an error, not a fallback.

CUDA sources are compiled only when asked for by the explicit switch
`SSORL_BUILD_CUDA=1` (or, when unset, when torch itself was built with CUDA and
a CUDA toolkit is found); never from `torch.cuda.is_available()`, so a build
host without a GPU still builds what the GPU host will run.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ssorl_data.errors import KernelBuildError, KernelBuildWarning

BACKENDS: tuple[str, ...] = ("cpp", "numba", "torch")
BACKEND_ENV = "SSORL_BACKEND"
CUDA_ENV = "SSORL_BUILD_CUDA"
CACHE_ENV = "SSORL_CACHE"

_CPU_SOURCES = (
    "ops.cpp",
    "cpu/idm_windows.cpp",
    "cpu/subtrajectories.cpp",
    "cpu/returns_to_go.cpp",
)
_CUDA_SOURCES = ("cuda/kernels.cu", "cuda/register.cpp")
SOURCES_DIR = "_csrc"  # inside the ssorl_data package; pyproject.toml ships it as package data
# No -ffast-math and no FMA contraction: every backend must round identically.
_CFLAGS = ["-O3", "-fopenmp", "-ffp-contract=off"]
_CUDA_CFLAGS = ["-O3", "--fmad=false"]


@dataclass(frozen=True)
class BackendInfo:
    """Which backend runs the ops, and why."""

    name: str  # "cpp", "numba" or "torch"
    origin: str | None  # "jit": the C++ library was built (or reused) from the sources; else None
    reason: str  # one sentence a user can act on
    cuda_built: bool  # the CUDA kernels were compiled into the C++ library
    library: str | None  # path of the loaded C++ library, if any
    build_error: str | None  # why the C++ build failed, if it was tried and failed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def requested_backend() -> str | None:
    """The backend forced by SSORL_BACKEND, or None when unset."""
    value = os.environ.get(BACKEND_ENV, "").strip().lower()
    if not value:
        return None
    if value not in BACKENDS:
        raise ValueError(
            f"Expected {BACKEND_ENV} to be one of {BACKENDS!r} or unset. Got {value!r} instead."
        )
    return value


def csrc_dir() -> Path:
    """The C++ sources, found through the installed package: `ssorl_data/_csrc/`."""
    return Path(str(resources.files("ssorl_data") / SOURCES_DIR))


def cache_dir() -> Path:
    """Where compiled extensions are kept: $SSORL_CACHE or ~/.cache/ssorl, then torch_extensions."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ssorl"
    return Path(root) / "torch_extensions"


def cuda_build_requested() -> bool:
    """The explicit CUDA build switch SSORL_BUILD_CUDA=1/0; unset: torch and a toolkit have CUDA."""
    value = os.environ.get(CUDA_ENV, "").strip()
    if value in ("0", "1"):
        return value == "1"
    if value:
        raise ValueError(f"Expected {CUDA_ENV} to be 0, 1 or unset. Got {value!r} instead.")
    from torch.utils.cpp_extension import CUDA_HOME

    return torch.version.cuda is not None and CUDA_HOME is not None


def build_cpp(with_cuda: bool) -> Path:
    """Compile (or reuse the cached build of) the C++ ops and load them into torch.ops.ssorl."""
    from torch.utils.cpp_extension import load

    src = csrc_dir()
    if not (src / "ops.cpp").is_file():
        raise FileNotFoundError(
            f"Expected the C++ sources at {src}. Got no ops.cpp there: this install lacks the "
            f"package data ssorl_data/{SOURCES_DIR}/; reinstall ssorl (pip install .) or set "
            f"{BACKEND_ENV}=numba."
        )
    names = _CPU_SOURCES + (_CUDA_SOURCES if with_cuda else ())
    name = "ssorl_ops_cuda" if with_cuda else "ssorl_ops"
    # One build directory per source tree: checkouts sharing the cache would
    # otherwise rebuild each other's objects on every switch.
    tree = hashlib.sha1(str(src).encode()).hexdigest()[:10]
    build_directory = cache_dir() / f"torch{torch.__version__}" / f"{name}-{tree}"
    build_directory.mkdir(parents=True, exist_ok=True)
    with _build_lock(build_directory), warnings.catch_warnings():
        # torch's build helper warns about compiler/ABI details; they are not ours to fix.
        warnings.simplefilter("ignore")
        load(
            name=name,
            sources=[str(src / s) for s in names],
            extra_cflags=_CFLAGS,
            extra_cuda_cflags=_CUDA_CFLAGS,
            extra_ldflags=["-fopenmp"],
            build_directory=str(build_directory),
            with_cuda=with_cuda,
            is_python_module=False,
            verbose=False,
        )
    libraries = sorted(build_directory.glob(f"{name}*.so"), key=lambda p: p.stat().st_mtime)
    return libraries[-1] if libraries else build_directory


@contextlib.contextmanager
def _build_lock(directory: Path) -> Iterator[None]:
    """One build at a time per directory, under an flock that dies with its process.

    torch's own build lock is a plain file (`lock`) that outlives a builder killed by
    SIGKILL, after which every later process waits on it forever; every ssorl build takes
    this flock first, so a `lock` file found while holding it is such a leftover.
    """
    with open(directory / "ssorl-build.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        (directory / "lock").unlink(missing_ok=True)
        yield


def _build_with_cpu_retry(with_cuda: bool) -> Path:
    """Build with CUDA if asked; if only that fails, warn once and build the CPU kernels alone."""
    if not with_cuda:
        return build_cpp(False)
    try:
        return build_cpp(True)
    except Exception as exc:
        library = build_cpp(False)  # if this fails too, the caller falls back to numba
        warnings.warn(
            f"ssorl: the CUDA kernels could not be built ({type(exc).__name__}); the C++ CPU "
            f"kernels are used. Set {CUDA_ENV}=0 to skip the CUDA build without this warning.",
            KernelBuildWarning,
            stacklevel=4,
        )
        return library


def resolve() -> BackendInfo:
    """Pick the backend once per process: forced by SSORL_BACKEND, else cpp, else numba."""
    forced = requested_backend()
    if forced in ("numba", "torch"):
        return BackendInfo(forced, None, f"{BACKEND_ENV}={forced} forces it", False, None, None)
    with_cuda = cuda_build_requested()
    try:
        library = _build_with_cpu_retry(with_cuda)
        with_cuda = with_cuda and library.name.startswith("ssorl_ops_cuda")
    except Exception as exc:  # any build or load failure means: no C++ backend here
        error = f"{type(exc).__name__}: {exc}".strip()
        if forced == "cpp":
            raise KernelBuildError(
                f"{BACKEND_ENV}=cpp, but the C++ kernels in {csrc_dir()} could not be built "
                f"({error.splitlines()[0]}). Install a C++ compiler (g++) and ninja, or unset "
                f"{BACKEND_ENV} to fall back to numba."
            ) from exc
        warnings.warn(
            f"ssorl: the C++ kernels could not be built ({error.splitlines()[0]}); using the "
            f"numba kernels instead. Set {BACKEND_ENV}=numba to choose them without this warning.",
            KernelBuildWarning,
            stacklevel=3,
        )
        return BackendInfo(
            "numba", None, "the C++ build failed; numba is the fallback", False, None, error
        )
    reason = f"{BACKEND_ENV}=cpp forces it" if forced else "the C++ kernels built (the default)"
    return BackendInfo("cpp", "jit", reason, with_cuda, str(library), None)
