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
SPLIT_VISIBLE = "visible"  # inside splits/<name>/
RELABEL_ACTIONS = "actions"  # inside relabels/<name>/
RELABEL_UNCERTAINTY = "uncertainty"
RELABEL_DONE = "done"  # [n_chunks] bool, chunk size 1: one file per finished chunk

# A split or relabel group is used only once its `status` attribute says so.
STATUS_WRITING = "writing"
STATUS_PARTIAL = "partial"
STATUS_COMPLETE = "complete"


def split_path(name: str) -> str:
    """Group path of split `name` (validate `name` with names.check_name first)."""
    return f"{SPLITS}/{name}"


def relabel_path(name: str) -> str:
    """Group path of relabel run `name` (validate `name` with names.check_name first)."""
    return f"{RELABELS}/{name}"


LOCK_FILE = ".ssorl-writer.lock"

DEFAULT_CHUNK_STEPS = 32_768
DEFAULT_EPISODE_CHUNK = 65_536
DEFAULT_COMPRESSION_LEVEL = 3
