"""`ssorl quickstart`: build a small store from scratch (no download) and show what it holds."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from ssorl_data.cli.data import _info_table, fail_on_ssorl_errors


@click.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("ssorl-quickstart"),
    show_default=True,
    help="Directory for everything quickstart writes.",
)
@click.option("--env-id", default="Hopper-v5", show_default=True, help="Gymnasium env to roll out.")
@click.option(
    "--steps",
    type=click.IntRange(min=100),
    default=20_000,
    show_default=True,
    help="Steps to collect with a random policy.",
)
@click.option("--fresh", is_flag=True, help="Delete OUT first instead of reusing it.")
@fail_on_ssorl_errors
def quickstart(out: Path, env_id: str, steps: int, fresh: bool) -> None:
    """Collect a small dataset with a random policy into a store and print its summary.

    Python API: ssorl_data.collect.collect and ssorl_data.info.store_info.
    """
    from ssorl_data.collect import collect
    from ssorl_data.info import store_info
    from ssorl_data.store import TrajectoryStore

    if fresh and out.exists():
        shutil.rmtree(out)
    store_path = out / "store"
    if not store_path.exists():
        collect(env_id, store_path, steps)
    with TrajectoryStore.open(store_path) as store:
        click.echo(_info_table(store_info(store)))
