"""`ssorl run CONFIG.toml`: the whole pipeline, resuming where a previous run stopped."""

from __future__ import annotations

from pathlib import Path

import click

from ssorl_data.cli.data import fail_on_ssorl_errors
from ssorl_train.pipeline import SCHEMA


@click.command(
    help=f"""Run every stage of CONFIG.toml into --out: import or collect, split,
train the IDM, relabel, train and evaluate the agents, write out/report/.

Each stage is skipped when its stamp (a hash of its config section and of its
inputs' stamps) matches, so a killed or edited run redoes only what changed.
Python API: ssorl_train.pipeline.run_pipeline. Config sections (see
examples/pipeline.toml):

\b
{SCHEMA}"""
)
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Run directory (default: CONFIG's name without .toml, beside it).",
)
@click.option("--device", default=None, help="torch device (default: cuda if present, else cpu).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@fail_on_ssorl_errors
def run(config: Path, out: Path | None, device: str | None, quiet: bool) -> None:
    from ssorl_train.pipeline import PipelineConfig, run_pipeline
    from ssorl_train.report import markdown_table

    parsed = PipelineConfig.from_toml(config)
    report = run_pipeline(
        parsed, out or config.with_suffix(""), device=device, progress=not quiet, echo=click.echo
    )
    click.echo(markdown_table(report["comparison"]))
