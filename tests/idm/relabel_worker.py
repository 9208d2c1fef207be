"""A relabel that slows down after each written chunk; the SIGKILL test kills it mid-run.

Run as `python -m tests.idm.relabel_worker STORE IDM NAME`. It prints one line per
finished chunk so the test knows the run is under way before it kills it.
"""

from __future__ import annotations

import sys
import time

from ssorl_data.relabel import relabel
from ssorl_data.store import RelabelRun

_write_chunk = RelabelRun.write_chunk


def _slow_write_chunk(self: RelabelRun, *args, **kwargs) -> None:
    _write_chunk(self, *args, **kwargs)
    print("chunk", flush=True)
    time.sleep(0.02)


if __name__ == "__main__":
    RelabelRun.write_chunk = _slow_write_chunk
    relabel(sys.argv[1], sys.argv[2], sys.argv[3], progress=False)
