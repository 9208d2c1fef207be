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


class SplitError(SsorlError, ValueError):
    """A split definition is invalid (wrong length, visible episodes without actions, ...)."""


class SplitExistsError(SsorlError, FileExistsError):
    """A split of that name exists and overwrite was not asked for."""


class SplitNotFoundError(SsorlError, LookupError):
    """No complete split of that name exists in the store."""


class SplitWarning(UserWarning):
    """A split got fewer labelled episodes than asked for (the pool was too small)."""


class RelabelExistsError(SsorlError, FileExistsError):
    """A relabel run of that name exists (complete, or made by another IDM) and overwrite was
    not asked for."""


class RelabelNotFoundError(SsorlError, LookupError):
    """No relabel run of that name exists in the store."""


class IdmCheckpointError(SsorlError, ValueError):
    """An IDM checkpoint directory is missing files or holds inconsistent ones."""


class KernelInputError(SsorlError, ValueError):
    """A kernel argument has the wrong dtype, shape, device or layout."""


class KernelIndexError(SsorlError, IndexError):
    """A sample's episode or step index lies outside the episode table."""


class KernelBuildError(SsorlError, RuntimeError):
    """The C++ kernels were asked for (SSORL_BACKEND=cpp) but could not be built or loaded."""


class KernelBuildWarning(UserWarning):
    """The C++ kernels could not be built; ssorl fell back to the numba kernels."""


class MissingDependencyError(SsorlError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


class PolicyNotFoundError(SsorlError, FileNotFoundError):
    """No saved policy exists at the given path."""


class PolicyLoadError(SsorlError, ValueError):
    """A saved policy cannot be loaded weights-only, or does not fit the env's spaces."""


class InvalidArgumentError(SsorlError, ValueError):
    """An argument or config value has the wrong type or lies outside its range."""


class UnknownEnvError(SsorlError, LookupError):
    """A gymnasium env id that is not registered, or an env that cannot be made."""


class SchedulerUnreachableError(SsorlError, ConnectionError):
    """No dask.distributed scheduler answers at the given address."""


class StaleDataError(SsorlError, ValueError):
    """Derived data (a split, a relabel run) covers fewer episodes or steps than the store has
    now, or was made from an upstream that has changed since; the message names the command
    that extends or remakes it."""


class DirectoryLockedError(SsorlError, RuntimeError):
    """Another live process holds the writer lock of an output directory (a training run, an
    IDM checkpoint)."""


class IdmExistsError(SsorlError, FileExistsError):
    """An IDM checkpoint exists in the output directory and overwrite was not asked for."""


class MissingChunkError(SsorlError, FileNotFoundError):
    """A chunk file inside the committed sizes is absent (zarr would read fill values)."""


class CorruptChunkError(SsorlError, ValueError):
    """A chunk file inside the committed sizes is cut short or does not decode."""


class DatasetExistsError(SsorlError, FileExistsError):
    """An export's destination dataset (a Minari id) exists already."""
