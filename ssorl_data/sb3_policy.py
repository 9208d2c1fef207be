"""Load a stable-baselines3 policy as a collect `Policy`, reading weights only.

SB3's own `Model.load` unpickles (cloudpickle) objects stored in the zip's `data`
JSON, so loading a file from elsewhere could run its code. Here nothing from the
file is unpickled: `policy.pth` is read with `torch.load(weights_only=True)`, the
`data` JSON only for plain fields (a `:serialized:` entry is never decoded), the
algorithm and layer sizes are inferred from the state dict, and the policy is
rebuilt with SB3's classes for the env's spaces.

Supported: MLP policies of SAC, TD3, DDPG, PPO and A2C on Box observations and
actions, without gSDE. VecNormalize statistics (saved in a separate file) are NOT
applied: a policy trained behind VecNormalize sees raw observations here and acts
badly.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from ssorl_data.errors import MissingDependencyError, PolicyLoadError, PolicyNotFoundError

if TYPE_CHECKING:
    from stable_baselines3.common.policies import BasePolicy

ALGOS = ("sac", "td3", "ddpg", "ppo", "a2c")
# Algorithms sharing a policy class share a state-dict layout; the first of each is its family.
_FAMILY = {"sac": "sac", "td3": "td3", "ddpg": "td3", "ppo": "ppo", "a2c": "ppo"}
# Element-wise torch.nn activations that SB3's MLPs build without arguments.
_ACTIVATIONS = frozenset(
    {"ReLU", "Tanh", "ELU", "LeakyReLU", "GELU", "SiLU", "Mish", "SELU", "CELU", "Softplus"}
    | {"Sigmoid", "Hardtanh", "ReLU6", "Hardswish", "Hardsigmoid", "Softsign", "Tanhshrink"}
)
_FLATTEN = "<class 'stable_baselines3.common.torch_layers.FlattenExtractor'>"


@dataclass(frozen=True)
class Sb3Policy:
    """A loaded SB3 policy: [n, *obs] -> [n, *act] float32 actions within the action space."""

    policy: BasePolicy
    algo: str
    path: Path
    sha256: str
    deterministic: bool

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        actions, _ = self.policy.predict(obs, deterministic=self.deterministic)
        space = self.policy.action_space
        return np.clip(actions, space.low, space.high).astype(np.float32)

    @property
    def description(self) -> dict[str, Any]:
        """Provenance for a store's `extra.collect.policy`: which file, exactly, and how."""
        return {
            "spec": f"sb3:{self.algo}:{self.path}",
            "sha256": self.sha256,
            "deterministic": self.deterministic,
        }


def parse_sb3_spec(spec: str) -> tuple[str | None, str]:
    """Split `sb3:PATH` or `sb3:ALGO:PATH` into (ALGO or None, PATH)."""
    if not spec.startswith("sb3:"):
        raise PolicyLoadError(f"Expected 'sb3:PATH' or 'sb3:ALGO:PATH'. Got {spec!r} instead.")
    rest = spec.removeprefix("sb3:")
    algo, sep, path = rest.partition(":")
    if sep and algo.lower() in ALGOS:
        return algo.lower(), path
    return None, rest


def load_sb3_policy(
    path: str | os.PathLike[str],
    env: str | tuple[gym.Space, gym.Space],
    *,
    algo: str | None = None,
    deterministic: bool = True,
    device: str = "cpu",
) -> Sb3Policy:
    """Rebuild the policy saved by SB3's `model.save(path)` for `env` (an id, or its
    (observation, action) spaces) without running any code from the file.

    `algo` (one of `ALGOS`) overrides the algorithm read from the weights' key names;
    it must fit them. Stochastic actions (`deterministic=False`) draw from torch's
    global RNG: seed it with `torch.manual_seed` for reproducible rollouts.
    """
    _require_sb3()
    path = Path(path).resolve()
    if not path.is_file():
        raise PolicyNotFoundError(
            f"No stable-baselines3 policy at {path}. Expected the .zip written by model.save()."
        )
    raw = path.read_bytes()
    state, data = _read_zip(raw, path, device)
    family = _family(state, path)
    algo = _algo(algo, family, state, data, path)
    obs_dim, act_dim, kwargs = _architecture(family, state)
    env_name, obs_space, act_space = _env_spaces(env)
    _check_spaces(path, data, obs_dim, act_dim, env_name, obs_space, act_space)
    activation = _activation(data, family, path)
    # The learning-rate schedule only feeds an optimizer that is never stepped here.
    policy = _policy_class(family)(
        obs_space, act_space, lambda _: 0.0, activation_fn=activation, **kwargs
    )
    try:
        policy.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise PolicyLoadError(
            f"{path}: the weights do not fit a default {algo} MLP policy with net_arch "
            f"{kwargs['net_arch']}: {error}"
        ) from None
    policy.to(device)
    policy.set_training_mode(False)
    return Sb3Policy(policy, algo, path, hashlib.sha256(raw).hexdigest(), deterministic)


def _require_sb3() -> None:
    try:
        import stable_baselines3  # noqa: F401
    except ImportError as error:
        raise MissingDependencyError(
            "Loading an sb3 policy needs stable-baselines3, which is not installed. "
            'Install it with: pip install "ssorl[collect]"'
        ) from error


def _read_zip(raw: bytes, path: Path, device: str) -> tuple[dict[str, torch.Tensor], dict]:
    """policy.pth (tensors only) and the `data` JSON (parsed, never unpickled)."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            names = set(archive.namelist())
            if "policy.pth" not in names:
                raise PolicyLoadError(
                    f"{path}: no policy.pth in the zip (it holds {sorted(names)}). "
                    "Expected the .zip written by a stable-baselines3 model.save()."
                )
            weights = archive.read("policy.pth")
            data_text = archive.read("data") if "data" in names else b"{}"
    except zipfile.BadZipFile:
        raise PolicyLoadError(
            f"{path} is not a zip file. Expected the .zip written by model.save()."
        ) from None
    try:
        state = torch.load(io.BytesIO(weights), weights_only=True, map_location=device)
    except (pickle.UnpicklingError, RuntimeError) as error:
        raise PolicyLoadError(
            f"{path}: policy.pth cannot be read as tensors only (anything else could run "
            f"code, so it is not loaded): {error}"
        ) from None
    try:
        data = json.loads(data_text)
    except ValueError as error:
        raise PolicyLoadError(f"{path}: the zip's `data` entry is not JSON: {error}") from None
    if not isinstance(state, dict) or not isinstance(data, dict):
        raise PolicyLoadError(f"{path}: expected a state dict in policy.pth and a JSON object.")
    return state, data


def _family(state: dict[str, torch.Tensor], path: Path) -> str:
    """SAC, TD3/DDPG or PPO/A2C, told apart by the actor's key names."""
    if any("features_extractor." in key for key in state):
        raise PolicyLoadError(
            f"{path}: the policy has a learnt features extractor (e.g. a CNN); only MLP "
            "policies on flat observations are supported."
        )
    for key, family in (
        ("actor.mu.weight", "sac"),
        ("actor.mu.0.weight", "td3"),
        ("action_net.weight", "ppo"),
    ):
        if key in state:
            return family
    raise PolicyLoadError(
        f"{path}: policy.pth is not an MLP policy of {', '.join(ALGOS)} "
        f"(its first keys: {list(state)[:4]}). Other algorithms are not supported."
    )


def _algo(algo: str | None, family: str, state: dict, data: dict, path: Path) -> str:
    """The algorithm's name, for provenance only: algorithms of one family act alike."""
    inferred = {
        "sac": "sac",
        "td3": "td3" if _n_critics(state) > 1 else "ddpg",  # DDPG: TD3 with one critic
        "ppo": "ppo" if "n_epochs" in data else "a2c",  # only PPO saves n_epochs
    }[family]
    if algo is None:
        return inferred
    if algo.lower() not in ALGOS:
        raise PolicyLoadError(f"Expected algo in {ALGOS}. Got {algo!r} instead.")
    if _FAMILY[algo.lower()] != family:
        raise PolicyLoadError(
            f"{path}: the weights are those of a {inferred} policy, not {algo}. "
            "Drop the algorithm from the spec to use what the weights say."
        )
    return algo.lower()


def _architecture(family: str, state: dict[str, torch.Tensor]) -> tuple[int, int, dict]:
    """(observation size, action size, net_arch kwargs), read from the tensor shapes."""
    if family == "ppo":
        pi = _layer_sizes(state, "mlp_extractor.policy_net")
        vf = _layer_sizes(state, "mlp_extractor.value_net")
        first = state["mlp_extractor.policy_net.0.weight" if pi else "action_net.weight"]
        act_dim = state["action_net.weight"].shape[0]
        return first.shape[1], act_dim, {"net_arch": {"pi": pi, "vf": vf}}
    if family == "sac":
        pi = _layer_sizes(state, "actor.latent_pi")
        first = state["actor.latent_pi.0.weight" if pi else "actor.mu.weight"]
        act_dim = state["actor.mu.weight"].shape[0]
    else:
        *pi, act_dim = _layer_sizes(state, "actor.mu")
        first = state["actor.mu.0.weight"]
    qf = _layer_sizes(state, "critic.qf0")[:-1]
    kwargs = {"net_arch": {"pi": pi, "qf": qf}, "n_critics": _n_critics(state)}
    return first.shape[1], act_dim, kwargs


def _layer_sizes(state: dict[str, torch.Tensor], prefix: str) -> list[int]:
    """Output sizes of the Linear layers `prefix.0`, `prefix.2`, ... of an SB3 MLP, in order."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.weight")
    layers = sorted(
        (int(match.group(1)), weight.shape[0])
        for key, weight in state.items()
        if (match := pattern.fullmatch(key))
    )
    return [size for _, size in layers]


def _n_critics(state: dict[str, torch.Tensor]) -> int:
    return len({key.split(".")[1] for key in state if key.startswith("critic.qf")})


def _env_spaces(env: str | tuple[gym.Space, gym.Space]) -> tuple[str, gym.Space, gym.Space]:
    if not isinstance(env, str):
        return "the given spaces", *env
    made = gym.make(env)
    try:
        return env, made.observation_space, made.action_space
    finally:
        made.close()


def _check_spaces(
    path: Path,
    data: dict,
    obs_dim: int,
    act_dim: int,
    env_name: str,
    obs_space: gym.Space,
    act_space: gym.Space,
) -> None:
    """The env's spaces are the ones the weights (and the saved spaces, where readable) fit."""
    saved_obs = _saved_shape(data, "observation_space") or (obs_dim,)
    saved_act = _saved_shape(data, "action_space") or (act_dim,)
    fits = (
        isinstance(obs_space, gym.spaces.Box)
        and isinstance(act_space, gym.spaces.Box)
        and saved_obs == obs_space.shape
        and int(np.prod(obs_space.shape)) == obs_dim
        and saved_act == act_space.shape == (act_dim,)
    )
    if not fits:
        raise PolicyLoadError(
            f"{path}: the policy was trained on observations of shape {saved_obs} and "
            f"actions of shape {saved_act}, but {env_name} has {obs_space} and "
            f"{act_space}. Collect in the env the policy was trained on."
        )
    saved = _readable(data, "action_space")
    low, high = _printed_array(saved.get("low")), _printed_array(saved.get("high"))
    if low is None or high is None or not low.shape == high.shape == (act_dim,):
        return
    if not (
        np.allclose(low, act_space.low.ravel(), rtol=1e-5)
        and np.allclose(high, act_space.high.ravel(), rtol=1e-5)
    ):
        raise PolicyLoadError(
            f"{path}: the policy was trained with action bounds {low} .. {high}, but "
            f"{env_name} has {act_space.low} .. {act_space.high}. SB3 rescales actions to the "
            "bounds, so they must match: collect in the env the policy was trained on."
        )


def _readable(data: dict, key: str) -> dict:
    """The plain JSON fields of `data[key]`; its `:serialized:` payload is never decoded."""
    item = data.get(key)
    return item if isinstance(item, dict) else {}


def _saved_shape(data: dict, key: str) -> tuple[int, ...] | None:
    shape = _readable(data, key).get("_shape")
    return tuple(shape) if isinstance(shape, list) else None


def _printed_array(text: Any) -> np.ndarray | None:
    """An array from NumPy's printed form (e.g. "[-1. -1. -8.]"); None where elided or absent."""
    if not isinstance(text, str) or "..." in text:
        return None
    try:
        return np.array(text.replace("[", " ").replace("]", " ").split(), dtype=np.float64)
    except ValueError:
        return None


def _activation(data: dict, family: str, path: Path) -> type[nn.Module]:
    """SB3's default activation, or the torch.nn one the readable policy_kwargs name."""
    kwargs = _readable(data, "policy_kwargs")
    if kwargs.get("use_sde") or data.get("use_sde"):
        raise PolicyLoadError(f"{path}: gSDE policies (use_sde=True) are not supported.")
    if kwargs.get("features_extractor_class", _FLATTEN) != _FLATTEN:
        raise PolicyLoadError(
            f"{path}: policy_kwargs name the features extractor "
            f"{kwargs['features_extractor_class']!r}; only the default FlattenExtractor "
            "is supported."
        )
    named = kwargs.get("activation_fn")
    if named is None:
        return nn.Tanh if family == "ppo" else nn.ReLU
    match = re.fullmatch(r"<class 'torch\.nn\.modules\.activation\.(\w+)'>", str(named))
    if match is None or match.group(1) not in _ACTIVATIONS:
        raise PolicyLoadError(
            f"{path}: policy_kwargs name the activation {named!r}. Expected one of the "
            f"torch.nn activations {sorted(_ACTIVATIONS)} (nothing else is rebuilt without "
            "running code from the file)."
        )
    return getattr(nn, match.group(1))


def _policy_class(family: str) -> type[BasePolicy]:
    if family == "sac":
        from stable_baselines3.sac.policies import SACPolicy

        return SACPolicy
    if family == "td3":
        from stable_baselines3.td3.policies import TD3Policy

        return TD3Policy
    from stable_baselines3.common.policies import ActorCriticPolicy

    return ActorCriticPolicy
