"""The store's group attributes as a typed, validated record."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from minari.serialization import deserialize_space, serialize_space

from ssorl_data.errors import StoreFormatError
from ssorl_data.layout import FORMAT, FORMAT_VERSION


def space_to_json(space: gym.Space) -> dict[str, Any]:
    """Serialise a gymnasium space the way Minari does, as a JSON object."""
    return json.loads(serialize_space(space))


def space_from_json(data: dict[str, Any]) -> gym.Space:
    """Inverse of `space_to_json`."""
    return deserialize_space(json.dumps(data))


def check_box(space: gym.Space, what: str) -> gym.spaces.Box:
    """The store holds Box spaces only: arrays of fixed shape."""
    if not isinstance(space, gym.spaces.Box):
        raise StoreFormatError(
            f"Expected a Box {what} space (fixed-shape arrays). Got {space!r} instead. "
            "Flatten Dict/Tuple spaces with gymnasium.spaces.flatten_space first."
        )
    if what == "observation" and space.dtype not in (np.float32, np.uint8):
        raise StoreFormatError(
            f"Expected a float32 or uint8 observation space. Got dtype {space.dtype} instead."
        )
    return space


@dataclass(frozen=True)
class StoreMetadata:
    """What a store says about itself; `n_steps`/`n_episodes` are the committed sizes.

    The `chunk_steps` attribute is not read back: the arrays' chunk shape is the
    one source of the chunk size (`TrajectoryStore.chunk_steps`). `every_chunk_written`
    is true for stores whose writer stores every chunk, even one of fill values only:
    in them an absent chunk inside the committed sizes is lost data. Stores made
    before ssorl wrote it skip absent chunks that may hold fill values only.
    """

    observation_space: gym.spaces.Box
    action_space: gym.spaces.Box
    n_steps: int = 0
    n_episodes: int = 0
    env_id: str | None = None
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    created_by: str = ""
    created_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    every_chunk_written: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "n_steps": self.n_steps,
            "n_episodes": self.n_episodes,
            "env_id": self.env_id,
            "observation_space": space_to_json(self.observation_space),
            "action_space": space_to_json(self.action_space),
            "ref_min_score": self.ref_min_score,
            "ref_max_score": self.ref_max_score,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "extra": self.extra,
            "every_chunk_written": self.every_chunk_written,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> StoreMetadata:
        """The record in the group attributes of the store at `where`, validated."""
        fmt, version = data.get("format"), data.get("format_version")
        if fmt != FORMAT:
            raise StoreFormatError(
                f"{where}: expected a group with format={FORMAT!r}. Got {fmt!r} instead. "
                "Create a store with `ssorl data import`."
            )
        if version != FORMAT_VERSION:
            raise StoreFormatError(
                f"{where}: this ssorl reads store format_version {FORMAT_VERSION}. Got "
                f"{version!r}. Install the ssorl release that wrote it, export it with "
                "`ssorl data export --format d4rl`, and import that file here."
            )
        file = f"{where}/zarr.json"
        return cls(
            observation_space=_space(data, "observation_space", file),
            action_space=_space(data, "action_space", file),
            n_steps=committed_size(data, "n_steps", file),
            n_episodes=committed_size(data, "n_episodes", file),
            env_id=data.get("env_id"),
            ref_min_score=data.get("ref_min_score"),
            ref_max_score=data.get("ref_max_score"),
            created_by=data.get("created_by", ""),
            created_at=data.get("created_at", ""),
            extra=dict(data.get("extra", {})),
            every_chunk_written=data.get("every_chunk_written") is True,
        )


EDITED = (
    "The file was edited or damaged outside ssorl: restore it from a backup, or import the "
    "store's source again into a new store (`ssorl data import SOURCE NEW_STORE`)."
)


def committed_size(data: dict[str, Any], key: str, file: str) -> int:
    """Attribute `key` of `file` as a size: a non-negative integer, or a StoreFormatError."""
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StoreFormatError(
            f"{file}: expected attribute {key!r} to be a non-negative integer. Got {value!r} "
            f"instead. {EDITED}"
        )
    return value


def _space(data: dict[str, Any], key: str, file: str) -> gym.spaces.Box:
    what = key.removesuffix("_space")
    try:
        space = space_from_json(data[key])
    except (KeyError, TypeError, ValueError, NotImplementedError) as error:
        raise StoreFormatError(
            f"{file}: attribute {key!r} is not a serialised gymnasium space "
            f"({type(error).__name__}: {error}). {EDITED}"
        ) from None
    return check_box(space, what)
