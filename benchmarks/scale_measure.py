"""Run one stage job in its own process and measure it: wall time, peak RSS, peak RssAnon.

The job runs in benchmarks.scale_worker, started by the small benchmarks.scale_launch
(see there why). Peak RSS is the worker's `ru_maxrss`, exact; it counts file-backed
pages too, so a stage that reads memory-mapped data shows those pages, while peak
RssAnon (anonymous memory only, polled) is what the process itself allocated.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def measure(job: dict[str, Any], log_dir: Path) -> dict[str, Any]:
    """Run `job`; its figures, or its figures and {"error": ...} when it failed."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    launched = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale_launch", str(log_dir), json.dumps(job)],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": path},
    )  # fmt: skip
    if launched.returncode != 0:
        return {"error": f"launcher exit {launched.returncode}: {launched.stderr[-800:]}"}
    report = json.loads(launched.stdout.strip().splitlines()[-1])
    figures: dict[str, Any] = {
        "wall_seconds": report["wall_seconds"],
        "peak_rss_mb": report["maxrss_kib"] / 1024,
        "peak_anon_mb": report["anon_kb"] / 1024 if report["anon_kb"] else None,
    }
    out = (log_dir / "stdout.txt").read_text()
    result = next(
        (json.loads(line[7:]) for line in out.splitlines()[::-1] if line.startswith("RESULT ")),
        None,
    )
    code = report["returncode"] or (1 if result is None else result.get("exit_code", 0))
    if code != 0:
        lines = ((log_dir / "stderr.txt").read_text() + out).strip().splitlines()
        tail = [line for line in lines if not line.startswith("RESULT ")][-6:]
        return figures | {"error": f"exit {code}: " + " | ".join(tail)[-800:]}
    return figures | {k: v for k, v in result.items() if k != "exit_code"}
