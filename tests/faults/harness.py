"""The kill harness: run an `ssorl` command in its own process, SIGKILL it after a seeded
random delay (drawn over its measured uninterrupted duration) or at an injected point, then
run the same command again; the tests compare what is left with an uninterrupted run.

`tally` counts the kill points and corruptions tried and survived per command; conftest.py
prints the counts and writes them to $SSORL_FAULTS_SUMMARY when that is set.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from ssorl_train.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
TIMEOUT_S = 600

# what: {"tried": n, "survived": n, ...}; `what` is a command ("data split") or a file kind
tally: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))


def worker(args: Sequence[str], kill_at: str | None = None) -> list[str]:
    """The command line of `ssorl ARGS` in tests/faults/cli_worker.py (see there)."""
    inject = ["--kill-at", kill_at] if kill_at else []
    return [sys.executable, "-m", "tests.faults.cli_worker", *inject, "--", *map(str, args)]


def start(argv: Sequence[str]) -> subprocess.Popen[bytes]:
    """Start `argv` in a session of its own (a kill reaches the sweep's workers too) and wait
    for its "ready" line."""
    proc = subprocess.Popen(
        list(argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=ENV,
        start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != b"ready":
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"{argv} did not start: {line!r} {err.decode()[-2000:]}")
    return proc


def kill(proc: subprocess.Popen[bytes]) -> str:
    """SIGKILL the process and every process of its session (a sweep's workers too, also
    when the process itself has ended), reap it; what it wrote to stderr."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _, err = proc.communicate()
    return (err or b"").decode(errors="replace")


@dataclass
class Kill:
    """How one killed run ended: SIGKILLed (returncode -9) or finished first (0)."""

    returncode: int
    stderr: str

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL


def measure(args: Sequence[str]) -> float:
    """Seconds an uninterrupted run of `ssorl ARGS` takes from "ready" to its exit."""
    proc = start(worker(args))
    began = time.monotonic()
    _, err = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 0, err.decode()[-3000:]
    return time.monotonic() - began


def run_killed(
    args: Sequence[str], *, delay: float | None = None, kill_at: str | None = None
) -> Kill:
    """Run `ssorl ARGS` and SIGKILL it `delay` seconds after "ready", or let it kill itself at
    `kill_at` (cli_worker's MODULE:ATTR:N); a run that ends first is reported, not hidden."""
    proc = start(worker(args, kill_at))
    try:
        proc.wait(timeout=TIMEOUT_S if delay is None else delay)
    except subprocess.TimeoutExpired:
        pass
    stderr = kill(proc)
    return Kill(proc.returncode, stderr)


@dataclass
class Ran:
    """An in-process `ssorl ARGS` (the rerun): exit code and everything it printed."""

    exit_code: int
    output: str


def ssorl(args: Sequence[str]) -> Ran:
    """Run `ssorl ARGS` in this process (click's runner: the same command, no start-up cost);
    a traceback is never an acceptable outcome."""
    result = CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert "Traceback" not in result.output, result.output
    return Ran(result.exit_code, result.output)


def ok(args: Sequence[str]) -> str:
    """`ssorl ARGS` in this process, which must succeed; its output."""
    ran = ssorl(args)
    assert ran.exit_code == 0, ran.output
    return ran.output


def refused(args: Sequence[str], *needles: str) -> str:
    """`ssorl ARGS` must fail as a user error: exit 2, `Error: ...` naming each of `needles`."""
    ran = ssorl(args)
    assert ran.exit_code == 2, ran.output
    assert "Error: " in ran.output, ran.output
    for needle in needles:
        assert needle in ran.output, (needle, ran.output)
    return ran.output
