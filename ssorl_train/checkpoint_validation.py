"""What a training checkpoint must hold before anything is built from it.

A checkpoint.json can be edited by hand or crafted: every key that builds networks or
drives the loop is checked for its type and range, and the weights' shapes are compared
with the shapes its config implies, computed on torch's meta device (no memory), so a
config asking for huge networks is refused before any allocation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ssorl_data.errors import SsorlError
from ssorl_data.expect import Expect
from ssorl_train.algos import ALGORITHMS, make_algorithm, make_config
from ssorl_train.errors import CheckpointError

_FIX = "The file was edited or comes from another ssorl; resume or evaluate another copy."


def _fail(where: Path, key: str, got: Any, expected: str) -> CheckpointError:
    return CheckpointError(f"{where}: key {key!r} is {got!r}; expected {expected}. {_FIX}")


def _int(value: Any, where: Path, key: str, low: int, high: int | None = None) -> int:
    expect = Expect(int, min=low, max=high)
    if not expect.accepts(value):
        raise _fail(where, key, value, expect.describe())
    return value


def _number_or_none(value: Any, where: Path, key: str) -> None:
    if value is not None and (type(value) not in (int, float) or not math.isfinite(value)):
        raise _fail(where, key, value, "a finite number or null")


def check_layout(state: dict[str, Any], meta: dict[str, Any], where: Path) -> None:
    """Refuse a checkpoint whose algorithm, its config or its state is not even of the right
    kind (checked before the names renamed since it was written are upgraded)."""
    algo = meta.get("algo")
    if not isinstance(algo, str) or algo not in ALGORITHMS:
        raise _fail(where, "meta.algo", algo, f"one of {sorted(ALGORITHMS)}")
    if not isinstance(meta.get("algo_config"), dict):
        raise _fail(where, "meta.algo_config", meta.get("algo_config"), f"an object ({algo})")
    if not isinstance(state.get("algorithm"), dict):
        raise _fail(where, "state.algorithm", type(state.get("algorithm")).__name__, "an object")


def check_checkpoint(state: dict[str, Any], meta: dict[str, Any], where: Path) -> None:
    """Refuse (CheckpointError naming `where` and the key) a run checkpoint whose meta has
    wrong types or ranges, whose normalizer is not finite or positive, or whose weights do
    not have the shapes its algorithm config gives. Call `check_layout` first."""
    algo = meta["algo"]
    loop = meta.get("loop")
    if not isinstance(loop, dict):
        raise _fail(where, "meta.loop", loop, "an object (the run's LoopConfig)")
    steps = _int(loop.get("steps"), where, "meta.loop.steps", 1)
    if type(loop.get("seed")) is not int:
        raise _fail(where, "meta.loop.seed", loop.get("seed"), "an integer")
    _int(meta.get("step"), where, "meta.step", 0, steps)
    obs_dim = _int(meta.get("obs_dim"), where, "meta.obs_dim", 1)
    act_dim = _int(meta.get("act_dim"), where, "meta.act_dim", 1)
    for key in ("ref_min_score", "ref_max_score"):
        _number_or_none(meta.get(key), where, f"meta.{key}")
    if meta.get("env_id") is not None and not isinstance(meta["env_id"], str):
        raise _fail(where, "meta.env_id", meta["env_id"], "a string or null")
    config = _algo_config(algo, meta["algo_config"], where)
    _check_normalizer(state.get("normalizer"), obs_dim, act_dim, where)
    algorithm = state["algorithm"]
    _int(algorithm.get("step"), where, "state.algorithm.step", 0, steps)
    _check_shapes(algo, config, obs_dim, act_dim, algorithm, where)


def _algo_config(algo: str, values: Any, where: Path) -> Any:
    """The algorithm's config from the checkpoint, each field of its declared type."""
    try:
        return make_config(algo, values, parse_strings=False)
    except SsorlError as error:
        raise CheckpointError(
            f"{where}: key 'meta.algo_config' is refused: {error} {_FIX}"
        ) from None


def _check_normalizer(normalizer: Any, obs_dim: int, act_dim: int, where: Path) -> None:
    if not isinstance(normalizer, dict):
        raise _fail(where, "state.normalizer", type(normalizer).__name__, "an object")
    for key, size in (("obs_mean", obs_dim), ("obs_std", obs_dim),
                      ("action_low", act_dim), ("action_high", act_dim)):  # fmt: skip
        value = normalizer.get(key)
        if not isinstance(value, torch.Tensor) or value.numel() != size:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else value
            raise _fail(where, f"state.normalizer.{key}", shape, f"{size} values (meta dims)")
        if not torch.isfinite(value).all():
            raise _fail(where, f"state.normalizer.{key}", "non-finite values", "finite values")
    if not (normalizer["obs_std"] > 0).all():
        raise _fail(where, "state.normalizer.obs_std", "values <= 0", "positive values")
    if not (normalizer["action_high"] > normalizer["action_low"]).all():
        raise _fail(where, "state.normalizer.action_high", "<= action_low", "> action_low")


def _check_shapes(
    algo: str, config: Any, obs_dim: int, act_dim: int, saved: dict[str, Any], where: Path
) -> None:
    """Compare the saved networks' tensors with those of the algorithm this config builds
    on the meta device (optimizer states are left to the optimizers)."""
    with torch.device("meta"):  # every tensor made inside, even on "cpu", is shape only
        meta = torch.device("meta")
        fresh = make_algorithm(algo, config, obs_dim, act_dim, meta).state_dict()
    for name, value in fresh.items():
        if isinstance(value, torch.Tensor):
            expected = {"": value}
        elif isinstance(value, dict) and "param_groups" not in value:
            expected = value
        else:
            continue
        got = saved.get(name)
        got = {"": got} if isinstance(got, torch.Tensor) else got
        if not isinstance(got, dict):
            raise _fail(where, f"state.algorithm.{name}", type(got).__name__, "saved weights")
        for key, tensor in expected.items():
            have = got.get(key)
            shape = tuple(have.shape) if isinstance(have, torch.Tensor) else None
            if shape != tuple(tensor.shape):
                path = f"state.algorithm.{name}" + (f".{key}" if key else "")
                raise _fail(where, path, shape, f"shape {tuple(tensor.shape)} (meta.algo_config)")
        extra = sorted(set(got) - set(expected))
        if extra:
            raise _fail(where, f"state.algorithm.{name}", extra, "only the network's tensors")
