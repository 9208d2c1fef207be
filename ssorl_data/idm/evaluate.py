"""IDM accuracy by episode group: held-out labelled episodes, and episodes a split hides.

Hidden episodes (recorded actions the split does not show) are grouped by
whether their return lies inside the visible episodes' return range: the IDM
saw that kind of behaviour, or it did not. The store is streamed chunk by chunk
through the same windows and forward pass as relabelling.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from ssorl_data.idm.checkpoint import Idm
from ssorl_data.idm.windows import RangeWindows
from ssorl_data.store import TrajectoryStore


@dataclass
class GroupStats:
    """Running sums over the recorded steps of one episode group."""

    n_steps: int = 0
    sq_error: float = 0.0  # summed over steps, mean over action dims
    action_sum: np.ndarray | None = None
    action_sq_sum: np.ndarray | None = None
    uncertainty: float = 0.0
    nll: float = 0.0
    episodes: set[int] = field(default_factory=set)

    def add(self, predicted, recorded, uncertainty, nll, episodes) -> None:
        recorded = recorded.reshape(recorded.shape[0], -1).astype(np.float64)
        predicted = predicted.reshape(recorded.shape).astype(np.float64)
        self.n_steps += recorded.shape[0]
        self.sq_error += float(((predicted - recorded) ** 2).mean(1).sum())
        sums = (recorded.sum(0), (recorded**2).sum(0))
        if self.action_sum is None:
            self.action_sum, self.action_sq_sum = sums
        else:
            self.action_sum += sums[0]
            self.action_sq_sum += sums[1]
        self.uncertainty += float(uncertainty.astype(np.float64).sum())
        if nll is not None:
            self.nll += float(nll.astype(np.float64).sum())
        self.episodes.update(int(e) for e in np.unique(episodes))

    def summary(self, with_nll: bool) -> dict[str, float | int | None]:
        """mse, action_variance (of the recorded actions, mean over dims), uncertainty, nll."""
        n = self.n_steps
        if n == 0:
            return {"n_steps": 0, "n_episodes": 0, "mse": None, "action_variance": None,
                    "uncertainty": None} | ({"nll": None} if with_nll else {})  # fmt: skip
        mean = self.action_sum / n
        variance = float((self.action_sq_sum / n - mean**2).mean())
        out = {
            "n_steps": n,
            "n_episodes": len(self.episodes),
            "mse": self.sq_error / n,
            "action_variance": variance,
            "uncertainty": self.uncertainty / n,
        }
        return out | ({"nll": self.nll / n} if with_nll else {})


def episode_groups(
    store: TrajectoryStore, visible: np.ndarray | None, held_out: np.ndarray | None
) -> dict[str, np.ndarray]:
    """[E] bool masks of the groups: val, hidden, hidden_inside, hidden_outside."""
    table = store.episode_table()
    groups: dict[str, np.ndarray] = {}
    if held_out is not None:
        val = np.zeros(table.n_episodes, bool)
        val[held_out[held_out < table.n_episodes]] = True
        groups["val"] = val
    if visible is not None:
        hidden = table.labelled & ~visible
        groups["hidden"] = hidden
        if visible.any():
            low, high = table.returns[visible].min(), table.returns[visible].max()
            inside = (table.returns >= low) & (table.returns <= high)
            groups["hidden_inside"] = hidden & inside
            groups["hidden_outside"] = hidden & ~inside
    return groups


def iter_chunk_predictions(
    store: TrajectoryStore, idm: Idm, batch_size: int = 8192, with_nll: bool = False
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray, np.ndarray | None]]:
    """(start, stop, actions [n, A], uncertainty [n], nll [n] | None) for each store chunk."""
    table = store.episode_table()
    builder = RangeWindows(
        table, idm.spec.k, idm.mean, idm.std, store.chunk_steps, idm.spec.obs_dim
    )
    for start, stop in store.chunk_ranges():
        lo, hi = builder.rows(start, stop)
        windows, _ = builder.build(store.read_observations(lo, hi), start, stop)
        recorded = None
        if with_nll:
            recorded = np.nan_to_num(store.read_steps("actions", start, stop))
        yield start, stop, *predict_windows(idm, windows, batch_size, recorded)


@torch.inference_mode()
def predict_windows(
    idm: Idm, windows: torch.Tensor, batch_size: int, recorded: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Run the ensemble over `windows` in fixed batches (so results never depend on history)."""
    n = windows.shape[0]
    actions = np.empty((n, *idm.spec.act_shape), np.float32)
    uncertainty = np.empty(n, np.float32)
    nll = None if recorded is None else np.empty(n, np.float32)
    device = idm.device
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        target = None if recorded is None else torch.from_numpy(recorded[lo:hi]).to(device)
        a, u, ll = idm.predict(windows[lo:hi].to(device, non_blocking=True), target)
        actions[lo:hi] = a.reshape(hi - lo, *idm.spec.act_shape).cpu().numpy()
        uncertainty[lo:hi] = u.cpu().numpy()
        if nll is not None:
            nll[lo:hi] = ll.cpu().numpy()
    return actions, uncertainty, nll


def evaluate_idm(
    idm: Idm, store: TrajectoryStore, split: str | None = None, batch_size: int = 8192
) -> dict[str, float | int | None]:
    """NLL, action MSE, action variance and mean uncertainty per episode group, flattened
    to keys such as `val_nll`, `hidden_mse`, `hidden_action_variance`,
    `hidden_outside_uncertainty`. `split` defaults to the one the IDM was trained on."""
    idm.check_store(store)
    split = split or idm.provenance.get("split")
    visible = store.read_split(split).visible if split else None
    same_store = idm.provenance.get("store") == str(store.path.resolve())
    held_out = np.asarray(idm.provenance.get("val_episodes", []), np.int64) if same_store else None
    groups = episode_groups(store, visible, held_out)
    stats = {name: GroupStats() for name in groups}
    table = store.episode_table()
    for start, stop, actions, uncertainty, nll in iter_chunk_predictions(
        store, idm, batch_size, with_nll=True
    ):
        mask = store.read_steps("action_mask", start, stop)
        recorded = store.read_steps("actions", start, stop)
        episodes = table.episode_of_step(start, stop)
        for name, chosen in groups.items():
            keep = mask & chosen[episodes]
            if keep.any():
                stats[name].add(
                    actions[keep], recorded[keep], uncertainty[keep], nll[keep], episodes[keep]
                )
    result: dict[str, float | int | None] = {"split": split}  # type: ignore[dict-item]
    for name, group in stats.items():
        result |= {f"{name}_{key}": v for key, v in group.summary(with_nll=True).items()}
    return result
