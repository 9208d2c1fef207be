"""IDM accuracy by episode group: held-out labelled episodes, and episodes a split hides.

Hidden episodes (recorded actions the split does not show) are grouped by
whether their return lies inside the visible episodes' return range: the IDM
saw that kind of behaviour, or it did not. The store is streamed chunk by chunk
through the same windows and forward pass as relabelling. Each group also reports
how well uncertainty ranks the errors (`ssorl_data.idm.ranking`): on the held-out
`val` episodes this is the check a user without hidden actions has.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from ssorl_data.idm.checkpoint import Idm
from ssorl_data.idm.model import DEFAULT_UNCERTAINTY, UNCERTAINTY_DEFINITIONS
from ssorl_data.idm.ranking import RankingSample, step_errors
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


def ranking_summary(
    name: str, sample: RankingSample, definitions: tuple[str, ...]
) -> dict[str, float | None]:
    """`{name}_uncertainty_auroc` / `_spearman` of the first definition; with more than one,
    the same keys suffixed by each definition (`..._auroc_total_max`) as well."""
    found = sample.metrics()
    out = {f"{name}_uncertainty_auroc": found[0]["auroc_worst"],
           f"{name}_uncertainty_spearman": found[0]["spearman"]}  # fmt: skip
    if len(definitions) > 1:
        for definition, metrics in zip(definitions, found, strict=True):
            suffix = definition.replace("-", "_")
            out[f"{name}_uncertainty_auroc_{suffix}"] = metrics["auroc_worst"]
            out[f"{name}_uncertainty_spearman_{suffix}"] = metrics["spearman"]
    return out


def iter_chunk_predictions(
    store: TrajectoryStore,
    idm: Idm,
    batch_size: int = 8192,
    with_nll: bool = False,
    uncertainty: str | tuple[str, ...] = DEFAULT_UNCERTAINTY,
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray, np.ndarray | None]]:
    """(start, stop, actions [n, A], uncertainty [n] (or [n, len(uncertainty)] for a tuple of
    definitions), nll [n] | None) for each store chunk."""
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
        yield start, stop, *predict_windows(idm, windows, batch_size, recorded, uncertainty)


@torch.inference_mode()
def predict_windows(
    idm: Idm,
    windows: torch.Tensor,
    batch_size: int,
    recorded: np.ndarray | None = None,
    definition: str | tuple[str, ...] = DEFAULT_UNCERTAINTY,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Run the ensemble over `windows` in fixed batches (so results never depend on history).
    Uncertainty is [n] for one `definition`, [n, len(definition)] for a tuple of them."""
    n = windows.shape[0]
    actions = np.empty((n, *idm.spec.act_shape), np.float32)
    shape = (n,) if isinstance(definition, str) else (n, len(definition))
    uncertainty = np.empty(shape, np.float32)
    nll = None if recorded is None else np.empty(n, np.float32)
    device = idm.device
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        target = None if recorded is None else torch.from_numpy(recorded[lo:hi]).to(device)
        a, u, ll = idm.predict(windows[lo:hi].to(device, non_blocking=True), target, definition)
        actions[lo:hi] = a.reshape(hi - lo, *idm.spec.act_shape).cpu().numpy()
        uncertainty[lo:hi] = u.cpu().numpy()
        if nll is not None:
            nll[lo:hi] = ll.cpu().numpy()
    return actions, uncertainty, nll


def evaluate_idm(
    idm: Idm,
    store: TrajectoryStore,
    split: str | None = None,
    batch_size: int = 8192,
    uncertainty: str = DEFAULT_UNCERTAINTY,
    compare_uncertainty: bool = False,
) -> dict[str, float | int | str | None]:
    """NLL, action MSE, action variance, mean uncertainty and how well uncertainty ranks
    errors per episode group, flattened to keys such as `val_nll`, `hidden_mse`,
    `hidden_action_variance`, `hidden_outside_uncertainty`, `val_uncertainty_auroc` (for the
    worst 10% of errors) and `val_uncertainty_spearman`. `split` defaults to the one the
    IDM was trained on. `uncertainty` names the definition; `compare_uncertainty` adds the
    ranking keys of every definition, suffixed by its name."""
    idm.check_store(store)
    split = split or idm.provenance.get("split")
    visible = store.read_split(split).visible if split else None
    same_store = idm.provenance.get("store") == str(store.path.resolve())
    held_out = np.asarray(idm.provenance.get("val_episodes", []), np.int64) if same_store else None
    groups = episode_groups(store, visible, held_out)
    table = store.episode_table()
    definitions = (uncertainty,)
    if compare_uncertainty:
        definitions += tuple(d for d in UNCERTAINTY_DEFINITIONS if d != uncertainty)
    stats = {name: GroupStats() for name in groups}
    samples = {
        name: RankingSample(int(table.lengths[chosen].sum()), len(definitions))
        for name, chosen in groups.items()
    }
    half = idm.action_half.cpu().numpy().astype(np.float64)
    for start, stop, actions, spread, nll in iter_chunk_predictions(
        store, idm, batch_size, with_nll=True, uncertainty=definitions
    ):
        mask = store.read_steps("action_mask", start, stop)
        recorded = store.read_steps("actions", start, stop)
        episodes = table.episode_of_step(start, stop)
        steps = np.arange(start, stop)
        for name, chosen in groups.items():
            keep = mask & chosen[episodes]
            if keep.any():
                stats[name].add(
                    actions[keep], recorded[keep], spread[keep, 0], nll[keep], episodes[keep]
                )
                error = step_errors(actions[keep], recorded[keep], half)
                samples[name].add(steps[keep], spread[keep], error)
    result: dict[str, float | int | str | None] = {
        "split": split,
        "uncertainty_definition": uncertainty,
    }
    for name, group in stats.items():
        result |= {f"{name}_{key}": v for key, v in group.summary(with_nll=True).items()}
        result |= ranking_summary(name, samples[name], definitions)
    return result
