"""What a value is expected to be (type, range, list or not), as one table per config.

The same `Expect` entries check a Python config's fields (`__post_init__`), a TOML
section's keys and, through `ssorl_data.cli.options.click_type`, the matching CLI
options, so the API, the config files and the CLI accept and refuse the same values.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ssorl_data.errors import InvalidArgumentError

_UNIONS = (typing.Union, types.UnionType)
_KIND_NAMES = {int: "integer", float: "number", bool: "boolean", str: "string", dict: "table"}


@dataclass(frozen=True)
class Expect:
    """One value's type and, for numbers, its range; `many`: a non-empty list of such values
    (`one_or_many`: one such value or a non-empty list of them)."""

    kind: type  # int, float (an int is accepted too), bool, str or dict
    min: float | None = None
    max: float | None = None
    min_open: bool = False  # min itself is excluded
    max_open: bool = False  # max itself is excluded
    many: bool = False
    one_or_many: bool = False
    optional: bool = False  # None is accepted

    def describe(self) -> str:
        """The expectation in words, e.g. 'a non-empty list of integers >= 0'."""
        name = _KIND_NAMES[self.kind] + self.range_text()
        if self.many:
            plural = _KIND_NAMES[self.kind] + "s" + self.range_text()
            return f"a non-empty list of {plural}"
        article = "an" if name[0] in "aeiou" else "a"
        text = f"{article} {name}"
        if self.one_or_many:
            text += " or a non-empty list of them"
        return text + (" or None" if self.optional else "")

    def range_text(self) -> str:
        """The range, e.g. ' >= 1' or ' in [0, 1)'; empty for no range."""
        if self.min is not None and self.max is not None:
            left, right = "(" if self.min_open else "[", ")" if self.max_open else "]"
            return f" in {left}{self.min:g}, {self.max:g}{right}"
        if self.min is not None:
            return f" {'>' if self.min_open else '>='} {self.min:g}"
        if self.max is not None:
            return f" {'<' if self.max_open else '<='} {self.max:g}"
        return ""

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if self.many or (self.one_or_many and isinstance(value, list | tuple)):
            return (
                isinstance(value, list | tuple)
                and len(value) > 0
                and all(self._accepts_one(v) for v in value)
            )
        return self._accepts_one(value)

    def _accepts_one(self, value: Any) -> bool:
        if self.kind is float:
            right_type = isinstance(value, int | float) and not isinstance(value, bool)
        elif self.kind is int:
            right_type = isinstance(value, int) and not isinstance(value, bool)
        else:
            right_type = isinstance(value, self.kind)
        return right_type and self._in_range(value)

    def _in_range(self, value: Any) -> bool:
        if self.kind not in (int, float):
            return True
        if value != value:  # NaN is in no range
            return False
        if self.min is not None and (value <= self.min if self.min_open else value < self.min):
            return False
        return self.max is None or (value < self.max if self.max_open else value <= self.max)


def expect_of(annotation: Any) -> Expect | None:
    """The Expect of a plain field annotation (int, float, bool, str, or one of them | None);
    None for anything else."""
    kinds = (
        set(typing.get_args(annotation))
        if typing.get_origin(annotation) in _UNIONS
        else {annotation}
    )
    optional = type(None) in kinds
    kinds.discard(type(None))
    if len(kinds) == 1 and (kind := kinds.pop()) in (int, float, bool, str):
        return Expect(kind, optional=optional)
    return None


def check_values(where: str, values: Mapping[str, Any], table: Mapping[str, Expect]) -> None:
    """Raise InvalidArgumentError naming `where`, the key, what was expected and what was got,
    for the first value of `values` that its `table` entry refuses (keys not in it pass)."""
    for key, value in values.items():
        expect = table.get(key)
        if expect is not None and not expect.accepts(value):
            raise InvalidArgumentError(
                f"{where}: expected {key} to be {expect.describe()}. Got {value!r} instead."
            )


def check_fields(config: Any, table: Mapping[str, Expect]) -> None:
    """`check_values` on a dataclass's fields (for `__post_init__`), named by its class."""
    values = {key: getattr(config, key) for key in table}
    check_values(type(config).__name__, values, table)
