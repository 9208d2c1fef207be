"""Config fields and state keys renamed since checkpoints were first written.

One vocabulary across the algorithms (issue 10): `actor_lr` for the policy network's
learning rate, `hidden_dim` for the width of hidden layers and embeddings, `n_layers`
for their number, `actor` for the policy network and its optimizer. A user's override
under an old name is an error that names the new one (`make_config`); a checkpoint
keeps the names of the day it was written, so reading one translates them
(`upgrade_checkpoint`, called by `ssorl_train.checkpoint.load_checkpoint`).

Layouts changed too (issue 14): twin critics were an `nn.ModuleList` of two MLPs
(`critic.{member}.{index}.weight`, [out, in]) and are one `BatchedMLP`
(`critic.layers.{layer}.weight`, [members, in, out]); `batched_critics` stacks the old
tensors, and their Adam moments, into the new ones (the same numbers, rearranged).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from ssorl_train.errors import CheckpointError

# algorithm -> {old config field: new config field}
RENAMED_FIELDS: dict[str, dict[str, str]] = {
    "cql": {"policy_lr": "actor_lr", "n_hidden_layers": "n_layers"},
    "dt": {"embed_dim": "hidden_dim"},
}

# algorithm -> {old key of its state dict (an attribute in `_state_names`): new key}
RENAMED_STATE: dict[str, dict[str, str]] = {
    "iql": {"policy": "actor", "policy_opt": "actor_opt"},
    "cql": {"policy": "actor", "policy_opt": "actor_opt"},
}


# algorithm -> (critic modules, the optimizer of the first) stacked by `batched_critics`
TWIN_CRITICS: dict[str, tuple[tuple[str, ...], str]] = {
    "td3bc": (("critic", "critic_target"), "critic_opt"),
    "iql": (("critic", "critic_target"), "critic_opt"),
    "cql": (("critic", "critic_target"), "critic_opt"),
}
_MODULE_LIST_KEY = re.compile(r"(\d+)\.(\d+)\.(weight|bias)")


def _old_order(module: dict[str, torch.Tensor]) -> list[tuple[int, int, str]] | None:
    """(member, index, weight|bias) of each tensor of a ModuleList critic in parameter
    order; None for a batched critic."""
    if not isinstance(module, dict):
        return None
    keys = [_MODULE_LIST_KEY.fullmatch(str(key)) for key in module]
    if not keys or not all(keys):
        return None
    return [(int(k[1]), int(k[2]), k[3]) for k in keys if k is not None]


def _stack(tensors: list[torch.Tensor], kind: str) -> torch.Tensor:
    """Members' tensors of one nn.Linear as the EnsembleLinear tensor: weights [M, in, out]
    (transposed), biases [M, 1, out]."""
    return torch.stack([t.T if kind == "weight" else t[None] for t in tensors]).contiguous()


def batched_critics(algo: str, algorithm: dict[str, Any]) -> dict[str, Any]:
    """An algorithm state whose ModuleList twin critics (and their Adam state) are stacked
    into today's BatchedMLP layout; a state already in that layout is returned as it is."""
    if algo not in TWIN_CRITICS:
        return algorithm
    modules, optimizer = TWIN_CRITICS[algo]
    order = _old_order(algorithm[modules[0]])
    if order is None:
        return algorithm
    members = sorted({m for m, _, _ in order})
    indices = sorted({i for _, i, _ in order})
    new_order = [(indices.index(i), kind) for i in indices for kind in ("weight", "bias")]
    upgraded = dict(algorithm)
    for name in modules:
        old = algorithm[name]
        upgraded[name] = {
            f"layers.{layer}.{kind}": _stack(
                [old[f"{m}.{indices[layer]}.{kind}"] for m in members], kind
            )
            for layer, kind in new_order
        }
    position = {key: n for n, key in enumerate(order)}  # old parameter index of each tensor
    saved = algorithm[optimizer]
    state = {}
    for n, (layer, kind) in enumerate(new_order):
        old_ids = [position[(m, indices[layer], kind)] for m in members]
        if not all(i in saved["state"] for i in old_ids):
            continue  # no moments yet (the optimizer has not stepped)
        moments = [saved["state"][i] for i in old_ids]
        state[n] = {
            key: _stack([m[key] for m in moments], kind) if value.dim() else value
            for key, value in moments[0].items()
        }
    (group,) = saved["param_groups"]
    upgraded[optimizer] = {
        "state": state,
        "param_groups": [group | {"params": list(range(len(new_order)))}],
    }
    return upgraded


def _renamed(values: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    return {names.get(key, key): value for key, value in values.items()}


def upgrade_checkpoint(
    state: dict[str, Any], meta: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A checkpoint's (state, meta) with its algorithm config and state under today's names."""
    algo = meta.get("algo")
    if "algo_config" in meta:
        meta = meta | {"algo_config": _renamed(meta["algo_config"], RENAMED_FIELDS.get(algo, {}))}
    if "algorithm" in state:
        algorithm = _renamed(state["algorithm"], RENAMED_STATE.get(algo, {}))
        try:
            state = state | {"algorithm": batched_critics(str(algo), algorithm)}
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as error:
            raise CheckpointError(
                f"state.algorithm of this {algo} checkpoint has twin critics in the layout "
                f"before issue 14 that cannot be stacked ({type(error).__name__}: {error}). "
                "The file was edited or damaged; resume from another copy."
            ) from None
    return state, meta
