"""The one-writer-at-a-time lock of a store, and of an output directory.

An OS advisory lock (flock) on a file inside the store or directory: the kernel
releases it when the holding process dies, so a writer killed with SIGKILL never
blocks the next one, and no stale-lock heuristics are needed.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ssorl_data.errors import DirectoryLockedError, SsorlError, StoreLockedError
from ssorl_data.layout import LOCK_FILE


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
            raise self._locked(holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def _locked(self, holder: str) -> SsorlError:
        return StoreLockedError(
            f"{self._path.parent}: another process (pid {holder}) is writing this store. "
            "Wait for it to finish; open the store read-only to inspect it meanwhile."
        )


class DirectoryLock(WriterLock):
    """The writer lock of an output directory (a training run, an IDM checkpoint), held
    while a command writes there; creates the directory. Use it as a context manager."""

    def __init__(self, directory: str | os.PathLike[str], what: str) -> None:
        self.directory = Path(directory)
        self._what = what
        super().__init__(self.directory / LOCK_FILE)

    def __enter__(self) -> DirectoryLock:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _locked(self, holder: str) -> SsorlError:
        return DirectoryLockedError(
            f"{self.directory}: another process (pid {holder}, holding {self._path}) is "
            f"writing this {self._what}. Wait for it to finish, or choose another --out."
        )
