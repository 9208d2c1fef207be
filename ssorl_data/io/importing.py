"""`import_dataset`: any supported source into a new or existing store, in one transaction."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tqdm.auto import tqdm

from ssorl_data import layout
from ssorl_data.envs import check_env_id
from ssorl_data.errors import (
    ImportFormatError,
    SpaceMismatchError,
    StoreExistsError,
    StoreNotFoundError,
)
from ssorl_data.io.flat import open_d4rl_hdf5, open_npz
from ssorl_data.io.lerobot_io import open_lerobot
from ssorl_data.io.lerobot_meta import is_lerobot_dataset
from ssorl_data.io.minari_io import open_minari
from ssorl_data.io.observations import recorded_layout
from ssorl_data.io.source import ImportSource
from ssorl_data.store import Compression, TrajectoryStore

SourceFormat = Literal["auto", "d4rl", "npz", "minari", "lerobot"]

# The store's creation attributes name the import that created it: such a store with no
# committed episode is one whose first import died before its commit (a SIGKILL skips the
# clean-up), and a plain rerun replaces it.
CREATED_BY_IMPORT = "created_by_import"


@dataclass
class ImportResult:
    """What an import did: where, how much, and what the user should know."""

    store: Path
    episodes_added: int
    steps_added: int
    notes: list[str] = field(default_factory=list)


def open_source(
    source: str | os.PathLike[str],
    fmt: SourceFormat = "auto",
    env_id: str | None = None,
    *,
    no_terminals: bool = False,
    accept_float32_rounding: bool = False,
    observation_keys: Sequence[str] | None = None,
) -> ImportSource:
    """Open `source` by format: .hdf5/.h5 is D4RL layout, .npz is NPZ, a directory holding
    meta/info.json is a LeRobot dataset, else a Minari dataset.

    `no_terminals=True` accepts a D4RL/NPZ file without `terminals` (see ssorl_data.io.flat).
    `accept_float32_rounding=True` imports a Minari dataset whose float32 rounding exceeds
    the tolerance (see ssorl_data.io.observations).
    `observation_keys` names a LeRobot dataset's observation features (see
    ssorl_data.io.lerobot_io).
    """
    text = str(source)
    if fmt == "auto":
        suffix = Path(text).suffix.lower()
        fmt = "d4rl" if suffix in (".hdf5", ".h5") else "npz" if suffix == ".npz" else "minari"
        fmt = "lerobot" if is_lerobot_dataset(text) else fmt
    if no_terminals and fmt not in ("d4rl", "npz"):
        raise ImportFormatError(
            f"{text}: --no-terminals applies to D4RL HDF5 and NPZ files only; a {fmt} source "
            "records its own terminations. Drop the flag."
        )
    if accept_float32_rounding and fmt != "minari":
        raise ImportFormatError(
            f"{text}: --accept-float32-rounding applies to Minari datasets only; a {fmt} "
            "source is not checked for rounding. Drop the flag."
        )
    if observation_keys and fmt != "lerobot":
        raise ImportFormatError(
            f"{text}: --observation-key applies to LeRobot datasets only; a {fmt} source "
            "has one observation. Drop the flag."
        )
    if fmt == "lerobot":
        return open_lerobot(text, env_id=env_id, observation_keys=observation_keys)
    if fmt == "d4rl":
        return open_d4rl_hdf5(text, env_id=env_id, no_terminals=no_terminals)
    if fmt == "npz":
        return open_npz(text, env_id=env_id, no_terminals=no_terminals)
    if fmt == "minari":
        return open_minari(text, accept_float32_rounding=accept_float32_rounding)
    raise ImportFormatError(
        f"Expected format auto, d4rl, npz, minari or lerobot. Got {fmt!r} instead."
    )


def import_dataset(
    source: str | os.PathLike[str] | ImportSource,
    store_path: str | os.PathLike[str],
    *,
    fmt: SourceFormat = "auto",
    append: bool = False,
    env_id: str | None = None,
    chunk_steps: int = layout.DEFAULT_CHUNK_STEPS,
    compression: Compression = "zstd",
    compression_level: int = layout.DEFAULT_COMPRESSION_LEVEL,
    progress: bool = True,
    no_terminals: bool = False,
    accept_float32_rounding: bool = False,
    observation_keys: Sequence[str] | None = None,
) -> ImportResult:
    """Import a dataset into a store; all its episodes become visible together or not at all.

    A new store is created (and removed again if the import fails); an existing one
    is appended to only when `append=True`, and only if its spaces are the same.
    `no_terminals`, `accept_float32_rounding` and `observation_keys` are passed to
    `open_source` (an `ImportSource` was opened with its own).
    `env_id`, when given, must be registered in gymnasium.
    """
    if append and not Path(store_path).exists():
        raise StoreNotFoundError(
            f"{store_path}: no store to append to. Drop append=True (CLI: --append) to "
            "create a new store there, or give the path of the existing store."
        )
    if env_id is not None:
        check_env_id(env_id)
    src = (
        source
        if isinstance(source, ImportSource)
        else open_source(
            source,
            fmt,
            env_id,
            no_terminals=no_terminals,
            accept_float32_rounding=accept_float32_rounding,
            observation_keys=observation_keys,
        )
    )
    if src.n_steps == 0:
        raise ImportFormatError(f"{src.description}: holds no steps; nothing to import.")
    store_path = Path(store_path)
    if not append:
        _remove_abandoned_store(store_path)
    created = not store_path.exists()
    if not created and not append:
        raise StoreExistsError(
            f"{store_path}: already exists. Pass append=True (CLI: --append) to add "
            f"{src.description} to it, or choose a new store path."
        )
    if created:
        store = TrajectoryStore.create(
            store_path,
            src.observation_space,
            src.action_space,
            env_id=src.env_id,
            chunk_steps=chunk_steps,
            compression=compression,
            compression_level=compression_level,
            ref_min_score=src.ref_min_score,
            ref_max_score=src.ref_max_score,
            extra={CREATED_BY_IMPORT: src.description},
        )
    else:
        store = TrajectoryStore.open(store_path, mode="a")
    try:
        with store:
            if not created:
                _check_same_spaces(store, src)
            before = (store.n_episodes, store.n_steps)
            bar = tqdm(
                total=src.n_steps,
                unit="step",
                unit_scale=True,
                disable=not progress,
                desc=f"import {Path(src.description).name}",
            )
            with store.appending(src.description, src.provenance) as appender:
                for batch in src.batches():
                    appender.add(batch)
                    bar.update(batch.n_steps)
            bar.close()
            return ImportResult(
                store_path, store.n_episodes - before[0], store.n_steps - before[1], src.notes
            )
    except BaseException:
        if created:
            shutil.rmtree(store_path, ignore_errors=True)
        raise


def _check_same_spaces(store: TrajectoryStore, src: ImportSource) -> None:
    for what, ours, theirs in (
        ("observation", store.observation_space, src.observation_space),
        ("action", store.action_space, src.action_space),
    ):
        if ours != theirs:
            raise SpaceMismatchError(
                f"{src.description}: its {what} space {theirs!r} differs from the store's "
                f"{ours!r} ({store.path}). Import it into a separate store, or pass the "
                "store's env id (--env-id) if the data comes from the same env."
            )
    # Same Box, different keys behind its columns (a Dict source): refuse too.
    recorded = recorded_layout(store.metadata.extra, str(store.path))
    theirs = src.provenance.get("observation_layout")
    if recorded is not None and theirs is not None:
        ours = recorded.to_json()["leaves"]
        if [(x["key"], x["shape"], x["columns"]) for x in ours] != [
            (x["key"], x["shape"], x["columns"]) for x in theirs["leaves"]
        ]:
            raise SpaceMismatchError(
                f"{src.description}: its observation columns hold {theirs['leaves']!r}, the "
                f"store's hold {ours!r} ({store.path}). Import it into a separate store."
            )


def _remove_abandoned_store(path: Path) -> None:
    """Remove the store at `path` if a first import created it and died before committing
    anything (see CREATED_BY_IMPORT); a live import holds its lock, so it is refused."""
    if not (path / "zarr.json").is_file():
        return
    with TrajectoryStore.open(path, mode="a") as store:
        abandoned = (
            store.n_episodes == 0
            and CREATED_BY_IMPORT in store.metadata.extra
            and not store.list_splits()
            and not store.list_relabels()
        )
        if not abandoned:
            return
        doomed = path.parent / f".{path.name}.abandoned-{uuid.uuid4().hex[:8]}"
        os.rename(path, doomed)  # under the lock: no other writer sees it half-removed
    shutil.rmtree(doomed)
