"""Errors of ssorl_train.

Each subclasses `ssorl_data.errors.SsorlError` and the matching built-in, so callers
can catch them plainly; messages say what was wrong, what was got, and what to do.
"""

from __future__ import annotations

from ssorl_data.errors import SsorlError


class EmptyTrainingDataError(SsorlError, ValueError):
    """The chosen mode, split and filters leave no step to train on."""


class MissingRelabelError(SsorlError, ValueError):
    """Semi-supervised training was asked for without proxy actions."""


class TrainingDataError(SsorlError, ValueError):
    """Arrays given to build training data are inconsistent (shapes, dtypes, ranges)."""


class CheckpointError(SsorlError, ValueError):
    """A checkpoint is missing, incomplete, or does not match the run resuming it."""


class UnknownAlgorithmError(SsorlError, KeyError):
    """An algorithm name that ssorl_train does not provide."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class PipelineConfigError(SsorlError, ValueError):
    """A pipeline config (`ssorl run CONFIG.toml`) has an unknown, missing or invalid key."""


class AlgorithmConfigError(SsorlError, ValueError):
    """An algorithm config field (`--set KEY=VALUE`, `[train] overrides`) is unknown or its
    value does not parse."""


class MissingSplitError(SsorlError, ValueError):
    """A mode that hides actions (labelled-only, semi-supervised) was asked for without a
    split saying which episodes keep them."""


class TrainingCacheError(SsorlError, OSError):
    """A training cache directory cannot be used (a file in its place, a build that does
    not open)."""
