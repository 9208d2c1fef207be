"""Shared helpers of the benchmarks: where results go, machine description, timing."""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ssorl_data.durable import write_json

RESULTS = Path(__file__).resolve().parent / "results"
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def best_of_interleaved(repeats: int, runs: dict[str, Callable[[], Any]]) -> dict[str, float]:
    """Fastest wall time of each run over `repeats` rounds that take turns.

    Taking turns exposes every method to the same background load, so ratios
    measured in one run stay meaningful on a busy machine.
    """
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def write_results(name: str, payload: dict[str, Any], directory: Path = RESULTS) -> Path:
    """Write benchmarks/results/<name>.json (or `directory`/<name>.json) with the command
    and machine added."""
    directory.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python -m", f"benchmarks.{Path(sys.argv[0]).stem}", *sys.argv[1:]])
    payload = {"command": command, "machine": machine(), **payload}
    path = directory / f"{name}.json"
    write_json(path, payload)
    return path


def merge_rows(old: list[dict], new: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """`old` rows that `new` does not replace (same values at `keys`), then `new`: a rerun
    of a cell replaces its rows instead of adding a second copy."""
    replaced = {tuple(row[k] for k in keys) for row in new}
    return [row for row in old if tuple(row[k] for k in keys) not in replaced] + new
