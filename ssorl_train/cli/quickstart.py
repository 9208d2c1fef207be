"""`ssorl quickstart`: the whole pipeline at a small size on data it collects itself."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import click

from ssorl_data.cli.options import set_threads, threads_option

# The same schema as `ssorl run` (examples/pipeline.toml), sized for about 5 minutes on
# 2 CPU cores. Hopper-v5 episodes from random actions mixed with a noisy balancing
# controller give returns from a few to about 1000, so the split's lower half and the
# rest differ, as in real mixed-quality corpora.
QUICKSTART: dict[str, dict] = {
    "data": {"env_id": "Hopper-v5", "steps": 20_000, "policy": "hopper-balance", "seed": 0},
    "split": {"labelled_fraction": 0.1, "quantile": 0.5, "seed": 0},
    "idm": {"hidden": [256, 256], "members": 5, "lr": 1e-3, "batch_size": 256,
            "max_steps": 1000, "eval_every": 100},
    "relabel": {"name": "idm"},
    "train": {"algo": "td3bc", "modes": ["full", "semi-supervised", "labelled-only"],
              "steps": 5000, "seeds": [0, 1], "log_every": 500},
    "eval": {"eval_episodes": 5, "eval_every": 1000},
}  # fmt: skip


@click.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("ssorl-quickstart"),
    show_default=True,
    help="Run directory (reused: finished stages are skipped).",
)
@click.option("--fresh", is_flag=True, help="Delete OUT first instead of resuming it.")
@threads_option(default=1)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def quickstart(out: Path, fresh: bool, threads: int, quiet: bool) -> None:
    """Collect Hopper-v5 data, hide 90% of its actions, relabel them with an IDM, and compare
    TD3+BC agents trained on fully labelled, semi-supervised (10% labelled, from the lower
    half of returns) and labelled-only data, by normalised score.

    Runs `ssorl run` on a built-in config (ssorl_train.cli.quickstart.QUICKSTART; same schema
    as examples/pipeline.toml), so it resumes if interrupted. Python API:
    ssorl_train.pipeline.run_pipeline.
    """
    from ssorl_train.pipeline import PipelineConfig, run_pipeline
    from ssorl_train.report import markdown_table

    set_threads(threads)
    if fresh and out.exists():
        shutil.rmtree(out)
    tick = time.perf_counter()
    report = run_pipeline(
        PipelineConfig.from_dict(QUICKSTART, where="quickstart"),
        out,
        progress=not quiet,
        echo=click.echo,
    )
    click.echo(
        f"\nTD3+BC on Hopper-v5, {QUICKSTART['train']['steps']} steps each "
        f"({time.perf_counter() - tick:.0f} s; report in {out / 'report'}):\n"
    )
    click.echo(markdown_table(report["comparison"]))
