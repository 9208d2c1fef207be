"""`ssorl relabel`: proxy actions for every step of a store."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--idm", "idm_dir", required=True, type=click.Path(path_type=Path),
              help="IDM checkpoint directory (`ssorl idm train --out`).")  # fmt: skip
@click.option("--name", required=True, help="Relabel run name: relabels/NAME in the store.")
@click.option("--split", help="Split that groups the metrics (default: the IDM's).")
@click.option("--overwrite", is_flag=True, help="Replace an existing run of that name.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8192, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--dask", "dask_address", help="Address of a dask.distributed scheduler.")
@click.option("--workers", type=click.IntRange(min=1),
              help="Run on a local dask.distributed cluster of N worker processes.")  # fmt: skip
@click.option("--quiet", is_flag=True, help="No progress bar.")
def relabel(store, idm_dir, name, split, overwrite, batch_size, device, dask_address, workers,
            quiet) -> None:  # fmt: skip
    """Write proxy actions and uncertainty for every step of STORE to relabels/NAME.

    Streams the store chunk by chunk; killed and run again, it resumes from the
    chunks already written. Python API: ssorl_data.relabel.relabel.
    """
    from ssorl_data.relabel import relabel as run_relabel

    result = run_relabel(
        store, idm_dir, name, split=split, overwrite=overwrite, batch_size=batch_size,
        device=device, dask_address=dask_address, workers=workers, progress=not quiet,
    )  # fmt: skip
    m = result.metrics
    click.echo(
        f"relabelled {result.n_steps} steps into relabels/{name} in {result.seconds:.1f}s "
        f"({result.steps_per_s:,.0f} steps/s; {result.chunks_resumed} chunks resumed)"
    )
    if m.get("hidden_mse") is not None:
        click.echo(
            f"hidden episodes: action MSE {m['hidden_mse']:.4g} (action variance "
            f"{m['hidden_action_variance']:.4g}), mean uncertainty {m['hidden_uncertainty']:.4g}"
        )
