"""Validation of user-given names that become paths (splits, relabel runs, dataset ids)."""

from __future__ import annotations

import re

from ssorl_data.errors import InvalidNameError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(name: str, what: str) -> str:
    """Return `name` if it is a safe single path segment, else raise InvalidNameError."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise InvalidNameError(
            f"Expected a {what} name of 1-64 letters, digits, '.', '_' or '-', starting with a "
            f"letter or digit and without '..'. Got {name!r} instead."
        )
    return name
