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
    """A JSON-ready description of this install's kernels (resolving the backend if needed)."""
    from ssorl_data import ops

    info = ops.backend_info()
    return {
        "ssorl": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "numba": numba.__version__,
        "torch_threads": torch.get_num_threads(),
        "backend": info.name,
        "backend_reason": info.reason,
        "backend_env": os.environ.get(backend.BACKEND_ENV) or None,
        "build_error": info.build_error,
        "library": info.library,
        "csrc": str(backend.csrc_dir()),
        "cache_dir": str(backend.cache_dir()),
        "cuda_built": info.cuda_built,
        "cuda_build_requested": backend.cuda_build_requested(),
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "nvcc": shutil.which("nvcc"),
    }
