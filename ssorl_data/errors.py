"""Errors of ssorl_data.

Each subclasses the matching built-in so callers can catch them plainly, and each
message says what was wrong, where (file, key, episode) and what to do.
"""

from __future__ import annotations


class SsorlError(Exception):
    """Base of every error raised on purpose by ssorl."""


class StoreFormatError(SsorlError, ValueError):
    """The path is not an ssorl store, or a store of another format version."""


class StoreNotFoundError(SsorlError, FileNotFoundError):
    """No store exists at the given path."""


class StoreExistsError(SsorlError, FileExistsError):
    """A store already exists where a new one was to be created."""


class StoreLockedError(SsorlError, RuntimeError):
    """Another live process holds the store's writer lock."""


class ReadOnlyStoreError(SsorlError, PermissionError):
    """A write was attempted on a store opened read-only."""


class EpisodeValidationError(SsorlError, ValueError):
    """Episode arrays are inconsistent (lengths, dtypes, shapes, non-finite values)."""


class SpaceMismatchError(SsorlError, ValueError):
    """Observation or action spaces differ from the store's."""


class ImportFormatError(SsorlError, ValueError):
    """A source file or dataset cannot be imported as it is."""


class InvalidNameError(SsorlError, ValueError):
    """A name that becomes a path (split, relabel run, dataset id) is not allowed."""


class KernelInputError(SsorlError, ValueError):
    """A kernel argument has the wrong dtype, shape, device or layout."""


class KernelIndexError(SsorlError, IndexError):
    """A sample's episode or step index lies outside the episode table."""


class KernelBuildError(SsorlError, RuntimeError):
    """The C++ kernels were asked for (SSORL_BACKEND=cpp) but could not be built or loaded."""


class KernelBuildWarning(UserWarning):
    """The C++ kernels could not be built; ssorl fell back to the numba kernels."""
