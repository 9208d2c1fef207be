"""`python -m tests.faults.cli_worker [--kill-at MODULE:ATTR:N] -- ARGS...` runs `ssorl ARGS`.

The same click command as `python -m ssorl_train`, in a process of its own. It imports the
heavy libraries first and prints "ready" (so a kill delay measures the command's work, not
Python's start-up); with --kill-at, the process SIGKILLs itself when MODULE.ATTR (a function,
or `Class.method`) returns for the N-th time: a kill at a known point of the code path.
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
import sys
from typing import Any


def kill_after_call(spec: str) -> None:
    """Patch MODULE:ATTR so that its N-th return ends this process with SIGKILL."""
    module_name, attr, nth = spec.split(":")
    owner: Any = importlib.import_module(module_name)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    real = getattr(owner, name)
    calls = [0]

    @functools.wraps(real)
    def dying(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        calls[0] += 1
        if calls[0] == int(nth):
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, name, dying)


def main(argv: list[str]) -> None:
    split = argv.index("--")
    options, args = argv[:split], argv[split + 1 :]
    import torch  # noqa: F401  (imported before "ready", as every command needs it)
    import zarr  # noqa: F401

    import ssorl_data.relabel  # noqa: F401
    import ssorl_train.loop  # noqa: F401
    from ssorl_train.cli.main import cli

    if options[:1] == ["--kill-at"]:
        kill_after_call(options[1])
    print("ready", flush=True)
    cli(args, prog_name="ssorl")


if __name__ == "__main__":
    main(sys.argv[1:])
