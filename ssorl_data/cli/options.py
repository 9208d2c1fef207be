"""Option pieces that several commands share: click types made from the `Expect` tables of
the Python configs (so a command and its Python function accept the same values), the
`--threads` option, and the parser of comma-separated integer lists."""

from __future__ import annotations

from typing import Any

import click

from ssorl_data.expect import Expect


def click_type(expect: Expect) -> click.ParamType:
    """The click type that accepts what `expect` accepts (a range for numbers)."""
    if expect.kind not in (int, float):
        raise TypeError(f"Expected a numeric Expect for a click range. Got {expect!r}.")
    kind = click.IntRange if expect.kind is int else click.FloatRange
    return kind(expect.min, expect.max, min_open=expect.min_open, max_open=expect.max_open)


def int_list(expect: Expect) -> Any:
    """A click callback parsing 'A,B,...' into a tuple of integers that `expect` accepts."""

    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        try:
            numbers = tuple(int(part) for part in value.split(","))
        except ValueError:
            numbers = None
        if numbers is None or not expect.accepts(numbers):
            raise click.BadParameter(
                f"expected {expect.describe()}, comma-separated (e.g. 256,256). Got {value!r}."
            )
        return numbers

    return parse


def threads_option(default: int | None = None) -> Any:
    """`--threads N`: torch's intra-op threads in this process (default: torch's own choice,
    unless `default` is given); apply it with `set_threads`."""
    return click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=default,
        show_default=default is not None,
        help="torch threads in this process"
        + ("" if default is not None else " (default: torch's choice, one per core)")
        + ". One thread per process is fastest for these small networks when other jobs "
        "share the cores.",
    )


def set_threads(threads: int | None) -> None:
    """Apply `--threads` (None: leave torch's default)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
