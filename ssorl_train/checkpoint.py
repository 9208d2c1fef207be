"""Checkpoints: tensors in safetensors, everything else in JSON; loading runs no code.

A nested state (module and optimizer state dicts, RNG states) is split into a flat
`{path: tensor}` map and a JSON skeleton in which each tensor is named by its path.
A random id written into both files tells a matching pair from a pair torn by a crash.

Saving never leaves a moment without a complete pair: the new pair is written to
temporary names and synced; the current pair is then hard-linked to `STEM.prev.*`
and only after that replaced by the new one. Loading takes `STEM.*` when its two files
match, else `STEM.prev.*` (the pair before it), and validates what it read
(`checkpoint_validation`) before anything is built from it.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ssorl_data.durable import fsync
from ssorl_train.algos.renames import upgrade_checkpoint
from ssorl_train.checkpoint_validation import check_checkpoint, check_layout
from ssorl_train.errors import CheckpointError

FORMAT = "ssorl-train-checkpoint"
FORMAT_VERSION = 1
RUN_STEM = "checkpoint"  # a training run directory's checkpoint: RUN/checkpoint.{safetensors,json}
PREVIOUS = ".prev"  # RUN/checkpoint.prev.*: the pair before, kept until a new one is complete
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


def _unflatten(node: Any, tensors: dict[str, torch.Tensor], where: Path) -> Any:
    try:
        if isinstance(node, dict) and _TENSOR in node:
            return tensors[node[_TENSOR]]
        if isinstance(node, dict):
            return {k: _unflatten(v, tensors, where) for k, v in node[_DICT]}
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(
            f"{where}: key 'state' names tensors or containers that the checkpoint does not "
            f"hold ({str(node)[:80]}). The file was edited; resume from another copy."
        ) from None
    if isinstance(node, list):
        return [_unflatten(v, tensors, where) for v in node]
    return node


def paths(stem: str | Path) -> tuple[Path, Path]:
    """The (.safetensors, .json) pair of a checkpoint stem."""
    stem = Path(stem)
    return stem.with_name(f"{stem.name}.safetensors"), stem.with_name(f"{stem.name}.json")


def previous(stem: str | Path) -> Path:
    """The stem of the pair kept from the save before the last (`STEM.prev`)."""
    stem = Path(stem)
    return stem.with_name(stem.name + PREVIOUS)


def checkpoint_files(stem: str | Path) -> list[Path]:
    """Every file a checkpoint stem may have on disk: both pairs and their temporary names."""
    pairs = [*paths(stem), *paths(previous(stem))]
    return pairs + [p.with_name(p.name + ".tmp") for p in pairs]


def save_checkpoint(stem: str | Path, state: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write `state` (nested, with tensors) and `meta` (JSON) as one pair, keeping the pair
    it replaces as `STEM.prev.*`; a crash at any point leaves one complete pair."""
    stem = Path(stem)
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
    tmp_tensors, tmp_json = (p.with_name(p.name + ".tmp") for p in (tensor_path, json_path))
    save_file(tensors, tmp_tensors, metadata={"checkpoint_id": checkpoint_id})
    tmp_json.write_text(json.dumps(document, indent=1))
    for path in (tmp_tensors, tmp_json):
        fsync(path)
    if _complete(stem) is not None:  # keep it, under the previous pair's names, first
        for current, kept in zip(paths(stem), paths(previous(stem)), strict=True):
            link = kept.with_name(kept.name + ".tmp")
            link.unlink(missing_ok=True)
            os.link(current, link)
            os.replace(link, kept)
    os.replace(tmp_tensors, tensor_path)
    os.replace(tmp_json, json_path)
    fsync(stem.parent)


def _complete(stem: Path) -> tuple[Path, Path, dict[str, Any]] | None:
    """The pair of `stem` and its JSON document when both files exist, read, and carry one
    id; None otherwise (missing, torn by a crash, or unreadable)."""
    tensor_path, json_path = paths(stem)
    if not (tensor_path.is_file() and json_path.is_file()):
        return None
    try:
        document = json.loads(json_path.read_text())
        with safe_open(str(tensor_path), "pt") as f:
            stored_id = (f.metadata() or {}).get("checkpoint_id")
    except (ValueError, OSError, SafetensorError):
        return None
    if not isinstance(document, dict) or stored_id != document.get("checkpoint_id"):
        return None
    return tensor_path, json_path, document


def _newest(stem: Path) -> tuple[Path, Path, dict[str, Any]]:
    """The newest complete pair of `stem`: its own, else the previous one; refuses when
    neither is complete."""
    found = _complete(stem) or _complete(previous(stem))
    if found is None:
        tensor_path, json_path = paths(stem)
        present = [str(p) for p in checkpoint_files(stem) if p.exists()]
        raise CheckpointError(
            f"Expected a checkpoint pair {str(tensor_path)!r} and {str(json_path)!r} (or "
            f"{previous(stem).name}.*) from one save. Got "
            + (
                f"only {present!r}: missing, unreadable or with different ids (torn by a "
                "crash or edited). Train afresh (--overwrite) or resume from a copy."
                if present
                else "neither: pass a run directory written by `ssorl train`."
            )
        )
    _check_format(found[1], found[2])
    return found


def has_checkpoint(stem: str | Path) -> bool:
    """Whether `stem` has a complete pair (its own or the previous one) to resume from."""
    stem = Path(stem)
    return _complete(stem) is not None or _complete(previous(stem)) is not None


def load_checkpoint(stem: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read the newest complete pair of `stem` (see the module docstring): (state on CPU,
    meta), names upgraded to today's and validated against each other."""
    tensor_path, json_path, document = _newest(Path(stem))
    if not isinstance(document.get("meta"), dict):
        raise CheckpointError(f"{json_path}: key 'meta' is not an object; the file was edited.")
    try:
        tensors = load_file(str(tensor_path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{tensor_path}: unreadable ({error}).") from None
    state = _unflatten(document.get("state"), tensors, json_path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{json_path}: key 'state' is not an object; the file was edited.")
    check_layout(state, document["meta"], json_path)
    state, meta = upgrade_checkpoint(state, document["meta"])  # names renamed since then
    check_checkpoint(state, meta, json_path)
    return state, meta


def saved_step(run_dir: str | Path) -> int:
    """How many updates the checkpoint of a training run directory was saved after (its
    meta's `step`, written by `loop.train`); 0 without a complete one. Reads no tensor, so
    a caller can decide whether to resume cheaply."""
    stem = Path(run_dir) / RUN_STEM
    found = _complete(stem) or _complete(previous(stem))
    if found is None:
        return 0
    _check_format(found[1], found[2])
    step = (found[2].get("meta") or {}).get("step")
    if type(step) is not int or step < 0:
        raise CheckpointError(f"{found[1]}: key 'meta.step' is {step!r}; expected an int >= 0.")
    return step


def _check_format(json_path: Path, document: dict[str, Any]) -> None:
    if document.get("format") != FORMAT or document.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"Expected {FORMAT!r} version {FORMAT_VERSION} in {str(json_path)!r}. Got "
            f"{document.get('format')!r} version {document.get('format_version')!r}."
        )
