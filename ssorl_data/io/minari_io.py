"""Minari datasets: import by id (from MINARI_DATASETS_PATH) or by path, and export.

Everything goes through the `minari` package's own API (either data format, hdf5 or
arrow), so what we read is what `minari.load_dataset` yields and what we write is what
it reads. Observations go through `ObservationLayout` (Dict spaces flattened, float64
rounded to float32 and measured); the layout is recorded in the import's provenance and
restored on export.
"""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import minari
import numpy as np
from minari.data_collector import EpisodeBuffer
from minari.dataset.episode_data import EpisodeData
from minari.dataset.minari_dataset import parse_dataset_id
from minari.namespace import create_namespace, list_local_namespaces
from minari.storage.datasets_root_dir import get_dataset_path

from ssorl_data.episodes import EpisodeBatch, concat_batches, make_episode
from ssorl_data.errors import DatasetExistsError, ImportFormatError, InvalidNameError
from ssorl_data.io.observations import (
    Float32Rounding,
    ObservationLayout,
    observation_layout,
    recorded_layout,
)
from ssorl_data.io.source import BLOCK_STEPS, ImportSource
from ssorl_data.store import TrajectoryStore

BLOCK_BYTES = 64 << 20  # of observations and actions per export block: 12 KB frames
# would make 131,072 steps a 1.6 GB block, held twice while Minari writes it

MinariFormat = Literal["hdf5", "arrow"]


def open_minari(
    dataset: str | os.PathLike[str], *, accept_float32_rounding: bool = False
) -> ImportSource:
    """A Minari dataset as an import source: an existing directory is a path, else an id.

    Observations are stored as float32 (uint8 stays uint8); where that rounds (float64),
    the largest error is recorded in the provenance, and an error beyond
    `observations.ROUNDING_TOLERANCE` of a dimension's range is refused at the end of the
    import (nothing is committed) unless `accept_float32_rounding`.
    """
    data = _load(dataset)
    description = f"minari dataset {str(dataset)!r}"
    layout = observation_layout(data.observation_space, description)
    metadata = data.storage.metadata
    env_spec = data.spec.env_spec if data.spec is not None else None
    provenance: dict[str, Any] = {
        "source": description,
        "minari_dataset_id": metadata.get("dataset_id"),
        "minari_data_format": metadata.get("data_format"),
        "observation_layout": layout.to_json(),
    }
    return ImportSource(
        description=description,
        observation_space=layout.store_space,
        action_space=_action_space(data.action_space, description),
        n_steps=int(data.total_steps),
        batches=lambda: _stream(data, layout, provenance, accept_float32_rounding, description),
        env_id=env_spec.id if env_spec is not None else None,
        ref_min_score=metadata.get("ref_min_score"),
        ref_max_score=metadata.get("ref_max_score"),
        provenance=provenance,
    )


def export_minari(
    store: TrajectoryStore,
    dataset_id: str,
    root: str | os.PathLike[str] | None = None,
    *,
    data_format: MinariFormat = "hdf5",
) -> Path:
    """Write the store as Minari dataset `dataset_id` under `root` (default: Minari's own).

    Observations get back the space the store's imports recorded (a Dict with its keys,
    float64 if the source was), else the store's own. Steps without a recorded action are
    exported as NaN actions, which our importer reads back as missing. Episodes are
    written block by block (Minari's `update_dataset_from_buffer`), so memory stays
    bounded, into a staging directory beside `root` that is renamed into place at the
    end: a failed or killed export leaves no partial dataset under `root`. Images are
    written raw, not JPEG-encoded, so nothing is lost.
    """
    _check_dataset_id(dataset_id)
    if data_format not in ("hdf5", "arrow"):
        raise ImportFormatError(
            f"Expected a Minari data format hdf5 or arrow. Got {data_format!r} instead."
        )
    if store.n_episodes == 0:
        raise ImportFormatError(f"{store.path}: has no episodes; Minari needs at least one.")
    with _datasets_root(root):
        target_root = get_dataset_path()  # MINARI_DATASETS_PATH or ~/.minari/datasets
    target = target_root / dataset_id
    if target.exists():
        raise DatasetExistsError(
            f"{target}: Minari dataset {dataset_id!r} exists already. Export under another "
            f"id or version, or delete it first (`minari delete {dataset_id}`)."
        )
    layout = recorded_layout(store.metadata.extra, str(store.path)) or observation_layout(
        store.observation_space, str(store.path)
    )
    staging = target_root.parent / f".{target_root.name}.export-{uuid.uuid4().hex[:8]}"
    try:
        with _datasets_root(staging):
            _write_dataset(store, dataset_id, layout, data_format)
        namespace = parse_dataset_id(dataset_id)[0]
        with _datasets_root(target_root):
            if namespace is not None and namespace not in list_local_namespaces():
                create_namespace(namespace)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging / dataset_id, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _write_dataset(
    store: TrajectoryStore, dataset_id: str, layout: ObservationLayout, data_format: str
) -> None:
    """Create the dataset from the first block of episodes and add the others to it."""
    with warnings.catch_warnings():
        # Minari nags about author/permalink/eval_env metadata an export cannot know.
        warnings.filterwarnings("ignore", category=UserWarning, module="minari")
        dataset = None
        for buffers in _buffer_blocks(store, layout):
            if dataset is not None:
                dataset.update_dataset_from_buffer(buffers)
                continue
            dataset = minari.create_dataset_from_buffers(
                dataset_id=dataset_id,
                buffer=buffers,
                env=_registered_spec(store.env_id),
                observation_space=layout.source_space,
                action_space=store.action_space,
                ref_min_score=store.metadata.ref_min_score,
                ref_max_score=store.metadata.ref_max_score,
                algorithm_name="ssorl export",
                description=f"Exported by ssorl from {store.path}",
                data_format=data_format,
                jpeg_encoding=False,
            )


def _buffer_blocks(store: TrajectoryStore, layout: ObservationLayout) -> Iterator[list]:
    """The store's episodes as Minari buffers, about BLOCK_STEPS steps (at most about
    BLOCK_BYTES of observations and actions) per list."""
    step_bytes = sum(
        int(np.prod(space.shape)) * np.dtype(space.dtype).itemsize
        for space in (store.observation_space, store.action_space)
    )
    first = 0
    for batch in store.iter_batches(max(1, min(BLOCK_STEPS, BLOCK_BYTES // step_bytes))):
        buffers = []
        for i in range(batch.n_episodes):
            ep = batch.episode(i)
            buffers.append(
                EpisodeBuffer(
                    id=first + i,
                    observations=layout.unflatten(ep.observations),
                    actions=ep.actions,
                    rewards=ep.rewards,
                    terminations=ep.terminations,
                    truncations=ep.truncations,
                    infos={},
                )
            )
        first += batch.n_episodes
        yield buffers


def _action_space(space: gym.Space, where: str) -> gym.spaces.Box:
    """Box actions as the store holds them (float32); any other space is refused by name."""
    if not isinstance(space, gym.spaces.Box):
        raise ImportFormatError(
            f"{where}: action space {space!r} is not supported yet. ssorl learns continuous "
            "Box actions only (its IDM, TD3+BC, IQL, CQL and DT regress actions)."
        )
    return gym.spaces.Box(
        space.low.astype(np.float32), space.high.astype(np.float32), dtype=np.float32
    )


def _registered_spec(env_id: str | None) -> gym.envs.registration.EnvSpec | None:
    """The env's spec when gymnasium knows it (Minari then records the env id)."""
    if not env_id:
        return None
    try:
        return gym.spec(env_id)
    except gym.error.Error:
        return None


def _load(dataset: str | os.PathLike[str]) -> minari.MinariDataset:
    path = Path(dataset)
    if path.is_dir():
        data_dir = path / "data" if (path / "data").is_dir() else path
        try:
            return minari.MinariDataset(data_dir)
        except (OSError, ValueError, KeyError) as error:
            raise ImportFormatError(f"{path}: not a readable Minari dataset ({error}).") from None
    try:
        return minari.load_dataset(str(dataset))
    except (FileNotFoundError, ValueError) as error:
        raise ImportFormatError(
            f"Minari dataset {str(dataset)!r} was not found locally ({error}). Datasets are "
            "looked up under MINARI_DATASETS_PATH (or ~/.minari/datasets); nothing is "
            "downloaded. Pass a dataset directory or a local id (minari list local)."
        ) from None


def _stream(
    data: minari.MinariDataset,
    layout: ObservationLayout,
    provenance: dict[str, Any],
    accept_float32_rounding: bool,
    description: str,
) -> Iterator[EpisodeBatch]:
    """Whole-episode blocks; the rounding check runs after the last one, before the commit
    (the provenance dict gets its record then, as the store reads it at commit)."""
    rounding = Float32Rounding(layout, description) if Float32Rounding.needed(layout) else None
    pending: list[EpisodeBatch] = []
    steps = 0
    for episode in data.iterate_episodes():
        pending.append(_episode_batch(episode, layout, rounding, description))
        steps += pending[-1].n_steps
        if steps >= BLOCK_STEPS:
            yield concat_batches(pending)
            pending, steps = [], 0
    if pending:
        yield concat_batches(pending)
    if rounding is not None:
        provenance["observation_rounding"] = rounding.finish(accept_float32_rounding)


def _episode_batch(
    episode: EpisodeData,
    layout: ObservationLayout,
    rounding: Float32Rounding | None,
    description: str,
) -> EpisodeBatch:
    where = f"{description}, episode {episode.id}"
    observations = layout.flatten(episode.observations, where)
    if rounding is not None:
        observations = rounding.cast(observations, where)
    else:
        observations = observations.astype(layout.store_space.dtype, copy=False)
    return make_episode(
        observations,
        np.asarray(episode.actions),
        np.asarray(episode.rewards),
        np.asarray(episode.terminations),
        np.asarray(episode.truncations),
        source=where,
    )


def _check_dataset_id(dataset_id: str) -> None:
    """Minari ids are `[namespace/]name-vN`; Minari's own parser decides, with our message."""
    try:
        parse_dataset_id(dataset_id)
    except ValueError:
        raise InvalidNameError(
            f"Expected a Minari dataset id like 'namespace/name-v0'. Got {dataset_id!r} instead."
        ) from None
    if ".." in dataset_id or dataset_id.startswith("/"):
        raise InvalidNameError(
            f"Dataset id {dataset_id!r} must not climb out of the datasets root."
        )


@contextmanager
def _datasets_root(root: str | os.PathLike[str] | None) -> Iterator[None]:
    """Point Minari at `root` for the duration of the call (it reads the env var each time)."""
    if root is None:
        yield
        return
    previous = os.environ.get("MINARI_DATASETS_PATH")
    # absolute: Minari joins a relative root onto paths already under it (and then fails)
    os.environ["MINARI_DATASETS_PATH"] = str(Path(root).resolve())
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous
