"""What `ssorl doctor` reports: versions, the active kernel backend and why, the CUDA build."""

from __future__ import annotations

import os
import platform
import shutil
from typing import Any

import numba
import numpy as np
import torch

from ssorl_data import __version__
from ssorl_data.kernels import backend


def environment_report() -> dict[str, Any]:
    """A JSON-ready description of this install's kernels (resolving the backend if needed).

    `origin` says where the active C++ library came from ("jit": built on first use from
    `sources` into `cache`, or reused from there; None when a Python backend runs) and
    `sources_found` whether the package carries its C++ sources at all.
    """
    from ssorl_data import ops

    info = ops.backend_info()
    sources = backend.csrc_dir()
    return {
        "ssorl": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "numba": numba.__version__,
        "torch_threads": torch.get_num_threads(),
        "backend": info.name,
        "origin": info.origin,
        "backend_reason": info.reason,
        "backend_env": os.environ.get(backend.BACKEND_ENV) or None,
        "build_error": info.build_error,
        "library": info.library,
        "sources": str(sources),
        "sources_found": (sources / "ops.cpp").is_file(),
        "cache": str(backend.cache_dir()),
        "cuda_built": info.cuda_built,
        "cuda_build_requested": backend.cuda_build_requested(),
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "nvcc": shutil.which("nvcc"),
    }
