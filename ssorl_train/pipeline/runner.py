"""The stage runner: stamps, skipping up-to-date stages, and keeping what a stage resumes.

A stage's stamp `stamps/<stage>.json` holds a hash of its config section and of
the tokens of the stages it reads. A stage whose stamp matches (and whose outputs
exist) is skipped; any other runs again. A token names one run of a stage, so the
stages after a rerun stage rerun too.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssorl_data.durable import write_json


@dataclass
class StageReport:
    name: str
    status: str  # "ran" or "skipped"
    seconds: float
    result: dict[str, Any]


def stage_hash(*parts: Any) -> str:
    """A short hash of JSON-able parts (config sections, upstream tokens)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Stamps:
    """Stamps under `out/stamps`: a stage is up to date when its stamp holds the same hash."""

    def __init__(self, out: Path) -> None:
        self.dir = out / "stamps"
        self.dir.mkdir(parents=True, exist_ok=True)

    def read(self, stage: str) -> dict[str, Any] | None:
        """The stamp of `stage`; None when absent, unreadable or not a stamp (an edited or
        damaged file), so that the stage runs again."""
        try:
            stamp = json.loads((self.dir / f"{stage}.json").read_text())
        except (OSError, ValueError):
            return None
        if not (isinstance(stamp, dict) and {"hash", "ran_at", "result"} <= stamp.keys()):
            return None
        return stamp if isinstance(stamp["result"], dict) else None

    def write(self, stage: str, key: str, result: dict[str, Any]) -> int:
        """Stamp a finished stage; `ran_at` makes the stages after it rerun when it reruns."""
        ran_at = time.time_ns()
        stamp = {"hash": key, "ran_at": ran_at, "result": result}
        # atomic: a killed run never leaves a stamp without its output
        write_json(self.dir / f"{stage}.json", stamp)
        return ran_at

    def clear(self, stage: str) -> None:
        (self.dir / f"{stage}.json").unlink(missing_ok=True)


class StageRunner:
    """Runs or skips the stages of one run directory and records what each did."""

    def __init__(self, out: Path, echo: Callable[[str], None]) -> None:
        self.stamps = Stamps(out)
        self.reports: list[StageReport] = []
        self.echo = echo

    def stage(
        self,
        name: str,
        key: str,
        outputs: list[Path],
        work: Callable[[], dict[str, Any]],
        keep_outputs: bool = False,
    ) -> str:
        """Run `work` unless the stamp matches `key`; returns a token that changes per run.

        Outputs are removed before `work` runs, unless `keep_outputs`: then the work
        resumes or replaces them itself.
        """
        stamp = self.stamps.read(name)
        if stamp and stamp["hash"] == key and all(p.exists() for p in outputs):
            self.reports.append(StageReport(name, "skipped", 0.0, stamp["result"]))
            self.echo(f"[{name}] skipped (up to date)")
            return f"{key}@{stamp['ran_at']}"
        self.stamps.clear(name)
        if not keep_outputs:
            for path in outputs:
                _remove(path)
        self.echo(f"[{name}] running")
        tick = time.perf_counter()
        result = work()
        ran_at = self.stamps.write(name, key, result)
        self.reports.append(StageReport(name, "ran", time.perf_counter() - tick, result))
        return f"{key}@{ran_at}"

    def result(self, name: str) -> dict[str, Any]:
        """What the last run of stage `name` returned (from its stamp)."""
        stamp = self.stamps.read(name)
        assert stamp is not None, f"stage {name!r} has not run"  # only called after stage()
        return stamp["result"]

    def keep_if_started_with(self, name: str, key: str, run_dir: Path) -> None:
        """Keep a resumable stage's directory only while it was started with this key, so a
        changed config starts it afresh and an unchanged one continues where it stopped."""
        started = self.stamps.dir / f"{name}.started"
        if run_dir.exists() and (not started.exists() or started.read_text() != key):
            shutil.rmtree(run_dir)
            self.stamps.clear(name)
        started.write_text(key)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
