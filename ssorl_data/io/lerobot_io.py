"""Import of a local LeRobot dataset (v3 layout, state-based) with pyarrow alone.

A LeRobot frame holds an observation and the action taken at it (with `next.reward`
and `next.done`, when recorded, for that action); the observation after an episode's
last action is not recorded. The store keeps T+1 observations per episode, so an
episode of L frames becomes L-1 steps with all L observations: the last frame's
action, reward and done are dropped and its observation is the final one (as the D4RL
importer does without next_observations). The last kept step is terminated when its
`next.done` is set (and `next.truncated`, if recorded, is not), else truncated.
Video and image features are skipped and named; the data files are read record batch
by record batch, so memory stays bounded by a block, not by the dataset.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ssorl_data.episodes import EpisodeBatch
from ssorl_data.errors import ImportFormatError
from ssorl_data.io.lerobot_meta import DataFile, Feature, LeRobotMeta, read_meta
from ssorl_data.io.source import BLOCK_STEPS, ImportSource
from ssorl_data.io.spaces import resolve_spaces

STATE, ACTION = "observation.state", "action"
REWARD, DONE, TRUNCATED = "next.reward", "next.done", "next.truncated"
FRAME_COLUMNS = ("episode_index", "frame_index")
READ_ROWS = 65_536  # rows per record batch read from a data file
OBSERVATION_FLAG = "--observation-key (Python: observation_keys=[...])"
_LIST_TYPES = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
_NUMBER_TYPES = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean)


@dataclass(frozen=True)
class _Plan:
    """What to read from every data file, and into which shapes."""

    description: str
    observation: tuple[Feature, ...]
    action: Feature
    reward: Feature | None
    done: Feature | None
    truncated: Feature | None
    obs_shape: tuple[int, ...]

    @property
    def columns(self) -> list[str]:
        flags = [f.name for f in (self.reward, self.done, self.truncated) if f is not None]
        return [*(f.name for f in self.observation), self.action.name, *flags, *FRAME_COLUMNS]


def open_lerobot(
    root: str | os.PathLike[str],
    env_id: str | None = None,
    observation_keys: Sequence[str] | None = None,
    repo_id: str | None = None,
) -> ImportSource:
    """A local LeRobot v3 dataset directory as an import source (nothing is downloaded).

    `observation_keys` names the feature(s) whose values, flattened and concatenated in
    that order, form the observation (default: `observation.state`). `repo_id` is only
    recorded; by default it is read from the path when the dataset lies in LeRobot's or
    the Hugging Face cache layout.
    """
    root = Path(root)
    meta = read_meta(root)
    description = f"lerobot dataset {str(root)!r}"
    notes: list[str] = []
    observation = _observation_features(meta.features, observation_keys, description, notes)
    action = meta.features.get(ACTION)
    if action is None or not action.numeric:
        raise ImportFormatError(
            f"{description}: needs a numeric feature {ACTION!r} in meta/info.json (the action "
            f"taken at each frame). Found features: {sorted(meta.features)}."
        )
    optional = {key: meta.features.get(key) for key in (REWARD, DONE, TRUNCATED)}
    obs_shape = (
        observation[0].shape
        if len(observation) == 1
        else (sum(feature.size for feature in observation),)
    )
    plan = _Plan(description, observation, action, *optional.values(), obs_shape)
    _check_columns(meta, plan)
    obs_space, act_space = resolve_spaces(env_id, obs_shape, np.float32, action.shape, description)
    lengths = meta.lengths
    skipped = [f.name for f in meta.features.values() if f.visual]
    if skipped:
        notes.append(f"video/image features skipped (ssorl imports state): {', '.join(skipped)}.")
    if optional[REWARD] is None:
        notes.append(f"no {REWARD!r} feature: every reward is imported as 0.")
    if optional[DONE] is None:
        notes.append(f"no {DONE!r} feature: every episode is recorded as truncated.")
    cast = [f"{f.name} ({f.dtype})" for f in observation if f.dtype != "float32"]
    if cast:
        notes.append(f"observation features stored as float32: {', '.join(cast)}.")
    single = int((lengths == 1).sum())
    if single:
        notes.append(f"{single} episode(s) of a single frame hold no step and are skipped.")
    notes.append(
        "each episode's last frame has no following observation: its action, reward and "
        "done are dropped and its observation ends the episode (L frames -> L-1 steps)."
    )
    info = meta.info
    provenance = {
        "source": description,
        "lerobot_codebase_version": info["codebase_version"],
        "lerobot_repo_id": repo_id or repo_id_from_path(root),
        "lerobot_fps": info.get("fps"),
        "lerobot_robot_type": info.get("robot_type"),
        "lerobot_episodes": int(lengths.size),
        "lerobot_frames": int(lengths.sum()),
        "lerobot_observation_features": [f.as_json() for f in observation],
        "lerobot_action_feature": action.as_json(),
        "lerobot_rewards_missing": optional[REWARD] is None,
        "lerobot_terminations_from": optional[DONE].name if optional[DONE] else None,
        "lerobot_skipped_features": skipped,
        "lerobot_last_frame": "dropped (its observation is the episode's final observation)",
    }
    return ImportSource(
        description=description,
        observation_space=obs_space,
        action_space=act_space,
        n_steps=int((lengths - 1).sum()),
        batches=lambda: _stream(meta, plan),
        env_id=env_id,
        provenance=provenance,
        notes=notes,
    )


def repo_id_from_path(root: Path) -> str | None:
    """`user/name` when `root` lies in LeRobot's cache ($HF_LEROBOT_HOME/user/name) or in the
    Hugging Face hub cache (.../datasets--user--name/snapshots/REV); else None."""
    parts = root.resolve().parts
    for part in parts:
        if part.startswith("datasets--") and part.count("--") == 2:
            return "/".join(part.split("--")[1:])
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    home = Path(os.environ.get("HF_LEROBOT_HOME", hf_home / "lerobot")).expanduser().resolve()
    try:
        relative = root.resolve().relative_to(home)
    except ValueError:
        return None
    return relative.as_posix() if len(relative.parts) == 2 else None


def _observation_features(
    features: dict[str, Feature], keys: Sequence[str] | None, description: str, notes: list[str]
) -> tuple[Feature, ...]:
    """The named features, else observation.state, else the only numeric observation.* one."""
    candidates = [
        f.name for f in features.values() if f.name.startswith("observation.") and f.numeric
    ]
    if keys:
        for key in keys:
            if key not in features or not features[key].numeric:
                what = "is not a feature" if key not in features else "is not numeric state"
                raise ImportFormatError(
                    f"{description}: observation key {key!r} {what}. Numeric observation "
                    f"features: {candidates}."
                )
        if len(set(keys)) != len(keys):
            raise ImportFormatError(f"{description}: observation keys {list(keys)} repeat one.")
        return tuple(features[key] for key in keys)
    if STATE in features and features[STATE].numeric:
        others = [name for name in candidates if name != STATE]
        if others:
            notes.append(
                f"observation is {STATE!r}; not imported: {', '.join(others)} (name them with "
                f"{OBSERVATION_FLAG} to include them)."
            )
        return (features[STATE],)
    if len(candidates) == 1:
        notes.append(f"no {STATE!r}: the observation is {candidates[0]!r}.")
        return (features[candidates[0]],)
    visual = [f.name for f in features.values() if f.visual]
    if not candidates:
        raise ImportFormatError(
            f"{description}: has no numeric observation feature (no {STATE!r}); ssorl imports "
            f"state-based datasets, and its video/image features {visual} are not read."
        )
    raise ImportFormatError(
        f"{description}: has no {STATE!r} but several numeric observation features "
        f"{candidates}. Name the one(s) that form the observation with {OBSERVATION_FLAG}."
    )


def _check_columns(meta: LeRobotMeta, plan: _Plan) -> None:
    """Every data file has every column we read (from its footer, before any store exists)."""
    for data_file in meta.files:
        try:
            present = set(pq.read_schema(data_file.path).names)
        except (OSError, pa.ArrowException) as error:
            raise ImportFormatError(
                f"{data_file.path}: not a readable Parquet file ({error})."
            ) from None
        missing = [name for name in plan.columns if name not in present]
        if missing:
            raise ImportFormatError(
                f"{data_file.path}: missing column(s) {missing} that meta/info.json declares "
                f"(or that every LeRobot data file has). Found: {sorted(present)}."
            )


def _stream(meta: LeRobotMeta, plan: _Plan) -> Iterator[EpisodeBatch]:
    """Whole-episode batches of about BLOCK_STEPS steps, file by file, record batch by batch."""
    pending: list[dict[str, np.ndarray]] = []
    steps = 0
    for data_file in meta.files:
        for frames in _file_episodes(data_file, plan):
            pending.append(frames)
            steps += frames["episode_index"].size
            if steps >= BLOCK_STEPS:
                yield from _batches(pending, plan, data_file)
                pending, steps = [], 0
        yield from _batches(pending, plan, data_file)  # never across files: errors name one
        pending, steps = [], 0


def _batches(pending: list[dict[str, np.ndarray]], plan: _Plan, data_file: DataFile):
    """The pending runs as one batch, unless they hold no step (single-frame episodes)."""
    if pending:
        batch = _to_batch(_concat(pending), plan, data_file)
        if batch.n_episodes:
            yield batch


def _file_episodes(data_file: DataFile, plan: _Plan) -> Iterator[dict[str, np.ndarray]]:
    """The file's frames as runs of whole episodes, checked against meta/episodes."""
    where = str(data_file.path)
    checked = 0  # episodes of this file checked so far
    carry: dict[str, np.ndarray] | None = None  # the frames of an episode not yet complete
    try:
        reader = pq.ParquetFile(data_file.path)
        for record_batch in reader.iter_batches(batch_size=READ_ROWS, columns=plan.columns):
            frames = _frames(record_batch, plan, where)
            frames = frames if carry is None else _concat([carry, frames])
            episode = frames["episode_index"]
            last_start = int(np.flatnonzero(np.diff(episode, prepend=episode[0] - 1))[-1])
            if last_start:
                complete = {key: values[:last_start] for key, values in frames.items()}
                checked = _check_episodes(complete, data_file, checked)
                yield complete
            carry = {key: values[last_start:] for key, values in frames.items()}
    except (OSError, pa.ArrowException) as error:
        raise ImportFormatError(f"{where}: reading failed ({error}).") from None
    if carry is not None:
        checked = _check_episodes(carry, data_file, checked)
        yield carry
    if checked != data_file.episodes.size:
        raise ImportFormatError(
            f"{where}: holds {checked} episodes but meta/episodes places "
            f"{data_file.episodes.size} in it."
        )


def _frames(record_batch: pa.RecordBatch, plan: _Plan, where: str) -> dict[str, np.ndarray]:
    """The columns we read as numpy arrays: observation [n, *obs_shape], action [n, *act]."""
    n = record_batch.num_rows
    parts = [_values(record_batch, f, where).reshape(n, -1) for f in plan.observation]
    observation = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
    frames = {
        "observation": observation.reshape(n, *plan.obs_shape).astype(np.float32, copy=False),
        "action": _values(record_batch, plan.action, where).astype(np.float32, copy=False),
        "reward": np.zeros(n, np.float32),
        "done": np.zeros(n, bool),
        "truncated": np.zeros(n, bool),
    }
    for key, feature in (("reward", plan.reward), ("done", plan.done)):
        if feature is not None:
            frames[key] = _values(record_batch, feature, where).reshape(n).astype(frames[key].dtype)
    if plan.truncated is not None:
        frames["truncated"] = _values(record_batch, plan.truncated, where).reshape(n).astype(bool)
    for name in FRAME_COLUMNS:
        scalar = Feature(name, "int64", (1,), None)
        frames[name] = _values(record_batch, scalar, where).reshape(n).astype(np.int64)
    return frames


def _values(record_batch: pa.RecordBatch, feature: Feature, where: str) -> np.ndarray:
    """One column as [n, *shape] (a shape (1,) feature is stored as plain values)."""
    array = record_batch.column(feature.name)
    while True:
        if array.null_count:
            raise ImportFormatError(
                f"{where}: column {feature.name!r} has missing (null) values; every frame "
                "needs a value."
            )
        if not any(test(array.type) for test in _LIST_TYPES):
            break
        array = array.flatten()
    if not any(test(array.type) for test in _NUMBER_TYPES):
        raise ImportFormatError(
            f"{where}: column {feature.name!r} holds {array.type} values; expected numbers."
        )
    values = array.to_numpy(zero_copy_only=False)
    n = record_batch.num_rows
    if values.size != n * feature.size:
        raise ImportFormatError(
            f"{where}: column {feature.name!r} holds {values.size / max(n, 1):g} values per "
            f"frame but meta/info.json declares shape {list(feature.shape)}."
        )
    return values.reshape(n, *feature.shape)


def _check_episodes(frames: dict[str, np.ndarray], data_file: DataFile, checked: int) -> int:
    """The run holds the next episodes of meta/episodes, whole, with frame_index 0..L-1."""
    episode = frames["episode_index"]
    starts = np.flatnonzero(np.diff(episode, prepend=episode[0] - 1))
    lengths = np.diff(np.append(starts, episode.size))
    want_episodes = data_file.episodes[checked : checked + starts.size]
    want_lengths = data_file.lengths[checked : checked + starts.size]
    for i, start in enumerate(starts.tolist()):
        if i >= want_episodes.size or episode[start] != want_episodes[i]:
            expected = int(want_episodes[i]) if i < want_episodes.size else "none"
            raise ImportFormatError(
                f"{data_file.path}: holds episode {int(episode[start])} where meta/episodes "
                f"expects episode {expected}; the data and its metadata disagree."
            )
        if lengths[i] != want_lengths[i]:
            raise ImportFormatError(
                f"{data_file.path}, episode {int(episode[start])}: {int(lengths[i])} frames, "
                f"but meta/episodes gives length {int(want_lengths[i])}."
            )
    frame_index = frames["frame_index"]
    expected_index = np.arange(episode.size) - np.repeat(starts, lengths)
    wrong = np.flatnonzero(frame_index != expected_index)
    if wrong.size:
        row = int(wrong[0])
        raise ImportFormatError(
            f"{data_file.path}, episode {int(episode[row])}: frame_index {int(frame_index[row])} "
            f"where {int(expected_index[row])} was expected; frames must be in order."
        )
    return checked + int(starts.size)


def _to_batch(frames: dict[str, np.ndarray], plan: _Plan, data_file: DataFile) -> EpisodeBatch:
    """Whole episodes of L frames as episodes of L-1 steps and L observations."""
    episode = frames["episode_index"]
    starts = np.flatnonzero(np.diff(episode, prepend=episode[0] - 1))
    frames_per_episode = np.diff(np.append(starts, episode.size))
    last_frame = np.append(starts[1:], episode.size) - 1
    keep_step = np.ones(episode.size, bool)
    keep_step[last_frame] = False
    done = frames["done"]
    last_step = last_frame[frames_per_episode > 1] - 1
    early = done & keep_step
    early[last_step] = False
    if early.any():
        row = int(np.flatnonzero(early)[0])
        raise ImportFormatError(
            f"{data_file.path}, episode {int(episode[row])}: next.done is set at frame "
            f"{int(frames['frame_index'][row])}, before the episode's end; an ssorl episode "
            "ends at its only done step. Split such episodes before importing."
        )
    terminated = np.zeros(episode.size, bool)
    terminated[last_step] = done[last_step] & ~frames["truncated"][last_step]
    truncated = np.zeros(episode.size, bool)
    truncated[last_step] = ~terminated[last_step]
    keep_obs = np.repeat(frames_per_episode > 1, frames_per_episode)
    return EpisodeBatch(
        observations=frames["observation"][keep_obs],
        actions=frames["action"][keep_step],
        rewards=frames["reward"][keep_step],
        terminations=terminated[keep_step],
        truncations=truncated[keep_step],
        lengths=(frames_per_episode[frames_per_episode > 1] - 1).astype(np.int64),
    )


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
