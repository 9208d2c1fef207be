"""`ssorl doctor`: which kernel backend is active and why; a wrapper over environment_report."""

from __future__ import annotations

import json

import click

from ssorl_data.kernels.diagnostics import environment_report


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def doctor(as_json: bool) -> None:
    """Report torch version, the active kernel backend (and why) and whether CUDA was built.

    `backend` is cpp, numba or torch; `origin` is "jit" when the C++ library was built on
    first use (or reused from `cache`) from the package's C++ `sources`. Python API:
    ssorl_data.kernels.diagnostics.environment_report.
    """
    report = environment_report()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    width = max(map(len, report))
    for key, value in report.items():
        click.echo(f"{key:<{width}}  {value}")
