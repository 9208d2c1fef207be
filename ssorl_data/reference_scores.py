"""D4RL's reference returns, used to normalise scores when a store carries none.

Source: D4RL `infos.py` (REF_MIN_SCORE / REF_MAX_SCORE for the locomotion tasks),
the values other libraries also use for gymnasium's v5 MuJoCo envs.
"""

from __future__ import annotations

D4RL_REFERENCE_RETURNS: dict[str, tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
}


def reference_returns(env_id: str | None) -> tuple[float, float] | None:
    """(min, max) reference returns for an env id such as 'Hopper-v5', or None if unknown."""
    if not env_id:
        return None
    family = env_id.split("/")[-1].split("-")[0].lower()
    return D4RL_REFERENCE_RETURNS.get(family)


def normalized_score(raw_return: float, ref_min: float, ref_max: float) -> float:
    """100 * (R - min) / (max - min): 0 is the random policy, 100 the expert."""
    return 100.0 * (raw_return - ref_min) / (ref_max - ref_min)
