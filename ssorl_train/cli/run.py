"""`ssorl run CONFIG.toml`: the whole pipeline, resuming where a previous run stopped."""

from __future__ import annotations

from pathlib import Path

import click

from ssorl_train.pipeline import SCHEMA
from ssorl_train.sweep import SWEEP_SCHEMA


@click.command(
    help=f"""Run every stage of CONFIG.toml into --out: import or collect, split,
train the IDM, relabel, train and evaluate the agents, write out/report/.

Each stage is skipped when its stamp (a hash of its config section and of its
inputs' stamps) matches, so a killed or edited run redoes only what changed.
With --sweep, CONFIG also has a [sweep] section: one pipeline per combination
of its values runs in out/cells/<cell>/ (several processes at once), then
out/sweep.json and out/sweep.md hold every agent's score and the table of
means and standard deviations over seeds (examples/sweep.toml).

Python API: ssorl_train.pipeline.run_pipeline, ssorl_train.sweep.run_sweep.
Config sections (see examples/pipeline.toml):

\b
{SCHEMA}
\b
{SWEEP_SCHEMA}"""
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
@click.option("--sweep", is_flag=True, help="Run the grid of CONFIG's [sweep] section.")
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="With --sweep: cells run at once (default: [sweep] jobs).",
)
def run(
    config: Path, out: Path | None, device: str | None, quiet: bool, sweep: bool, jobs: int | None
) -> None:
    from ssorl_train.pipeline import PipelineConfig, run_pipeline
    from ssorl_train.report import comparison_text

    if sweep:
        _run_sweep(config, out or config.with_suffix(""), device, jobs)
        return
    if jobs is not None:
        raise click.BadParameter("applies to --sweep only.", param_hint="--jobs")
    parsed = PipelineConfig.from_toml(config)
    report = run_pipeline(
        parsed, out or config.with_suffix(""), device=device, progress=not quiet, echo=click.echo
    )
    click.echo(comparison_text(parsed, report["comparison"]))


def _run_sweep(config: Path, out: Path, device: str | None, jobs: int | None) -> None:
    from ssorl_train.sweep import SweepConfig, run_sweep

    parsed = SweepConfig.from_toml(config)
    if jobs is not None:
        parsed = SweepConfig(parsed.base, parsed.sweep | {"jobs": jobs})
    n_cells = len(parsed.cells())
    click.echo(f"[sweep] {n_cells} cells, {parsed.sweep['jobs']} at a time, logs in {out}/cells/")
    summary = run_sweep(parsed, out, device=device, echo=click.echo)
    click.echo((out / "sweep.md").read_text())
    if summary["failed"]:
        for name, error in summary["failed"].items():
            click.echo(f"cell {name} failed: {error} (see {out}/cells/{name}/error.txt)", err=True)
        raise SystemExit(1)
