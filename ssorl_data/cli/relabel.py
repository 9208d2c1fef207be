"""`ssorl relabel`: proxy actions for every step of a store."""

from __future__ import annotations

from pathlib import Path

import click

from ssorl_data.cli.options import set_threads, threads_option
from ssorl_data.idm.model import DEFAULT_UNCERTAINTY, UNCERTAINTY_DEFINITIONS


@click.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--idm", "idm_dir", required=True, type=click.Path(path_type=Path),
              help="IDM checkpoint directory (`ssorl idm train --out`).")  # fmt: skip
@click.option("--name", required=True, help="Relabel run name: relabels/NAME in the store.")
@click.option("--split", help="Split that groups the metrics (default: the IDM's).")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing run of that name (not resume or extend it).")  # fmt: skip
@click.option("--batch-size", type=click.IntRange(min=1), default=8192, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--dask", "dask_address", help="Address of a dask.distributed scheduler.")
@click.option("--workers", type=click.IntRange(min=1),
              help="Run on a local dask.distributed cluster of N worker processes.")  # fmt: skip
@click.option("--uncertainty", type=click.Choice(UNCERTAINTY_DEFINITIONS),
              help=f"Definition of the uncertainty column (new run: {DEFAULT_UNCERTAINTY}; "
                   "a resumed or extended run keeps its own).")  # fmt: skip
@threads_option()
@click.option("--quiet", is_flag=True, help="No progress bar.")
def relabel(store, idm_dir, name, split, overwrite, batch_size, device, dask_address, workers,
            uncertainty, threads, quiet) -> None:  # fmt: skip
    """Write proxy actions and uncertainty for every step of STORE to relabels/NAME.

    Streams the store chunk by chunk (memory: about 3 chunks, the one computed, the next
    one read and the last one written, whatever the store's size); killed and run again,
    it resumes from the chunks already written. Run again on a run made before `ssorl data import
    --append` (shown "stale" by `ssorl data info`), it extends the run over the
    appended steps with the same IDM, computing only the new chunks; a complete
    run that covers every step, or one made by another IDM, needs --overwrite.
    Python API: ssorl_data.relabel.relabel.
    """
    from ssorl_data.relabel import relabel as run_relabel

    set_threads(threads)  # torch threads of this process, not of Dask workers
    result = run_relabel(
        store, idm_dir, name, split=split, overwrite=overwrite, batch_size=batch_size,
        device=device, dask_address=dask_address, workers=workers, progress=not quiet,
        uncertainty=uncertainty,
    )  # fmt: skip
    m = result.metrics
    if result.extended_from is not None:
        click.echo(
            f"extended relabels/{name} from {result.extended_from} to {result.n_steps} steps"
        )
    click.echo(
        f"relabelled {result.n_steps} steps into relabels/{name} in {result.seconds:.1f}s "
        f"({result.steps_per_s:,.0f} steps/s; {result.chunks_resumed} chunks resumed)"
    )
    if m.get("hidden_mse") is not None:
        click.echo(
            f"hidden episodes: action MSE {m['hidden_mse']:.4g} (action variance "
            f"{m['hidden_action_variance']:.4g}), mean uncertainty {m['hidden_uncertainty']:.4g}"
        )
    if m.get("val_uncertainty_auroc") is not None:
        click.echo(
            f"IDM's held-out episodes: uncertainty AUROC for the worst 10% of errors "
            f"{m['val_uncertainty_auroc']:.3f}, Spearman {m['val_uncertainty_spearman']:.3f} "
            f"({m['uncertainty_definition']})"
        )
