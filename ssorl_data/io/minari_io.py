"""Minari datasets: import by id (from MINARI_DATASETS_PATH) or by path, and export.

Everything goes through the `minari` package's own API, so what we write is what
`minari.load_dataset` reads.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
from minari.data_collector import EpisodeBuffer
from minari.dataset.episode_data import EpisodeData
from minari.dataset.minari_dataset import parse_dataset_id

from ssorl_data.episodes import EpisodeBatch, concat_batches, make_episode
from ssorl_data.errors import ImportFormatError, InvalidNameError
from ssorl_data.io.source import ImportSource
from ssorl_data.io.spaces import as_store_observation_space
from ssorl_data.metadata import check_box
from ssorl_data.store import TrajectoryStore

BLOCK_STEPS = 131_072


def open_minari(dataset: str | os.PathLike[str]) -> ImportSource:
    """A Minari dataset as an import source: an existing directory is a path, else an id."""
    data = _load(dataset)
    description = f"minari dataset {str(dataset)!r}"
    try:
        obs_space = as_store_observation_space(check_box(data.observation_space, "observation"))
        act_space = check_box(data.action_space, "action")
    except ValueError as error:
        raise ImportFormatError(f"{description}: {error}") from None
    metadata = data.storage.metadata
    env_spec = data.spec.env_spec if data.spec is not None else None
    return ImportSource(
        description=description,
        observation_space=obs_space,
        action_space=act_space,
        n_steps=int(data.total_steps),
        batches=lambda: _stream(data, obs_space.dtype, description),
        env_id=env_spec.id if env_spec is not None else None,
        ref_min_score=metadata.get("ref_min_score"),
        ref_max_score=metadata.get("ref_max_score"),
        provenance={"source": description, "minari_dataset_id": metadata.get("dataset_id")},
    )


def export_minari(
    store: TrajectoryStore, dataset_id: str, root: str | os.PathLike[str] | None = None
) -> Path:
    """Write the store as Minari dataset `dataset_id` under `root` (default: Minari's own).

    Steps without a recorded action are exported as NaN actions, which our importer
    reads back as missing. Minari's API takes all episodes in memory at once.
    """
    _check_dataset_id(dataset_id)
    if store.n_episodes == 0:
        raise ImportFormatError(f"{store.path}: has no episodes; Minari needs at least one.")
    buffers = []
    for batch in store.iter_batches():
        for i in range(batch.n_episodes):
            ep = batch.episode(i)
            buffers.append(
                EpisodeBuffer(
                    id=len(buffers),
                    observations=ep.observations,
                    actions=ep.actions,
                    rewards=ep.rewards,
                    terminations=ep.terminations,
                    truncations=ep.truncations,
                    infos={},
                )
            )
    with _datasets_root(root), warnings.catch_warnings():
        # Minari nags about author/permalink/eval_env metadata an export cannot know.
        warnings.filterwarnings("ignore", category=UserWarning, module="minari")
        try:
            dataset = minari.create_dataset_from_buffers(
                dataset_id=dataset_id,
                buffer=buffers,
                env=_registered_spec(store.env_id),
                observation_space=store.observation_space,
                action_space=store.action_space,
                ref_min_score=store.metadata.ref_min_score,
                ref_max_score=store.metadata.ref_max_score,
                algorithm_name="ssorl export",
                description=f"Exported by ssorl from {store.path}",
            )
        except BaseException:
            _remove_partial(dataset_id)
            raise
        return Path(dataset.storage.data_path).parent


def _registered_spec(env_id: str | None) -> gym.envs.registration.EnvSpec | None:
    """The env's spec when gymnasium knows it (Minari then records the env id)."""
    if not env_id:
        return None
    try:
        return gym.spec(env_id)
    except gym.error.Error:
        return None


def _remove_partial(dataset_id: str) -> None:
    """Remove what a failed export left (Minari creates the directory first)."""
    with contextlib.suppress(Exception):
        minari.delete_dataset(dataset_id)


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


def _stream(data: minari.MinariDataset, obs_dtype, description: str) -> Iterator[EpisodeBatch]:
    pending: list[EpisodeBatch] = []
    steps = 0
    for episode in data.iterate_episodes():
        pending.append(_episode_batch(episode, obs_dtype, description))
        steps += pending[-1].n_steps
        if steps >= BLOCK_STEPS:
            yield concat_batches(pending)
            pending, steps = [], 0
    if pending:
        yield concat_batches(pending)


def _episode_batch(episode: EpisodeData, obs_dtype, description: str) -> EpisodeBatch:
    observations = np.asarray(episode.observations)
    if observations.dtype.kind not in "fiu":
        raise ImportFormatError(
            f"{description}, episode {episode.id}: observations are {observations.dtype}; "
            "only Box observations can be imported."
        )
    return make_episode(
        observations.astype(obs_dtype, copy=False),
        np.asarray(episode.actions),
        np.asarray(episode.rewards),
        np.asarray(episode.terminations),
        np.asarray(episode.truncations),
        source=f"{description}, episode {episode.id}",
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
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous
