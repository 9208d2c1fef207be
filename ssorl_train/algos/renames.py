"""Config fields and state keys renamed since checkpoints were first written.

One vocabulary across the algorithms (issue 10): `actor_lr` for the policy network's
learning rate, `hidden_dim` for the width of hidden layers and embeddings, `n_layers`
for their number, `actor` for the policy network and its optimizer. A user's override
under an old name is an error that names the new one (`make_config`); a checkpoint
keeps the names of the day it was written, so reading one translates them
(`upgrade_checkpoint`, called by `ssorl_train.checkpoint.load_checkpoint`).
"""

from __future__ import annotations

from typing import Any

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
        state = state | {"algorithm": _renamed(state["algorithm"], RENAMED_STATE.get(algo, {}))}
    return state, meta
