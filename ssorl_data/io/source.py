"""What every importer produces: spaces, provenance and a stream of episode batches."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from ssorl_data.episodes import EpisodeBatch

# steps per batch that an importer hands to the store, or an exporter writes (whole episodes,
# so about this many): bounds what one batch holds in memory
BLOCK_STEPS = 131_072


@dataclass
class ImportSource:
    """An importable dataset; `batches()` streams it as whole-episode batches."""

    description: str  # the file path or dataset id, for messages
    observation_space: gym.spaces.Box
    action_space: gym.spaces.Box
    n_steps: int  # for the progress bar
    batches: Callable[[], Iterator[EpisodeBatch]]
    env_id: str | None = None
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the user should know (dropped keys...)
