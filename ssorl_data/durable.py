"""Writes that a killed process never leaves half done.

A file is written beside its target and renamed over it, so a reader sees the old file or
the whole new one. `fsync` makes such a rename survive a power loss too, not only a killed
process: used where a later run trusts the file without reading it through (checkpoints,
the training cache).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def fsync(path: Path) -> None:
    """Flush a file's or a directory's entries to disk: a rename is durable only once its
    directory is synced."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, payload: Any, *, sync: bool = False) -> None:
    """`payload` as JSON at `path`, written beside it and renamed over it; with `sync`, the
    file and its directory are flushed to disk before this returns. Paths are written as
    strings; any other value JSON lacks is an error, not a silent `str`."""
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(payload, indent=1, default=_path_text) + "\n")
    if sync:
        fsync(partial)
    os.replace(partial, path)
    if sync:
        fsync(path.parent)


def _path_text(value: Any) -> str:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable: {value!r}")
