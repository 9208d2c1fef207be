"""The algorithms by name, each with its config dataclass.

The configs share one vocabulary: `actor_lr`, `critic_lr`, `value_lr` (the learning rate
of each network of an actor-critic; DT trains one network, its rate is `lr`), `hidden_dim`
(width of hidden layers; DT: of its token embeddings), `n_layers` (hidden layers; DT:
transformer blocks), `batch_size`, `gamma` (discount), `tau` (Polyak rate of target
networks). Fields renamed since checkpoints were first written are in `renames`.
"""

from __future__ import annotations

import typing
from dataclasses import fields
from typing import Any

import torch

from ssorl_data.errors import InvalidArgumentError
from ssorl_data.expect import check_values, expect_of
from ssorl_train.algos.base import Algorithm
from ssorl_train.algos.cql import CQL, CQLConfig
from ssorl_train.algos.dt import DecisionTransformer, DTConfig
from ssorl_train.algos.iql import IQL, IQLConfig
from ssorl_train.algos.renames import RENAMED_FIELDS
from ssorl_train.algos.td3bc import TD3BC, TD3BCConfig
from ssorl_train.errors import AlgorithmConfigError, UnknownAlgorithmError

ALGORITHMS: dict[str, tuple[type, type[Algorithm]]] = {
    "td3bc": (TD3BCConfig, TD3BC),
    "iql": (IQLConfig, IQL),
    "cql": (CQLConfig, CQL),
    "dt": (DTConfig, DecisionTransformer),
}

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "make_config",
    "make_algorithm",
    "CQLConfig",
    "DTConfig",
    "IQLConfig",
    "TD3BCConfig",
]


def _entry(name: str) -> tuple[type, type[Algorithm]]:
    if name not in ALGORITHMS:
        raise UnknownAlgorithmError(
            f"Expected an algorithm in {sorted(ALGORITHMS)!r}. Got {name!r} instead."
        )
    return ALGORITHMS[name]


def make_config(
    name: str, overrides: dict[str, Any] | None = None, *, parse_strings: bool = True
) -> Any:
    """The algorithm's config: published defaults, with `overrides`; strings are parsed
    (`--set KEY=VALUE`) unless `parse_strings` is False (typed values, as from TOML)."""
    config_cls, _ = _entry(name)
    known = {f.name: f for f in fields(config_cls)}
    renamed = RENAMED_FIELDS.get(name, {})
    values: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if key in renamed:
            raise AlgorithmConfigError(
                f"{key} was renamed to {renamed[key]}: set {renamed[key]} instead "
                f"(a field of {config_cls.__name__})."
            )
        if key not in known:
            raise AlgorithmConfigError(
                f"Expected a field of {config_cls.__name__} in {sorted(known)!r}. Got {key!r}."
            )
        parse = parse_strings and isinstance(value, str)
        values[key] = _parse(key, value, known[key].default) if parse else value
    _check_types(config_cls, values)
    return config_cls(**values)


def _check_types(config_cls: type, values: dict[str, Any]) -> None:
    """Refuse a value of the wrong type (2.5 for an int field, a string for a float, true for
    a number), naming the field: the config dataclasses would take it and fail much later."""
    hints = typing.get_type_hints(config_cls)
    table = {key: expect for key in values if (expect := expect_of(hints[key])) is not None}
    try:
        check_values(config_cls.__name__, values, table)
    except InvalidArgumentError as error:
        raise AlgorithmConfigError(str(error)) from None


def _parse(key: str, text: str, default: Any) -> Any:
    if text.lower() == "none":
        return None
    if isinstance(default, bool):
        return text.lower() in ("1", "true", "yes")
    kind = int if isinstance(default, int) else float
    try:
        return kind(text)
    except ValueError:
        raise AlgorithmConfigError(
            f"Expected {key} to be {'an integer' if kind is int else 'a number'}. "
            f"Got {text!r} instead."
        ) from None


def make_algorithm(
    name: str,
    config: Any,
    obs_dim: int,
    act_dim: int,
    device: torch.device,
    precision: str = "fp32",
) -> Algorithm:
    """A fresh algorithm of this name on `device`, computing in `precision`
    (`ssorl_train.common.PRECISIONS`)."""
    return _entry(name)[1](config, obs_dim, act_dim, device, precision)
