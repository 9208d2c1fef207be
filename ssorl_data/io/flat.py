"""Import of flat step arrays in the D4RL layout: HDF5 files, NPZ files and plain dicts.

Keys: `observations` [N, ...], `rewards` [N], `terminals` [N] (alias `terminations`),
optional `timeouts` [N] (alias `truncations`), optional `actions` [N, ...] (absent: the
data is action-free; NaN rows: those steps are), optional `next_observations`
[N, ...] and `infos/*` (not stored). Episodes end where a flag is set.

`terminals` is required: without it every episode would be imported as cut off,
never terminated, which changes every value target. Data that really has no
terminal states is imported with `no_terminals=True` (CLI `--no-terminals`); its
episodes then end only at `timeouts`, and the import's provenance records the flag.
Without `timeouts` (common in D4RL-era files) episodes end only at `terminals` and
at the end of the data (that last episode is marked truncated): an episode cut by
a time limit runs on into the next one. ssorl does not guess time limits from the
env (as D4RL's `qlearning_dataset` did); add a `timeouts` key if the data has them.
The import's notes say so, and its provenance records which keys ended episodes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import numpy as np

from ssorl_data.episode_index import EpisodeIndex
from ssorl_data.episodes import EpisodeBatch
from ssorl_data.errors import ImportFormatError
from ssorl_data.io.source import BLOCK_STEPS, ImportSource
from ssorl_data.io.spaces import resolve_spaces
from ssorl_data.metadata import space_from_json
from ssorl_data.reference_scores import reference_returns

FLAG_KEYS = {
    "terminations": ("terminals", "terminations"),
    "truncations": ("timeouts", "truncations"),
}


def open_d4rl_hdf5(
    path: str | os.PathLike[str], env_id: str | None = None, *, no_terminals: bool = False
) -> ImportSource:
    """An HDF5 file in the D4RL layout as an import source (read in blocks, never whole).

    `no_terminals=True` accepts a file without `terminals` (see the module docstring).
    """
    path = Path(path)
    if not path.is_file():
        raise ImportFormatError(f"{path}: no such file.")
    try:
        with h5py.File(path, "r") as f:
            stored_env = _hdf5_env_id(f)
            keys = _flat_keys(f)
            source = _describe(
                {k: f[k] for k in keys},
                str(path),
                env_id or stored_env,
                lambda plan: _stream_hdf5(path, plan),
                stored_spaces=None if env_id else _hdf5_spaces(f),
                no_terminals=no_terminals,
            )
            if "metadata" in f:
                source.provenance["source_metadata"] = _hdf5_metadata(f["metadata"])
            return source
    except OSError as error:
        raise ImportFormatError(
            f"{path}: not a readable HDF5 file ({error}). Check that the file is complete "
            "and really HDF5 (h5py.File must open it)."
        ) from None


def open_npz(
    path: str | os.PathLike[str], env_id: str | None = None, *, no_terminals: bool = False
) -> ImportSource:
    """An NPZ file of flat arrays (same keys as D4RL). Loaded with allow_pickle=False."""
    path = Path(path)
    try:
        data = dict(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as error:
        raise ImportFormatError(f"{path}: not a readable NPZ file ({error}).") from None
    return from_arrays(data, env_id=env_id, description=str(path), no_terminals=no_terminals)


def from_arrays(
    arrays: Mapping[str, Any],
    env_id: str | None = None,
    description: str = "arrays",
    *,
    no_terminals: bool = False,
) -> ImportSource:
    """A dict of flat numpy arrays (D4RL keys) as an import source."""
    keys = _flat_keys(arrays)
    data = {k: np.asarray(arrays[k]) for k in keys}
    return _describe(
        data, description, env_id, lambda plan: _stream(data, plan), no_terminals=no_terminals
    )


def _stream_hdf5(path: Path, plan: _Plan) -> Iterator[EpisodeBatch]:
    """Open the file afresh for each pass; a read that fails mid-way names the file."""
    try:
        with h5py.File(path, "r") as f:
            yield from _stream(f, plan)
    except OSError as error:
        raise ImportFormatError(
            f"{path}: reading failed ({error}). The file is probably truncated or corrupt."
        ) from None


def _flat_keys(arrays: Mapping[str, Any]) -> list[str]:
    return [k for k in arrays if not k.startswith(("metadata", "infos"))]


def _describe(
    arrays: Mapping[str, Any],
    description: str,
    env_id: str | None,
    stream: Callable[[_Plan], Iterator[EpisodeBatch]],
    stored_spaces: tuple[gym.spaces.Box, gym.spaces.Box] | None = None,
    no_terminals: bool = False,
) -> ImportSource:
    """Check keys, lengths, dtypes and shapes up front; return the streaming source.

    `stored_spaces` (written by our own exporter) win over the env's when their
    shapes match the data, so a round trip keeps the exact spaces.
    """
    for key in ("observations", "rewards"):
        if key not in arrays:
            raise ImportFormatError(
                f"{description}: missing required key {key!r}. Found keys: {sorted(arrays)}."
            )
    flag_keys = _episode_end_keys(arrays, description, no_terminals)
    n = arrays["rewards"].shape[0]
    step_keys = [
        "observations",
        "rewards",
        "actions",
        "next_observations",
        *filter(None, flag_keys.values()),
    ]
    for key in step_keys:
        if key in arrays and arrays[key].shape[0] != n:
            raise ImportFormatError(
                f"{description}: key {key!r} has {arrays[key].shape[0]} rows but 'rewards' has "
                f"{n}. Every step key needs one row per step."
            )
    _check_kind(arrays, "rewards", "fiu", description, ndim=1)
    _check_kind(arrays, "observations", "fiu", description)
    if "actions" in arrays:
        _check_kind(arrays, "actions", "fiu", description)
    for key in filter(None, flag_keys.values()):
        _check_kind(arrays, key, "biu", description, ndim=1)
    obs = arrays["observations"]
    if "next_observations" in arrays and arrays["next_observations"].shape[1:] != obs.shape[1:]:
        raise ImportFormatError(
            f"{description}: 'next_observations' rows have shape "
            f"{arrays['next_observations'].shape[1:]} but 'observations' rows {obs.shape[1:]}."
        )
    act_shape = tuple(arrays["actions"].shape[1:]) if "actions" in arrays else None
    obs_space, act_space = resolve_spaces(
        env_id, tuple(obs.shape[1:]), obs.dtype, act_shape, description
    )
    if stored_spaces is not None and (
        stored_spaces[0].shape == obs_space.shape and stored_spaces[1].shape == act_space.shape
    ):
        obs_space, act_space = stored_spaces
    notes = []
    if "next_observations" not in arrays:
        notes.append(
            "no 'next_observations': the final observation of each episode is unknown, so each "
            "episode's last step is dropped (as D4RL's qlearning_dataset does)."
        )
    if "actions" not in arrays:
        notes.append("no 'actions': every episode is imported action-free.")
    if no_terminals:
        notes.append(
            "no 'terminals' (--no-terminals): no step is marked terminated; every episode "
            "ends as truncated, at 'timeouts' or at the end of the data."
        )
    elif flag_keys["truncations"] is None:
        notes.append(
            "no 'timeouts': episodes end only at 'terminals' and at the end of the data, so an "
            "episode cut by a time limit runs on into the next one. Add a 'timeouts' key if "
            "the data has time limits."
        )
    refs = reference_returns(env_id)
    plan = _Plan(
        flag_keys["terminations"],
        flag_keys["truncations"],
        "actions" in arrays,
        "next_observations" in arrays,
        obs_space.dtype,
        act_space.shape,
    )
    return ImportSource(
        description=description,
        observation_space=obs_space,
        action_space=act_space,
        n_steps=int(n),
        batches=lambda: stream(plan),
        env_id=env_id,
        ref_min_score=refs[0] if refs else None,
        ref_max_score=refs[1] if refs else None,
        provenance={
            "source": description,
            "no_terminals": no_terminals,
            "episode_end_keys": flag_keys,
        },
        notes=notes,
    )


def _episode_end_keys(
    arrays: Mapping[str, Any], description: str, no_terminals: bool
) -> dict[str, str | None]:
    """The keys holding terminations and truncations; refuse data without terminals unless told."""
    found = {name: next((k for k in keys if k in arrays), None) for name, keys in FLAG_KEYS.items()}
    if found["terminations"] is None and not no_terminals:
        raise ImportFormatError(
            f"{description}: missing key 'terminals' (or 'terminations'): without it no episode "
            "could be marked as terminated, which changes every value target. If the data "
            "really has no terminal states, pass --no-terminals (Python: no_terminals=True). "
            f"Found keys: {sorted(arrays)}."
        )
    if found["terminations"] is not None and no_terminals:
        raise ImportFormatError(
            f"{description}: --no-terminals (no_terminals=True) was given, but the data has the "
            f"key {found['terminations']!r}. Drop the flag to import its terminations."
        )
    if found["terminations"] is None and found["truncations"] is None:
        raise ImportFormatError(
            f"{description}: with --no-terminals episodes end at 'timeouts' (or 'truncations'), "
            f"and the data has neither. Found keys: {sorted(arrays)}."
        )
    return found


class _Plan:
    """How to read a checked source: which keys hold what."""

    def __init__(self, term_key, trunc_key, has_actions, has_next, obs_dtype, act_shape):
        self.term_key, self.trunc_key = term_key, trunc_key
        self.has_actions, self.has_next = has_actions, has_next
        self.obs_dtype, self.act_shape = np.dtype(obs_dtype), tuple(act_shape)


def _stream(arrays: Mapping[str, Any], plan: _Plan) -> Iterator[EpisodeBatch]:
    """Whole-episode batches of about BLOCK_STEPS steps, read with one slice per key."""
    n = arrays["rewards"].shape[0]
    term = _flags(arrays, plan.term_key, n)
    trunc = _flags(arrays, plan.trunc_key, n)
    ends = np.flatnonzero(term | trunc)
    if n and (ends.size == 0 or ends[-1] != n - 1):
        trunc[n - 1] = True  # the data ends mid-episode: that episode was truncated
        ends = np.append(ends, n - 1)
    lo = 0
    while lo < n:
        hi = int(ends[min(np.searchsorted(ends, lo + BLOCK_STEPS - 1), ends.size - 1)]) + 1
        yield _block(arrays, plan, lo, hi, term[lo:hi], trunc[lo:hi], ends)
        lo = hi


def _block(arrays, plan: _Plan, lo: int, hi: int, term, trunc, ends) -> EpisodeBatch:
    """Steps [lo, hi) (whole episodes) as a batch with T+1 observations per episode."""
    local_ends = ends[(ends >= lo) & (ends < hi)] - lo
    lengths = np.diff(np.concatenate(([-1], local_ends))).astype(np.int64)
    obs = np.asarray(arrays["observations"][lo:hi]).astype(plan.obs_dtype, copy=False)
    rewards = np.asarray(arrays["rewards"][lo:hi]).astype(np.float32, copy=False)
    if plan.has_actions:
        actions = np.asarray(arrays["actions"][lo:hi]).astype(np.float32, copy=False)
    else:
        actions = np.full((hi - lo, *plan.act_shape), np.nan, np.float32)
    if plan.has_next:
        final = np.asarray(arrays["next_observations"][lo:hi][local_ends]).astype(plan.obs_dtype)
        index = EpisodeIndex.from_lengths(lengths)
        observations = np.empty((hi - lo + lengths.size, *obs.shape[1:]), plan.obs_dtype)
        observations[index.obs_rows()] = obs
        observations[index.obs_stop - 1] = final
        return EpisodeBatch(observations, actions, rewards, term.copy(), trunc.copy(), lengths)
    # Without next observations each episode's last observation is the last step's own
    # observation: keep every observation row, drop the last step, mark it truncated.
    keep_step = np.ones(hi - lo, bool)
    keep_step[local_ends] = False
    new_trunc = trunc.copy()
    new_term = term.copy()
    new_trunc[local_ends[lengths > 1] - 1] = True
    keep_episode = lengths > 1
    keep_obs = np.repeat(keep_episode, lengths)
    return EpisodeBatch(
        observations=obs[keep_obs],
        actions=actions[keep_step],
        rewards=rewards[keep_step],
        terminations=new_term[keep_step],
        truncations=new_trunc[keep_step],
        lengths=lengths[keep_episode] - 1,
    )


def _flags(arrays, key: str | None, n: int) -> np.ndarray:
    if key is None:
        return np.zeros(n, bool)
    return np.asarray(arrays[key][:]).astype(bool)


def _check_kind(arrays, key: str, kinds: str, description: str, ndim: int | None = None) -> None:
    array = arrays[key]
    if array.dtype.kind not in kinds:
        raise ImportFormatError(
            f"{description}: key {key!r} has dtype {array.dtype}; expected a numeric array."
        )
    if ndim is not None and len(array.shape) != ndim:
        raise ImportFormatError(
            f"{description}: key {key!r} has shape {array.shape}; expected {ndim}-D."
        )
    if ndim is None and len(array.shape) < 2:
        raise ImportFormatError(
            f"{description}: key {key!r} has shape {array.shape}; expected [steps, ...] (2-D+)."
        )


def _hdf5_env_id(f: h5py.File) -> str | None:
    for where in (f.attrs, f.get("metadata", {})):
        if "env_id" in where:
            value = where["env_id"]
            value = value[()] if isinstance(value, h5py.Dataset) else value
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def _hdf5_spaces(f: h5py.File) -> tuple[gym.spaces.Box, gym.spaces.Box] | None:
    """Spaces recorded by `export_d4rl_hdf5` as JSON under metadata/, if any."""
    group = f.get("metadata")
    if group is None or "observation_space" not in group or "action_space" not in group:
        return None
    spaces = []
    for key in ("observation_space", "action_space"):
        text = group[key][()]
        space = space_from_json(json.loads(text.decode() if isinstance(text, bytes) else text))
        if not isinstance(space, gym.spaces.Box):
            return None
        spaces.append(space)
    return spaces[0], spaces[1]


def _hdf5_metadata(group: h5py.Group) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in group.items():
        if isinstance(item, h5py.Dataset) and item.shape == ():
            value = item[()]
            out[key] = value.decode() if isinstance(value, bytes) else value.item()
    return out
