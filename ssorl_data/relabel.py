"""Relabelling: proxy actions and uncertainty for every step, written chunk by chunk.

The store is streamed one step chunk at a time (plus a halo of k rows); each
chunk's windows go through the ensemble in fixed batches and the results are
written into `relabels/<name>/` at the same chunk boundaries, after which the
chunk is flagged done. A run killed at any point resumes from the flagged
chunks, and since a chunk's result depends only on the chunk, a resumed run
produces the same arrays. For the same reason a run made before episodes were
appended is extended by running it again: only the new chunks (and the one that
held the old end) are computed, and the arrays equal a fresh run's.
`dask.distributed` runs ranges of chunks as tasks on other processes or
machines (which must see the store's filesystem); the calling process holds
the writer lock throughout (see
`ssorl_data.store.open_relabel_for_worker` for why the workers need none).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ssorl_data import __version__, layout
from ssorl_data.errors import InvalidArgumentError, RelabelExistsError, SchedulerUnreachableError
from ssorl_data.idm.checkpoint import Idm, checkpoint_hash, load_idm
from ssorl_data.idm.evaluate import GroupStats, episode_groups, predict_windows, ranking_summary
from ssorl_data.idm.model import DEFAULT_UNCERTAINTY, LEGACY_UNCERTAINTY, check_uncertainty
from ssorl_data.idm.ranking import RankingSample, step_errors
from ssorl_data.idm.windows import RangeWindows
from ssorl_data.store import RelabelRun, TrajectoryStore, open_relabel_for_worker
from ssorl_data.store.relabels import extend_relabel

DEFAULT_BATCH_SIZE = 8192
CHUNKS_PER_TASK = 2  # Dask task granularity: small enough to balance, large enough to amortise
# What a run copies from its IDM's provenance: what the IDM was trained on.
IDM_PROVENANCE_KEYS = (
    "store", "split", "split_protocol", "config", "store_identity", "split_identity",
)  # fmt: skip
SCHEDULER_TIMEOUT_S = 5.0  # how long a --dask scheduler may take to accept a connection


@dataclass(frozen=True)
class RelabelResult:
    name: str
    n_steps: int
    chunks_written: int  # by this call
    chunks_resumed: int  # already done before it
    seconds: float
    metrics: dict[str, Any]
    extended_from: int | None = None  # steps the run covered before this call extended it

    @property
    def steps_per_s(self) -> float:
        return self.n_steps / self.seconds if self.seconds else float("inf")


def relabel(
    store_path: str | os.PathLike[str],
    idm_dir: str | os.PathLike[str],
    name: str,
    *,
    split: str | None = None,
    overwrite: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str = "cpu",
    dask_address: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    uncertainty: str | None = None,
) -> RelabelResult:
    """Relabel every step of the store with the IDM checkpoint at `idm_dir` into run `name`.

    An existing run of the same IDM is resumed where it is partial and extended over
    the steps appended since it was made; a complete one that covers every step, or
    one made by another IDM, is refused unless `overwrite`.

    `split` (default: the IDM's training split) only groups the metrics. Give
    `dask_address` (a scheduler) or `workers` (a local cluster of that many
    processes) to run on dask.distributed; otherwise it runs in this process.
    `uncertainty` names the definition of the stored uncertainty column (default
    `DEFAULT_UNCERTAINTY` for a new run, the run's own for one resumed or extended).
    """
    idm = load_idm(idm_dir, device)
    with TrajectoryStore.open(store_path, mode="a") as store:
        return relabel_store(
            store, idm, name, split=split, overwrite=overwrite, batch_size=batch_size,
            dask_address=dask_address, workers=workers, progress=progress,
            uncertainty=uncertainty,
        )  # fmt: skip


def relabel_store(
    store: TrajectoryStore,
    idm: Idm,
    name: str,
    *,
    split: str | None = None,
    overwrite: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dask_address: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    uncertainty: str | None = None,
) -> RelabelResult:
    """`relabel` on an open store (mode "a") with a loaded IDM."""
    started = time.perf_counter()
    if dask_address is not None and workers is not None:
        raise InvalidArgumentError(
            "Expected one of dask_address (--dask) and workers (--workers). Got both: drop "
            "--workers to use the scheduler, or --dask to start a local cluster."
        )
    if uncertainty is not None:
        check_uncertainty(uncertainty)
    if dask_address is not None:
        check_scheduler(dask_address)  # before the run is created: nothing half-made
    idm.check_store(store)
    if split is None:
        split = idm.provenance.get("split")
        if split not in store.list_splits():
            split = None  # an IDM trained on another store: its split does not exist here
    existing = name in store.list_relabels() and not overwrite
    covered = store.relabel_run(name).n_steps if existing else None
    run = _prepare_run(store, idm, name, split, overwrite, uncertainty)
    definition = run.attrs.get("uncertainty", LEGACY_UNCERTAINTY)
    extended_from = covered if covered is not None and covered < run.n_steps else None
    pending = np.flatnonzero(~run.done())
    resumed = run.n_chunks - pending.size
    bar = tqdm(
        total=run.n_steps, unit="step", unit_scale=True, desc=f"relabel {name}",
        disable=not progress,
    )  # fmt: skip
    bar.update(run.n_steps - sum(np.diff(run.chunk_range(int(i)))[0] for i in pending))
    if dask_address is not None or workers is not None:
        if idm.checkpoint is None:
            raise ValueError("Expected an IDM loaded from a checkpoint directory for Dask workers.")
        _run_on_dask(store, idm, name, pending, batch_size, dask_address, workers, bar, definition)
    else:
        relabel_chunks(store, run, idm, pending, batch_size, bar.update, definition)
    bar.close()
    metrics = relabel_metrics(store, run, split, idm)
    store.complete_relabel(name, metrics)
    return RelabelResult(
        name, run.n_steps, int(pending.size), int(resumed), time.perf_counter() - started,
        metrics, extended_from,
    )  # fmt: skip


def _prepare_run(
    store: TrajectoryStore,
    idm: Idm,
    name: str,
    split: str | None,
    overwrite: bool,
    uncertainty: str | None,
) -> RelabelRun:
    """The run to fill: new; or one made by the same IDM with the same uncertainty
    definition, resumed where it is partial and extended over the steps appended since it
    was made (`extend_relabel`)."""
    idm_hash = checkpoint_hash(idm.checkpoint) if idm.checkpoint else None
    if name in store.list_relabels() and not overwrite:
        run = store.relabel_run(name)
        attrs = run.attrs
        stale = run.n_steps < store.n_steps
        if run.status == layout.STATUS_COMPLETE and not stale:
            raise RelabelExistsError(
                f"{run.where}: a complete relabel run of that name exists and covers every "
                "step. Pass overwrite=True (`ssorl relabel --overwrite`) to replace it, or "
                "choose another name."
            )
        if attrs.get("idm_hash") != idm_hash or run.n_steps > store.n_steps:
            raise RelabelExistsError(
                f"{run.where}: a {run.status} run of that name was made by another IDM "
                f"({attrs.get('idm_hash')!r}) or over {run.n_steps} steps (now "
                f"{store.n_steps}); it cannot be resumed or extended. Pass overwrite=True "
                "(--overwrite) to replace it, or choose another name."
            )
        made_with = attrs.get("uncertainty", LEGACY_UNCERTAINTY)
        if uncertainty is not None and uncertainty != made_with:
            raise RelabelExistsError(
                f"{run.where}: the run's uncertainty column holds {made_with!r}, not "
                f"{uncertainty!r}; it cannot be resumed or extended with another definition. "
                "Pass overwrite=True (--overwrite) to replace it, or choose another name."
            )
        return extend_relabel(store, name) if stale else run
    provenance = {
        "idm_checkpoint": str(Path(idm.checkpoint).resolve()) if idm.checkpoint else None,
        "idm_hash": idm_hash,
        "idm_config": idm.spec.to_dict(),
        "idm_provenance": {key: idm.provenance.get(key) for key in IDM_PROVENANCE_KEYS},
        "split": split,
        "k": idm.spec.k,
        # what the uncertainty column means (ssorl_data.idm.model.UNCERTAINTY_DEFINITIONS);
        # runs without this key hold LEGACY_UNCERTAINTY
        "uncertainty": uncertainty or DEFAULT_UNCERTAINTY,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "package_version": __version__,
    }
    return store.create_relabel(name, provenance, overwrite=overwrite)


def relabel_chunks(
    store: TrajectoryStore,
    run: RelabelRun,
    idm: Idm,
    chunks: np.ndarray,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_steps=None,
    uncertainty: str = DEFAULT_UNCERTAINTY,
) -> None:
    """Compute and write the given chunks of `run`, reading the next chunk and writing the
    last one in background threads while the ensemble runs."""
    if chunks.size == 0:
        return
    table = store.episode_table()
    builder = RangeWindows(table, idm.spec.k, idm.mean, idm.std, run.chunk_steps, idm.spec.obs_dim)

    def read(index: int) -> np.ndarray:
        start, stop = run.chunk_range(index)
        return store.read_observations(*builder.rows(start, stop))

    with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(1) as writer:
        next_rows = reader.submit(read, int(chunks[0]))
        written = None
        for position, index in enumerate(chunks.tolist()):
            rows = next_rows.result()
            if position + 1 < chunks.size:
                next_rows = reader.submit(read, int(chunks[position + 1]))
            start, stop = run.chunk_range(index)
            windows, _ = builder.build(rows, start, stop)
            actions, spread, _ = predict_windows(idm, windows, batch_size, None, uncertainty)
            if written is not None:
                written.result()
            written = writer.submit(run.write_chunk, index, actions, spread)
            if on_steps is not None:
                on_steps(stop - start)
        written.result()


def relabel_metrics(
    store: TrajectoryStore, run: RelabelRun, split: str | None, idm: Idm | None = None
) -> dict[str, Any]:
    """Proxy-action MSE against recorded actions, mean uncertainty and how well it ranks
    errors (`ssorl_data.idm.ranking`), by episode group; with the run's `idm` trained on
    this store, also on the IDM's held-out `val` episodes."""
    visible = store.read_split(split).visible if split else None
    table = store.episode_table()
    held_out = None
    if idm is not None and idm.provenance.get("store") == str(store.path.resolve()):
        held_out = np.asarray(idm.provenance.get("val_episodes", []), np.int64)
    # "recorded": every step with a recorded action, whatever its episode.
    groups = {"recorded": np.ones(table.n_episodes, bool)}
    groups |= episode_groups(store, visible, held_out)
    stats = {name: GroupStats() for name in groups}
    samples = {name: RankingSample(int(table.lengths[c].sum())) for name, c in groups.items()}
    low = np.asarray(run.attrs["idm_config"]["action_low"], np.float64)
    half = (np.asarray(run.attrs["idm_config"]["action_high"], np.float64) - low) / 2
    all_uncertainty = GroupStats()
    for start in range(0, run.n_steps, run.chunk_steps):
        stop = min(start + run.chunk_steps, run.n_steps)
        actions = run.read("actions", start, stop)
        uncertainty = run.read("uncertainty", start, stop)
        mask = store.read_steps("action_mask", start, stop)
        recorded = store.read_steps("actions", start, stop)
        episodes = table.episode_of_step(start, stop)
        steps = np.arange(start, stop)
        all_uncertainty.uncertainty += float(uncertainty.astype(np.float64).sum())
        for name, chosen in groups.items():
            keep = mask & chosen[episodes]
            if keep.any():
                stats[name].add(
                    actions[keep], recorded[keep], uncertainty[keep], None, episodes[keep]
                )
                error = step_errors(actions[keep], recorded[keep], half)
                samples[name].add(steps[keep], uncertainty[keep], error)
    metrics: dict[str, Any] = {
        "uncertainty_mean": all_uncertainty.uncertainty / max(1, run.n_steps),
        "uncertainty_definition": run.attrs.get("uncertainty", LEGACY_UNCERTAINTY),
    }
    for name, group in stats.items():
        metrics |= {f"{name}_{key}": v for key, v in group.summary(with_nll=False).items()}
        metrics |= ranking_summary(name, samples[name], (metrics["uncertainty_definition"],))
    return metrics


# --------------------------------------------------------------------------- Dask


def check_scheduler(address: str, timeout: float = SCHEDULER_TIMEOUT_S) -> None:
    """Raise SchedulerUnreachableError unless a TCP connection to the scheduler at `address`
    opens within `timeout` seconds (Dask's own client would wait 30 s, then fail mid-run)."""
    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port

    try:
        scheme, location = parse_address(address)
        host, port = parse_host_port(location) if scheme in ("tcp", "tls") else (None, None)
    except ValueError as error:
        raise SchedulerUnreachableError(
            f"Expected a scheduler address like 'tcp://HOST:PORT'. Got {address!r} ({error})."
        ) from None
    if host is None:
        return  # another transport (inproc, ucx): Client's own timeout applies
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as error:
        raise SchedulerUnreachableError(
            f"No dask.distributed scheduler answers at {address!r} ({error}; waited at most "
            f"{timeout:g} s). Start one (`dask scheduler`, workers with `dask worker ADDRESS`) "
            "and pass its address, or use --workers N for a local cluster."
        ) from None


def _run_on_dask(store, idm, name, pending, batch_size, address, workers, bar, uncertainty):
    """Submit ranges of pending chunks as tasks; each worker reads its chunks plus halo and
    writes only its own chunks."""
    from distributed import Client, LocalCluster, as_completed

    idm_hash = checkpoint_hash(idm.checkpoint)
    tasks = [pending[i : i + CHUNKS_PER_TASK] for i in range(0, pending.size, CHUNKS_PER_TASK)]
    if not tasks:
        return
    cluster = None
    if address is None:
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=None,
        )  # fmt: skip
    try:
        target = cluster if cluster is not None else address
        with Client(target, timeout=SCHEDULER_TIMEOUT_S) as client:
            futures = [
                client.submit(
                    _dask_task,
                    str(store.path),
                    str(idm.checkpoint),
                    idm_hash,
                    name,
                    chunk_list.tolist(),
                    batch_size,
                    uncertainty,
                    pure=False,
                )  # fmt: skip
                for chunk_list in tasks
            ]
            for future in as_completed(futures):
                bar.update(future.result())
    finally:
        if cluster is not None:
            cluster.close()


def _dask_task(
    store_path: str,
    idm_dir: str,
    idm_hash: str,
    name: str,
    chunks: list[int],
    batch_size: int,
    uncertainty: str = DEFAULT_UNCERTAINTY,
) -> int:
    """One Dask task: relabel `chunks` of run `name`; returns the number of steps written."""
    idm = _worker_idm(idm_dir, idm_hash)
    run = open_relabel_for_worker(store_path, name)
    done = run.done()
    todo = np.array([c for c in chunks if not done[c]], dtype=np.int64)
    with TrajectoryStore.open(store_path) as store:  # read-only: the coordinator holds the lock
        relabel_chunks(store, run, idm, todo, batch_size, uncertainty=uncertainty)
    return sum(run.chunk_range(c)[1] - run.chunk_range(c)[0] for c in chunks)


@functools.lru_cache(maxsize=4)
def _worker_idm(idm_dir: str, idm_hash: str) -> Idm:
    """The IDM, loaded once per worker process (the hash keys the cache to its exact files)."""
    if checkpoint_hash(idm_dir) != idm_hash:
        raise RelabelExistsError(
            f"{idm_dir}: the checkpoint changed while the relabel ran (hash differs). Run again."
        )
    return load_idm(idm_dir)
