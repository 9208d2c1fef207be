"""The one error boundary of the `ssorl` command, and options that every command shares.

Every command fails the same way: an ssorl error (bad input, a missing file, a locked
store, ...) prints `Error: <message>` and exits with code 2, never with a traceback;
`ssorl --debug ...` or `SSORL_DEBUG=1` shows the traceback. A bug (any other exception)
keeps its traceback, since hiding it would hide the bug.
"""

from __future__ import annotations

import os
from typing import Any

import click

from ssorl_data.errors import SsorlError

USER_ERROR_EXIT_CODE = 2  # the same code click gives a usage error


def debug_requested(ctx: click.Context | None = None) -> bool:
    """Whether tracebacks were asked for (`--debug` on the root command, or SSORL_DEBUG=1)."""
    if os.environ.get("SSORL_DEBUG", "").strip().lower() in ("1", "true", "yes"):
        return True
    while ctx is not None:
        if ctx.params.get("debug"):
            return True
        ctx = ctx.parent
    return False


class BoundaryGroup(click.Group):
    """A click group that turns an `SsorlError` from any subcommand into a one-line error."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SsorlError as error:
            if debug_requested(ctx):
                raise
            click.echo(f"Error: {error}", err=True)
            ctx.exit(USER_ERROR_EXIT_CODE)


def renamed_option(old: str, new: str, is_flag: bool = False) -> Any:
    """A hidden option that only says `old` was renamed to `new` (a usage error, exit 2)."""

    def refuse(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value:
            raise click.UsageError(f"{old} was renamed to {new}: pass {new} instead.", ctx=ctx)

    return click.option(
        old,
        "_renamed_" + old.lstrip("-").replace("-", "_"),
        hidden=True,
        expose_value=False,
        is_flag=is_flag,
        default=False if is_flag else None,
        callback=refuse,
        is_eager=True,
    )
