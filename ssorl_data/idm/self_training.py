"""Self-training: the IDM also learns from the windows that have no recorded action.

The labelled windows are a tenth of a corpus or less; the rest have observations only.
After the supervised fit, the ensemble labels a seeded sample of the split's other
episodes (at most `self_train_steps` steps, which bounds memory), and the most confident
`self_train_fraction` of those steps (lowest `DEFAULT_UNCERTAINTY`) become
pseudo-labelled windows. Training then resumes from the best supervised weights on
batches of both, the pseudo-labelled half weighted by `self_train_weight`, and is
early-stopped on the same labelled validation episodes as before: if the pseudo labels
never lower the validation NLL, the supervised weights are kept.

The episodes' recorded actions, which a split only hides, are never read: the pseudo
labels are all the second phase sees of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ssorl_data.episode_index import EpisodeIndex
from ssorl_data.idm.labelled import read_labelled
from ssorl_data.idm.model import DEFAULT_UNCERTAINTY, uncertainties
from ssorl_data.idm.windows import step_windows
from ssorl_data.store import TrajectoryStore

PREDICT_BATCH = 8192  # windows labelled at a time: bounds the float32 windows held


@dataclass(frozen=True)
class PseudoLabels:
    """Rows of the sampled unlabelled episodes, compacted, with proxy actions scaled to
    [-1, 1] and the confident steps (`step_mask`) that training may draw."""

    episodes: np.ndarray  # store episodes sampled, sorted
    observations: np.ndarray  # [N' + E', D] in the store's dtype
    index: EpisodeIndex
    actions: np.ndarray  # [N', A] float32, scaled like the labelled actions
    step_mask: np.ndarray  # [N'] bool: uncertainty within the kept fraction
    threshold: float  # the largest uncertainty kept

    def summary(self) -> dict[str, float | int]:
        return {"episodes": int(self.episodes.size), "candidate_steps": int(self.index.n_steps),
                "kept_steps": int(self.step_mask.sum()), "threshold": self.threshold}  # fmt: skip


def sample_episodes(
    lengths: np.ndarray, candidates: np.ndarray, max_steps: int, seed: int
) -> np.ndarray:
    """A seeded random subset of `candidates` (episode indices) of at most `max_steps` steps
    (at least one episode), sorted."""
    order = np.random.default_rng(seed).permutation(np.asarray(candidates, np.int64))
    total = np.cumsum(lengths[order])
    n = max(1, int(np.searchsorted(total, max_steps, side="right")))
    return np.sort(order[:n])


@torch.inference_mode()
def pseudo_label(
    network: torch.nn.Module,
    store: TrajectoryStore,
    episodes: np.ndarray,
    *,
    k: int,
    mean: np.ndarray,
    std: np.ndarray,
    action_half: np.ndarray,
    fraction: float,
    device: str | torch.device = "cpu",
) -> PseudoLabels:
    """Label every step of `episodes` with `network` (eval mode) and keep the `fraction` of
    steps with the lowest uncertainty."""
    rows = read_labelled(store, episodes, recorded_actions=False)
    index = rows.index
    n = index.n_steps
    episode_of, steps = index.steps_of(np.arange(index.n_episodes))
    actions = np.empty((n, rows.actions.shape[1]), np.float32)
    spread = np.empty(n, np.float32)
    half = torch.as_tensor(action_half, dtype=torch.float32, device=device)
    network.eval()
    for lo in range(0, n, PREDICT_BATCH):
        at = steps[lo : lo + PREDICT_BATCH]
        windows = step_windows(rows.observations, index, episode_of[lo : lo + PREDICT_BATCH],
                               at, mean, std, k)  # fmt: skip
        member_mean, log_std = network(windows.to(device))
        actions[at] = torch.tanh(member_mean).mean(0).cpu().numpy()
        definition = (DEFAULT_UNCERTAINTY,)
        spread[at] = uncertainties(member_mean, log_std, half, definition)[:, 0].cpu().numpy()
    threshold = float(np.quantile(spread, fraction)) if n else 0.0
    return PseudoLabels(rows.episodes, rows.observations, index, actions, spread <= threshold,
                        threshold)  # fmt: skip
