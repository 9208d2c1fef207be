"""On-disk layout of an ssorl store: paths, format tag and defaults, in one place."""

from __future__ import annotations

FORMAT = "ssorl-store"
FORMAT_VERSION = 1

OBSERVATIONS = "observations"
ACTIONS = "steps/actions"
ACTION_MASK = "steps/action_mask"
REWARDS = "steps/rewards"
TERMINATIONS = "steps/terminations"
TRUNCATIONS = "steps/truncations"
STEP_START = "episodes/step_start"
LENGTH = "episodes/length"
RETURN = "episodes/return"
LABELLED = "episodes/labelled"

STEP_ARRAYS = (ACTIONS, ACTION_MASK, REWARDS, TERMINATIONS, TRUNCATIONS)
EPISODE_ARRAYS = (STEP_START, LENGTH, RETURN, LABELLED)

SPLITS = "splits"
RELABELS = "relabels"

LOCK_FILE = ".ssorl-writer.lock"

DEFAULT_CHUNK_STEPS = 32_768
DEFAULT_EPISODE_CHUNK = 65_536
DEFAULT_COMPRESSION_LEVEL = 3
