"""The one-writer-at-a-time lock of a store.

An OS advisory lock (flock) on a file inside the store: the kernel releases it
when the holding process dies, so a writer killed with SIGKILL never blocks the
next one, and no stale-lock heuristics are needed.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ssorl_data.errors import StoreLockedError


class WriterLock:
    """Exclusive, non-blocking writer lock held for the lifetime of an append-mode store."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreLockedError(
                f"{self._path.parent}: another process (pid {holder}) is writing this store. "
                "Wait for it to finish; open the store read-only to inspect it meanwhile."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
