"""A small intermediate process that runs one stage worker and reports its resources.

    python -m benchmarks.scale_launch LOG_DIR JOB_JSON

Linux carries a process's RSS high-water mark across fork and exec, so a child's
`ru_maxrss` is at least the RSS of the process that spawned it. The benchmark's own
process holds torch and the results; this launcher imports only the standard library
(about 10 MB), so the stage's figure is its own. It prints one JSON line: wall seconds,
exit code, the child's ru_maxrss (KiB, from os.wait4) and its largest RssAnon (kB,
polled every 20 ms from /proc/PID/status; a spike shorter than that can be missed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path


def _poll_anon(pid: int, peak: list[int], stop: threading.Event) -> None:
    """Keep the largest RssAnon (kB) of `pid` in peak[0] until `stop` is set."""
    status = Path(f"/proc/{pid}/status")
    while not stop.is_set():
        try:
            for line in status.read_text().splitlines():
                if line.startswith("RssAnon:"):
                    peak[0] = max(peak[0], int(line.split()[1]))
                    break
        except (OSError, ValueError):
            return
        stop.wait(0.02)


def main() -> None:
    log_dir, job = Path(sys.argv[1]), sys.argv[2]
    with (log_dir / "stdout.txt").open("w") as out, (log_dir / "stderr.txt").open("w") as err:
        start = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.scale_worker", job], stdout=out, stderr=err
        )
        peak, stop = [0], threading.Event()
        poller = threading.Thread(target=_poll_anon, args=(child.pid, peak, stop), daemon=True)
        poller.start()
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        stop.set()
        poller.join()
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    print(json.dumps({"wall_seconds": wall, "returncode": child.returncode,
                      "maxrss_kib": usage.ru_maxrss, "anon_kb": peak[0]}))  # fmt: skip


if __name__ == "__main__":
    main()
