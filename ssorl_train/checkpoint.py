"""Checkpoints: tensors in safetensors, everything else in JSON; loading runs no code.

A nested state (module and optimizer state dicts, RNG states) is split into a flat
`{path: tensor}` map and a JSON skeleton in which each tensor is named by its path.
Both files are written to temporary names and renamed; a random id written into
both tells a matching pair from a pair torn by a crash between the renames.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ssorl_train.algos.renames import upgrade_checkpoint
from ssorl_train.errors import CheckpointError

FORMAT = "ssorl-train-checkpoint"
FORMAT_VERSION = 1
RUN_STEM = "checkpoint"  # a training run directory's checkpoint: RUN/checkpoint.{safetensors,json}
_TENSOR, _DICT = "__tensor__", "__dict__"


def _flatten(node: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, torch.Tensor):
        tensors[path] = node.detach().cpu().contiguous().clone()
        return {_TENSOR: path}
    if isinstance(node, dict):  # keys may be ints (optimizer state): keep their type
        return {_DICT: [[k, _flatten(v, f"{path}/{k}", tensors)] for k, v in node.items()]}
    if isinstance(node, (list, tuple)):
        return [_flatten(v, f"{path}/{i}", tensors) for i, v in enumerate(node)]
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    raise TypeError(f"Expected tensors, containers and JSON scalars in a state. Got {node!r}.")


def _unflatten(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, dict) and _TENSOR in node:
        return tensors[node[_TENSOR]]
    if isinstance(node, dict):
        return {k: _unflatten(v, tensors) for k, v in node[_DICT]}
    if isinstance(node, list):
        return [_unflatten(v, tensors) for v in node]
    return node


def paths(stem: str | Path) -> tuple[Path, Path]:
    """The (.safetensors, .json) pair of a checkpoint stem."""
    stem = Path(stem)
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def save_checkpoint(stem: str | Path, state: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write `state` (nested, with tensors) and `meta` (JSON) atomically beside each other."""
    tensor_path, json_path = paths(stem)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "", tensors)
    checkpoint_id = uuid.uuid4().hex
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "checkpoint_id": checkpoint_id,
        "meta": meta,
        "state": skeleton,
    }
    save_file(tensors, f"{tensor_path}.tmp", metadata={"checkpoint_id": checkpoint_id})
    json_path.with_suffix(".json.tmp").write_text(json.dumps(document, indent=1))
    os.replace(f"{tensor_path}.tmp", tensor_path)
    os.replace(json_path.with_suffix(".json.tmp"), json_path)


def load_checkpoint(stem: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a checkpoint written by `save_checkpoint`: (state on CPU, meta)."""
    tensor_path, json_path = paths(stem)
    if not tensor_path.exists() or not json_path.exists():
        raise CheckpointError(
            f"Expected a checkpoint pair {str(tensor_path)!r} and {str(json_path)!r}. "
            "Got at least one missing: pass a run directory written by `ssorl train`."
        )
    document = _read_document(json_path)
    with safe_open(str(tensor_path), "pt") as f:
        stored_id = (f.metadata() or {}).get("checkpoint_id")
    if stored_id != document["checkpoint_id"]:
        raise CheckpointError(
            f"Expected {str(tensor_path)!r} and {str(json_path)!r} from one save. Got "
            "different ids (a crash between their renames): resume from an older run copy."
        )
    state = _unflatten(document["state"], load_file(str(tensor_path)))
    return upgrade_checkpoint(state, document["meta"])  # names renamed since it was written


def saved_step(run_dir: str | Path) -> int:
    """How many updates the checkpoint of a training run directory was saved after (its
    meta's `step`, written by `loop.train`); 0 without one. Reads the JSON half only, so a
    caller can decide whether to resume without loading any tensor."""
    json_path = paths(Path(run_dir) / RUN_STEM)[1]
    return int(_read_document(json_path)["meta"]["step"]) if json_path.exists() else 0


def _read_document(json_path: Path) -> dict[str, Any]:
    document = json.loads(json_path.read_text())
    if document.get("format") != FORMAT or document.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"Expected {FORMAT!r} version {FORMAT_VERSION} in {str(json_path)!r}. Got "
            f"{document.get('format')!r} version {document.get('format_version')!r}."
        )
    return document
