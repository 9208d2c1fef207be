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
    one source of the chunk size (`TrajectoryStore.chunk_steps`).
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
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> StoreMetadata:
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
        return cls(
            observation_space=check_box(space_from_json(data["observation_space"]), "observation"),
            action_space=check_box(space_from_json(data["action_space"]), "action"),
            n_steps=int(data["n_steps"]),
            n_episodes=int(data["n_episodes"]),
            env_id=data.get("env_id"),
            ref_min_score=data.get("ref_min_score"),
            ref_max_score=data.get("ref_max_score"),
            created_by=data.get("created_by", ""),
            created_at=data.get("created_at", ""),
            extra=dict(data.get("extra", {})),
        )
