"""The IDM as a loadable object: network + window size + normalisation + action bounds.

A checkpoint directory holds `model.safetensors` (weights), `config.json` (what
builds the network and maps its output to actions) and `provenance.json` (store,
split, seed, package version, training metrics). Loading runs no code from disk, and
validates before it allocates: every config key's type and range, finite and positive
normalisation, and the weights' shapes (read from the safetensors header) against the
network the config describes (built on torch's meta device, which allocates nothing).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from ssorl_data.errors import IdmCheckpointError, SpaceMismatchError
from ssorl_data.expect import Expect
from ssorl_data.idm.model import (
    DEFAULT_UNCERTAINTY,
    IdmEnsemble,
    squashed_nll,
    uncertainties,
)
from ssorl_data.store import TrajectoryStore

WEIGHTS, CONFIG, PROVENANCE = "model.safetensors", "config.json", "provenance.json"

# type and range of the network's settings: config.json's keys here, and the same fields of
# IdmTrainConfig (training.py's IDM_FIELDS)
NETWORK_FIELDS: dict[str, Expect] = {
    "k": Expect(int, min=0),
    "hidden": Expect(int, min=1, many=True),
    "members": Expect(int, min=1),
    "dropout": Expect(float, min=0, max=1, max_open=True),
    "shared_trunk": Expect(bool),
}
# type and range of every config.json key
SPEC_FIELDS: dict[str, Expect] = {
    **NETWORK_FIELDS,
    "obs_shape": Expect(int, min=1, many=True),
    "act_shape": Expect(int, min=1, many=True),
    "obs_mean": Expect(float, many=True),
    "obs_std": Expect(float, min=0, min_open=True, many=True),
    "action_low": Expect(float, many=True),
    "action_high": Expect(float, many=True),
    "delta_std": Expect(float, min=0, min_open=True, many=True, optional=True),
}
# config.json keys added after checkpoints were first written, and their value when absent
OPTIONAL_SPEC: dict[str, Any] = {"delta_std": None}


@dataclass(frozen=True)
class IdmSpec:
    """Everything needed to rebuild the network and use it on a store (config.json)."""

    k: int  # past states in the window: input is s_{t-k} .. s_t, s_{t+1}
    hidden: tuple[int, ...]
    members: int
    dropout: float
    shared_trunk: bool
    obs_shape: tuple[int, ...]
    act_shape: tuple[int, ...]
    obs_mean: tuple[float, ...]  # [D] normalisation over the store's observation rows
    obs_std: tuple[float, ...]
    action_low: tuple[float, ...]  # [A] the tanh output is mapped onto [low, high]
    action_high: tuple[float, ...]
    # [D] std of s_{t+1} - s_t over the labelled rows: with it the network also reads that
    # difference, scaled to unit variance (IdmTrainConfig.delta); None: it does not
    delta_std: tuple[float, ...] | None = None

    @property
    def obs_dim(self) -> int:
        return int(np.prod(self.obs_shape))

    @property
    def act_dim(self) -> int:
        return int(np.prod(self.act_shape))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> IdmSpec:
        """The spec of a config.json document, every key checked (IdmCheckpointError naming
        `where` and the key) before anything is built from it."""
        names = {f.name for f in dataclasses.fields(cls)}
        if isinstance(data, dict):
            data = OPTIONAL_SPEC | data
        if not isinstance(data, dict) or set(data) != names:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise IdmCheckpointError(
                f"{where}: expected config keys {sorted(names)}. Got {got} instead. "
                "The checkpoint was written by another ssorl version; train it again."
            )
        for key, expect in SPEC_FIELDS.items():
            value = data[key]
            finite = not isinstance(value, list) or all(
                not isinstance(v, float) or math.isfinite(v) for v in value
            )
            if not (expect.accepts(value) and finite):
                raise IdmCheckpointError(
                    f"{where}: key {key!r} is {_short(value)}; expected "
                    f"{expect.describe()}, finite. Train the IDM again (`ssorl idm train`)."
                )
        tuples = {n: tuple(v) for n, v in data.items() if isinstance(v, list)}
        spec = cls(**{**data, **tuples})
        for key, size in (("obs_mean", spec.obs_dim), ("obs_std", spec.obs_dim),
                          ("action_low", spec.act_dim), ("action_high", spec.act_dim),
                          ("delta_std", spec.obs_dim)):  # fmt: skip
            if data[key] is not None and len(data[key]) != size:
                raise IdmCheckpointError(
                    f"{where}: key {key!r} has {len(data[key])} values; expected {size} "
                    "(from obs_shape / act_shape). Train the IDM again (`ssorl idm train`)."
                )
        if not all(lo < hi for lo, hi in zip(spec.action_low, spec.action_high, strict=True)):
            raise IdmCheckpointError(
                f"{where}: key 'action_high' is not above 'action_low' everywhere. Train the "
                "IDM again (`ssorl idm train`)."
            )
        return spec


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Idm:
    """A trained IDM ensemble in eval mode: windows in, proxy actions and uncertainty out."""

    def __init__(
        self,
        spec: IdmSpec,
        network: IdmEnsemble,
        provenance: dict[str, Any],
        checkpoint: Path | None = None,
    ) -> None:
        self.spec = spec
        self.checkpoint = checkpoint  # the directory it was loaded from, if any
        self.network = network.eval()
        self.provenance = provenance
        # Normalisation stays on the CPU, where the window kernels run on store rows.
        self.mean = torch.tensor(spec.obs_mean, dtype=torch.float32)
        self.std = torch.tensor(spec.obs_std, dtype=torch.float32)
        low = torch.tensor(spec.action_low, dtype=torch.float32)
        high = torch.tensor(spec.action_high, dtype=torch.float32)
        self.action_mid, self.action_half = (high + low) / 2, (high - low) / 2

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def to(self, device: str | torch.device) -> Idm:
        self.network.to(device)
        self.action_mid = self.action_mid.to(device)
        self.action_half = self.action_half.to(device)
        return self

    def predict(
        self,
        windows: Tensor,
        actions: Tensor | None = None,
        uncertainty: str | tuple[str, ...] = DEFAULT_UNCERTAINTY,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """windows [B, k+2, D] normalised -> (actions [B, A], uncertainty [B], nll [B] | None).

        The action is the members' mean of tanh(mean). The uncertainty follows the named
        definition (`ssorl_data.idm.model.UNCERTAINTY_DEFINITIONS`, in squared action
        units); given a tuple of names it is [B, len(names)], one column each.
        Given recorded `actions` [B, A], also their NLL, averaged over members.
        Call under torch.inference_mode().
        """
        mean, log_std = self.network(windows.flatten(1))
        member_actions = torch.tanh(mean) * self.action_half + self.action_mid  # [M, B, A]
        predicted = member_actions.mean(0)
        names = (uncertainty,) if isinstance(uncertainty, str) else uncertainty
        spread = uncertainties(mean, log_std, self.action_half, names)
        nll = None
        if actions is not None:
            scaled = (actions.flatten(1) - self.action_mid) / self.action_half
            nll = squashed_nll(mean, log_std, scaled).mean(0)
        return predicted, spread[:, 0] if isinstance(uncertainty, str) else spread, nll

    def check_store(self, store: TrajectoryStore) -> None:
        """Refuse a store whose observation or action space differs from the training store's."""
        obs, act = store.observation_space, store.action_space
        checks = [
            ("observation shape", tuple(obs.shape), self.spec.obs_shape),
            ("action shape", tuple(act.shape), self.spec.act_shape),
        ]
        if np.isfinite(act.low).all() and np.isfinite(act.high).all():
            checks += [
                ("action low", tuple(float(v) for v in act.low.ravel()), self.spec.action_low),
                ("action high", tuple(float(v) for v in act.high.ravel()), self.spec.action_high),
            ]
        for what, got, expected in checks:
            if len(got) != len(expected) or not np.allclose(got, expected):
                raise SpaceMismatchError(
                    f"{store.path}: the IDM was trained on {what} {expected!r}. Got {got!r} "
                    "instead. Use an IDM trained on a store of this environment."
                )


def build_network(spec: IdmSpec) -> IdmEnsemble:
    delta_scale = None
    if spec.delta_std is not None:  # normalised difference -> unit variance
        delta_scale = torch.tensor(spec.obs_std, dtype=torch.float32) / torch.tensor(
            spec.delta_std, dtype=torch.float32
        )
    return IdmEnsemble(
        (spec.k + 2) * spec.obs_dim,
        spec.act_dim,
        spec.hidden,
        spec.members,
        spec.dropout,
        spec.shared_trunk,
        delta_scale,
    )


def save_idm(idm: Idm, directory: str | Path) -> Path:
    """Write the checkpoint directory (created if needed; files replaced).

    config.json goes first and comes back last, each file renamed into place whole, so a
    process killed while saving leaves a directory without config.json: never a mix of two
    IDMs' files, and one that `is_complete` tells from a finished checkpoint.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG).unlink(missing_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in idm.network.state_dict().items()}
    save_file(state, directory / f"{WEIGHTS}.tmp")
    (directory / f"{PROVENANCE}.tmp").write_text(json.dumps(idm.provenance, indent=1) + "\n")
    (directory / f"{CONFIG}.tmp").write_text(json.dumps(idm.spec.to_dict(), indent=1) + "\n")
    for name in (WEIGHTS, PROVENANCE, CONFIG):
        (directory / f"{name}.tmp").replace(directory / name)
    return directory


def is_complete(directory: str | Path) -> bool:
    """Whether `save_idm` finished writing `directory` (its config.json is written last)."""
    return all((Path(directory) / name).is_file() for name in (WEIGHTS, CONFIG, PROVENANCE))


def load_idm(directory: str | Path, device: str | torch.device = "cpu") -> Idm:
    """Load a checkpoint directory written by `save_idm` / `train_idm`, validating each file
    before the network is allocated (see the module docstring)."""
    directory = Path(directory)
    for name in (WEIGHTS, CONFIG, PROVENANCE):
        if not (directory / name).is_file():
            raise IdmCheckpointError(
                f"{directory}: no {name}. Expected an IDM checkpoint directory written by "
                "`ssorl idm train --out DIR`."
            )
    spec = IdmSpec.from_dict(_read_json(directory / CONFIG), str(directory / CONFIG))
    provenance = _read_json(directory / PROVENANCE)
    if not isinstance(provenance, dict):
        raise IdmCheckpointError(
            f"{directory / PROVENANCE}: expected a JSON object. Got {type(provenance).__name__}; "
            "train the IDM again (`ssorl idm train`)."
        )
    _check_weight_shapes(directory / WEIGHTS, spec)
    network = build_network(spec)
    try:
        weights = load_file(directory / WEIGHTS)
    except (SafetensorError, OSError) as error:
        raise IdmCheckpointError(f"{directory / WEIGHTS}: unreadable ({error}).") from None
    for name, tensor in weights.items():
        if not torch.isfinite(tensor).all():
            raise IdmCheckpointError(
                f"{directory / WEIGHTS}: tensor {name!r} holds non-finite values. Train the "
                "IDM again (`ssorl idm train`)."
            )
    network.load_state_dict(weights)
    return Idm(spec, network, provenance, directory).to(device)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise IdmCheckpointError(f"{path}: unreadable JSON ({error}).") from None


def _check_weight_shapes(path: Path, spec: IdmSpec) -> None:
    """Compare the tensors of the safetensors header (read without loading them) with the
    network `spec` builds on the meta device."""
    try:
        with safe_open(str(path), "pt") as f:
            got = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError) as error:
        raise IdmCheckpointError(
            f"{path}: not a readable safetensors file ({error}). Train the IDM again "
            "(`ssorl idm train`)."
        ) from None
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_network(spec).state_dict().items()}
    for name in sorted(set(got) | set(expected)):
        if got.get(name) != expected.get(name):
            raise IdmCheckpointError(
                f"{path}: weights do not fit {CONFIG} (keys k, hidden, members, shared_trunk, "
                f"obs_shape, act_shape): tensor {name!r} has shape {got.get(name)}, the config "
                f"gives {expected.get(name)}. Train the IDM again (`ssorl idm train`)."
            )


def checkpoint_hash(directory: str | Path) -> str:
    """sha256 of the weights and config: names the exact IDM in a relabel run's provenance."""
    digest = hashlib.sha256()
    for name in (WEIGHTS, CONFIG):
        digest.update((Path(directory) / name).read_bytes())
    return digest.hexdigest()
