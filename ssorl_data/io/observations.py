"""A source's observations as it declares them, and as the store holds them.

The store holds one Box of float32 (or uint8) rows, because that is what the kernels
(kernels/spec.py) and the networks read. A Dict observation space is flattened in
gymnasium's own order (`gymnasium.spaces.flatten_space`: the Dict's keys in the space's
order, nested Dicts depth first, each Box leaf raveled in C order); `ObservationLayout`
records which columns hold which key, so an export restores the Dict. A cast to float32
that can round (float64, wide integers) is measured per dimension by `Float32Rounding`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from ssorl_data.errors import ImportFormatError, StoreFormatError
from ssorl_data.io.spaces import as_store_observation_space
from ssorl_data.metadata import space_from_json, space_to_json

# Largest rounding error accepted without a flag, as a fraction of the dimension's range
# (max - min over the imported values). float32 rounds |x| by at most 2**-24 |x| (6e-8
# relative), so this fails only where a dimension sits more than ~1700 ranges away from
# zero (time stamps, world coordinates far from the origin): exactly where float32 erases
# the variation a network learns from. 1e-4 of the range is far below the resolution of a
# float32 network reading normalised inputs.
ROUNDING_TOLERANCE = 1e-4

# The flag that accepts a rounding beyond the tolerance, as the CLI and the API spell it.
ACCEPT_FLAG = "--accept-float32-rounding (Python: accept_float32_rounding=True)"


@dataclass(frozen=True)
class Leaf:
    """One Box of the source space: its key path and the store columns [start, stop) it fills."""

    key: tuple[str, ...]  # () for a plain Box observation space
    shape: tuple[int, ...]
    dtype: np.dtype
    start: int
    stop: int

    @property
    def name(self) -> str:
        return "/".join(self.key) or "observation"


@dataclass(frozen=True)
class ObservationLayout:
    """How a source observation space maps onto the store's single Box."""

    source_space: gym.Space
    store_space: gym.spaces.Box
    leaves: tuple[Leaf, ...]

    @property
    def is_dict(self) -> bool:
        return isinstance(self.source_space, gym.spaces.Dict)

    @property
    def source_dtype(self) -> np.dtype:
        """The dtype the flattened source values have (the leaves' common type)."""
        return np.result_type(*(leaf.dtype for leaf in self.leaves))

    def flatten(self, observations: Any, where: str) -> np.ndarray:
        """[T, *store shape] values in the source dtype; a Dict's leaves side by side."""
        if not self.is_dict:
            return _numeric(observations, self.leaves[0], where)
        if not isinstance(observations, Mapping):
            raise ImportFormatError(
                f"{where}: expected a dict of observations for the Dict space. "
                f"Got {type(observations).__name__} instead."
            )
        parts = [_numeric(_lookup(observations, leaf, where), leaf, where) for leaf in self.leaves]
        rows = {part.shape[0] for part in parts}
        if len(rows) != 1:
            raise ImportFormatError(
                f"{where}: the observation keys hold different numbers of rows ({sorted(rows)})."
            )
        n = rows.pop()
        return np.concatenate([part.reshape(n, -1) for part in parts], axis=1)

    def unflatten(self, rows: np.ndarray) -> np.ndarray | dict[str, Any]:
        """Store rows back in the source space: each leaf in its shape and dtype."""
        if not self.is_dict:
            return rows.astype(self.leaves[0].dtype, copy=False)
        out: dict[str, Any] = {}
        for leaf in self.leaves:
            node = out
            for part in leaf.key[:-1]:
                node = node.setdefault(part, {})
            values = rows[:, leaf.start : leaf.stop].reshape(rows.shape[0], *leaf.shape)
            node[leaf.key[-1]] = values.astype(leaf.dtype)
        return out

    def column_name(self, column: int) -> str:
        """Which key and element a store column holds, for messages."""
        for leaf in self.leaves:
            if leaf.start <= column < leaf.stop:
                index = np.unravel_index(column - leaf.start, leaf.shape) if leaf.shape else ()
                return f"{leaf.name}{list(map(int, index))}"
        raise IndexError(column)

    def to_json(self) -> dict[str, Any]:
        """The layout as recorded in an import's provenance."""
        return {
            "space": space_to_json(self.source_space),
            "leaves": [
                {
                    "key": list(leaf.key),
                    "shape": list(leaf.shape),
                    "dtype": leaf.dtype.name,
                    "columns": [leaf.start, leaf.stop],
                }
                for leaf in self.leaves
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> ObservationLayout:
        """Read a recorded layout: its columns are authoritative, its leaves must be its space's."""
        layout = observation_layout(space_from_json(data["space"]), where)
        leaves = tuple(
            Leaf(tuple(d["key"]), tuple(d["shape"]), np.dtype(d["dtype"]), *d["columns"])
            for d in data["leaves"]
        )
        starts = [0, *(leaf.stop for leaf in leaves)][: len(leaves)]
        tiled = all(
            leaf.start == start and leaf.stop - leaf.start == int(np.prod(leaf.shape))
            for leaf, start in zip(leaves, starts, strict=True)
        )
        same = {(x.key, x.shape, x.dtype) for x in leaves} == {
            (x.key, x.shape, x.dtype) for x in layout.leaves
        }
        if not (tiled and same and len(leaves) == len(layout.leaves)):
            raise StoreFormatError(
                f"{where}: the recorded observation layout {data['leaves']!r} does not match "
                f"its space {layout.source_space!r}. The provenance was edited; re-import."
            )
        return cls(layout.source_space, layout.store_space, leaves)


def observation_layout(space: gym.Space, where: str) -> ObservationLayout:
    """The layout of a Box or a (nested) Dict of Boxes; any other space is refused by name."""
    if isinstance(space, gym.spaces.Box):
        _check_numeric(space, "observation", where)
        leaf = Leaf((), tuple(space.shape), np.dtype(space.dtype), 0, int(np.prod(space.shape)))
        store = as_store_observation_space(space)
        return ObservationLayout(space, store, (leaf,))
    if not isinstance(space, gym.spaces.Dict):
        raise ImportFormatError(
            f"{where}: observation space {space!r} is not supported yet. The store holds Box "
            "observations, or Dicts of Boxes flattened into one Box."
        )
    leaves = tuple(_dict_leaves(space, (), 0, where))
    if not leaves:
        raise ImportFormatError(f"{where}: the Dict observation space {space!r} has no keys.")
    flat = gym.spaces.flatten_space(space)
    if all(leaf.dtype == np.uint8 for leaf in leaves):
        store = gym.spaces.Box(flat.low, flat.high, dtype=np.uint8)
    else:
        store = as_store_observation_space(flat)
    return ObservationLayout(space, store, leaves)


def _dict_leaves(space: gym.spaces.Dict, key: tuple[str, ...], start: int, where: str):
    """The Box leaves in gymnasium's flatten order: the Dict's own key order, depth first."""
    for name, sub in space.spaces.items():
        path = (*key, str(name))
        if isinstance(sub, gym.spaces.Dict):
            for leaf in _dict_leaves(sub, path, start, where):
                start = leaf.stop
                yield leaf
        elif isinstance(sub, gym.spaces.Box):
            _check_numeric(sub, f"observation key {'/'.join(path)!r}", where)
            stop = start + int(np.prod(sub.shape))
            yield Leaf(path, tuple(sub.shape), np.dtype(sub.dtype), start, stop)
            start = stop
        else:
            raise ImportFormatError(
                f"{where}: observation key {'/'.join(path)!r} has space {sub!r}, which is not "
                "supported yet. Only Box entries of a Dict observation space can be imported."
            )


def _check_numeric(space: gym.spaces.Box, what: str, where: str) -> None:
    if np.dtype(space.dtype).kind not in "fiu":
        raise ImportFormatError(
            f"{where}: the {what} space has dtype {space.dtype}; only numeric Box "
            "observations can be imported."
        )


def _lookup(observations: Mapping, leaf: Leaf, where: str) -> Any:
    node: Any = observations
    for part in leaf.key:
        if not isinstance(node, Mapping) or part not in node:
            raise ImportFormatError(f"{where}: observation key {leaf.name!r} is missing.")
        node = node[part]
    return node


def _numeric(values: Any, leaf: Leaf, where: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind not in "fiu":
        raise ImportFormatError(
            f"{where}: observations {leaf.name!r} are {array.dtype}; only numeric Box "
            "observations can be imported."
        )
    if tuple(array.shape[1:]) != leaf.shape:
        raise ImportFormatError(
            f"{where}: observations {leaf.name!r} have shape {tuple(array.shape[1:])} per "
            f"step but the space declares {leaf.shape}."
        )
    return array


class Float32Rounding:
    """Casts observations to float32, keeping per dimension the largest rounding error and
    the range of the values, to judge the error against the range once all are seen."""

    def __init__(self, layout: ObservationLayout, where: str) -> None:
        n = int(np.prod(layout.store_space.shape))
        self.layout, self.where = layout, where
        self.source_dtype = layout.source_dtype
        self.max_error = np.zeros(n)
        self.low = np.full(n, np.inf)
        self.high = np.full(n, -np.inf)

    @staticmethod
    def needed(layout: ObservationLayout) -> bool:
        """Whether the cast to the store's dtype can change a value."""
        return not np.can_cast(layout.source_dtype, layout.store_space.dtype, casting="safe")

    def cast(self, values: np.ndarray, where: str) -> np.ndarray:
        """`values` as float32; refuses values beyond float32's range (no flag helps there)."""
        flat = values.reshape(values.shape[0], -1)
        with np.errstate(over="ignore"):  # overflow is reported below, by value and column
            out = flat.astype(np.float32)
        exact = flat.astype(np.float64, copy=False)
        error = np.abs(out - exact)
        overflow = np.isinf(out) & np.isfinite(exact)
        if overflow.any():
            row, column = map(int, np.argwhere(overflow)[0])
            raise ImportFormatError(
                f"{where}: observation {self.layout.column_name(column)} at row {row} is "
                f"{exact[row, column]!r}, beyond float32's range (±{np.finfo(np.float32).max:.3g})."
                " The store holds float32 observations; rescale that dimension first."
            )
        if len(flat):
            # fmax/fmin skip NaN (validation refuses NaN observations later, by row).
            np.fmax(self.max_error, np.fmax.reduce(error, axis=0), out=self.max_error)
            np.fmin(self.low, np.fmin.reduce(exact, axis=0), out=self.low)
            np.fmax(self.high, np.fmax.reduce(exact, axis=0), out=self.high)
        return out.reshape(values.shape)

    def relative_error(self) -> np.ndarray:
        """Per dimension: the largest error over the range (over |value| when constant)."""
        spread = self.high - self.low
        magnitude = np.maximum(np.abs(self.low), np.abs(self.high))
        scale = np.where(spread > 0, spread, magnitude)
        scale = np.where(np.isfinite(scale), scale, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(scale > 0, self.max_error / scale, 0.0)

    def finish(self, accept: bool) -> dict[str, Any]:
        """The provenance record; raises if the error exceeds the tolerance unless `accept`."""
        relative = self.relative_error()
        worst = int(np.argmax(relative)) if relative.size else 0
        record = {
            "source_dtype": self.source_dtype.name,
            "store_dtype": "float32",
            "max_abs_error": float(self.max_error.max(initial=0.0)),
            "max_relative_error": float(relative.max(initial=0.0)),
            "worst_column": self.layout.column_name(worst) if relative.size else None,
            "tolerance": ROUNDING_TOLERANCE,
            "accept_float32_rounding": bool(accept),
        }
        if record["max_relative_error"] > ROUNDING_TOLERANCE and not accept:
            raise ImportFormatError(
                f"{self.where}: storing its {self.source_dtype} observations as float32 changes "
                f"{record['worst_column']} by up to {self.max_error[worst]:.3g}, "
                f"{relative[worst]:.3g} of its range [{self.low[worst]:.10g}, "
                f"{self.high[worst]:.10g}]; the tolerance is {ROUNDING_TOLERANCE:g} of the "
                "range. The store keeps float32 (what the kernels and networks read), not "
                f"float64. Re-centre that dimension before importing, or pass {ACCEPT_FLAG} to "
                "import with this rounding (recorded in the store's provenance)."
            )
        return record


def recorded_layout(extra: Mapping[str, Any], where: str) -> ObservationLayout | None:
    """The source layout the store's imports recorded (appends keep it the same), or None."""
    for entry in extra.get("imports", []):
        if isinstance(entry, Mapping) and "observation_layout" in entry:
            return ObservationLayout.from_json(entry["observation_layout"], where)
    return None
