"""Evaluation in vectorised gymnasium environments: raw returns and normalised scores."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium
import numpy as np
import torch

from ssorl_data.envs import check_env_spaces
from ssorl_data.expect import Expect, check_values
from ssorl_data.reference_scores import normalized_score
from ssorl_data.reference_scores import reference_returns as d4rl_reference_returns
from ssorl_train.algos import Algorithm, make_algorithm, make_config
from ssorl_train.checkpoint import load_checkpoint
from ssorl_train.common import Normalizer, select_device
from ssorl_train.errors import CheckpointError


def reference_returns(
    env_id: str, ref_min: float | None = None, ref_max: float | None = None
) -> tuple[float, float] | None:
    """The data's reference returns when given, else D4RL's for the env, else None."""
    if ref_min is not None and ref_max is not None:
        return ref_min, ref_max
    return d4rl_reference_returns(env_id)


def check_eval_env(env_id: str | None, obs_dim: int, act_dim: int) -> None:
    """Refuse, before training or loading anything big, an env to evaluate in that gymnasium
    does not know or whose spaces do not fit the policy's (None: no evaluation, nothing to
    check). `loop.train` and `evaluate_checkpoint` both call it."""
    if env_id:
        check_env_spaces(env_id, obs_dim, act_dim, "the training data")


# `evaluate_checkpoint`'s numeric arguments (and `ssorl eval`'s options)
EVAL_ARGS: dict[str, Expect] = {"episodes": Expect(int, min=1), "seed": Expect(int, min=0)}


@dataclass(frozen=True)
class EvalResult:
    env_id: str
    returns: list[float]  # one undiscounted return per episode, in seed order
    mean_return: float
    std_return: float
    normalized_score: float | None  # of the mean return; None without reference returns

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@torch.no_grad()
def evaluate(
    algorithm: Algorithm,
    normalizer: Normalizer,
    env_id: str,
    episodes: int = 10,
    seed: int = 0,
    reference: tuple[float, float] | None = None,
) -> EvalResult:
    """Run `episodes` episodes at once, episode i seeded `seed + i`, one env each.

    Actions are deterministic, so evaluation consumes no random numbers of training.
    """
    envs = gymnasium.vector.SyncVectorEnv([lambda: gymnasium.make(env_id)] * episodes)
    try:
        obs, _ = envs.reset(seed=[seed + i for i in range(episodes)])
        actor = algorithm.start_episodes(episodes, env_id)
        totals = np.zeros(episodes)
        running = np.ones(episodes, dtype=bool)
        device = normalizer.obs_mean.device
        while running.any():
            x = normalizer.observations(torch.as_tensor(obs, dtype=torch.float32, device=device))
            action = normalizer.from_unit(actor.act(x)).cpu().numpy()
            obs, reward, terminated, truncated, _ = envs.step(action)
            totals += np.where(running, reward, 0.0)
            actor.observe(torch.as_tensor(reward, dtype=torch.float32))
            running &= ~(terminated | truncated)
    finally:
        envs.close()
    mean = float(totals.mean())
    reference = reference or reference_returns(env_id)
    score = None if reference is None else normalized_score(mean, *reference)
    return EvalResult(env_id, totals.tolist(), mean, float(totals.std()), score)


def load_policy(
    checkpoint: str | Path, device: str | None = None
) -> tuple[Algorithm, Normalizer, dict]:
    """Algorithm, normalizer and metadata from a run directory or checkpoint stem."""
    stem = Path(checkpoint)
    if stem.is_dir():
        stem = stem / "checkpoint"
    state, meta = load_checkpoint(stem.with_suffix(""))
    dev = select_device(device)
    algorithm = make_algorithm(
        meta["algo"],
        make_config(meta["algo"], meta["algo_config"]),
        meta["obs_dim"],
        meta["act_dim"],
        dev,
    )
    algorithm.load_state_dict(state["algorithm"])
    normalizer = Normalizer(
        *(state["normalizer"][k] for k in ("obs_mean", "obs_std", "action_low", "action_high"))
    ).to(dev)
    return algorithm, normalizer, meta


def evaluate_checkpoint(
    checkpoint: str | Path,
    env_id: str | None = None,
    episodes: int = 10,
    seed: int = 0,
    device: str | None = None,
) -> EvalResult:
    """Evaluate a saved policy; the env defaults to the one its training data came from."""
    check_values("evaluate_checkpoint", {"episodes": episodes, "seed": seed}, EVAL_ARGS)
    algorithm, normalizer, meta = load_policy(checkpoint, device)
    env_id = env_id or meta.get("env_id")
    if not env_id:
        raise CheckpointError(
            f"Expected an env id: the checkpoint {str(checkpoint)!r} names none. "
            "Pass --env-id (Python: env_id=)."
        )
    check_eval_env(env_id, int(meta["obs_dim"]), int(meta["act_dim"]))
    reference = None
    if env_id == meta.get("env_id"):
        reference = reference_returns(env_id, meta.get("ref_min_score"), meta.get("ref_max_score"))
    return evaluate(algorithm, normalizer, env_id, episodes, seed, reference)
