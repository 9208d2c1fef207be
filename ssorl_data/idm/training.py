"""Training the IDM ensemble on a split's visible episodes.

Defaults come from benchmarks/idm_study.py (four shared sets, 3 seeds): window k = 1
plus the difference s_{t+1} - s_t as an input of its own, two hidden layers of 256,
dropout 0.1, Adam lr 1e-3, batch 256, 5 members, at most 3000 steps. Against the
literature's 1024x1024 / lr 1e-4 they err 0.89x as much as the headline's 256x256 IDM
did without the difference input, in 13 s instead of 155 s (one thread).
Validation holds out 10% of the visible episodes; early stopping restores the
weights of the best validation NLL. Only the visible episodes' rows are held
(`labelled.read_labelled`); the observation statistics are streamed over every row of
the store one chunk at a time (`streaming_stats`), so memory is the labelled rows
plus a chunk, whatever the store's size.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from ssorl_data import __version__
from ssorl_data.episode_index import EpisodeIndex
from ssorl_data.errors import IdmExistsError, SplitError
from ssorl_data.expect import Expect, check_fields
from ssorl_data.idm.checkpoint import (
    CONFIG,
    NETWORK_FIELDS,
    PROVENANCE,
    WEIGHTS,
    Idm,
    IdmSpec,
    build_network,
    is_complete,
    save_idm,
)
from ssorl_data.idm.labelled import read_labelled
from ssorl_data.idm.model import squashed_nll
from ssorl_data.idm.self_training import PseudoLabels, pseudo_label, sample_episodes
from ssorl_data.idm.windows import step_windows
from ssorl_data.sampler import IdmWindowSampler
from ssorl_data.staleness import check_split_fresh, split_identity, store_identity
from ssorl_data.store import TrajectoryStore
from ssorl_data.store.lock import DirectoryLock
from ssorl_data.streaming_stats import difference_std, store_observation_stats

SCALE_ROWS = 65_536  # actions scaled per slice: a float64 temporary of this many rows


@dataclass(frozen=True)
class IdmTrainConfig:
    """Hyperparameters and budget of `train_idm`."""

    k: int = 1  # past states per window
    hidden: tuple[int, ...] = (256, 256)
    members: int = 5  # ensemble size, trained as one batched model
    dropout: float = 0.1
    shared_trunk: bool = True  # share hidden layers across members (heads per member)
    delta: bool = True  # also feed s_{t+1} - s_t, scaled to unit variance (IdmSpec.delta_std)
    lr: float = 1e-3
    batch_size: int = 256
    # beta-NLL (`model.squashed_nll`): 0 is plain NLL, 0.5 the paper's default, 1 MSE-like
    nll_beta: float = 0.0
    # Budget: at most max_steps gradient steps (9-15 s for the defaults with one CPU
    # thread on the shared 100k-200k-step sets), ending earlier when validation NLL has
    # not improved for `patience` evaluations.
    max_steps: int = 3000
    eval_every: int = 100
    patience: int = 5
    val_fraction: float = 0.1  # of the visible episodes, held out for validation
    max_val_steps: int = 20_000  # validation windows (a fixed random subset if more)
    # Self-training (`self_training`): after the supervised fit, keep this fraction of the
    # most confident pseudo-labelled steps of up to `self_train_steps` steps of the other
    # episodes and train on them too, weighted by `self_train_weight`; 0 turns it off.
    self_train_fraction: float = 0.0
    self_train_weight: float = 0.5
    self_train_steps: int = 200_000
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self, IDM_FIELDS)


# type and range of every IdmTrainConfig field: checked on construction, and the limits of
# `ssorl idm train`'s options and of a pipeline's [idm] section
IDM_FIELDS: dict[str, Expect] = {
    **NETWORK_FIELDS,
    "delta": Expect(bool),
    "lr": Expect(float, min=0, min_open=True),
    "batch_size": Expect(int, min=1),
    "nll_beta": Expect(float, min=0, max=1),
    "max_steps": Expect(int, min=1),
    "eval_every": Expect(int, min=1),
    "patience": Expect(int, min=1),
    "val_fraction": Expect(float, min=0, max=1, min_open=True, max_open=True),
    "max_val_steps": Expect(int, min=1),
    "self_train_fraction": Expect(float, min=0, max=1),
    "self_train_weight": Expect(float, min=0, min_open=True),
    "self_train_steps": Expect(int, min=1),
    "seed": Expect(int, min=0),
}


@dataclass(frozen=True)
class TrainResult:
    idm: Idm
    directory: Path | None
    history: list[dict[str, float]]  # one entry per evaluation
    seconds: float


@dataclass(frozen=True)
class IdmArrays:
    """What the training loop samples from: observation rows [R, D] (float32 or uint8) in
    the store's layout over `index`, actions scaled to [-1, 1], the steps that have one, and
    the statistics the windows are normalised with."""

    observations: np.ndarray
    index: EpisodeIndex
    actions: np.ndarray
    step_mask: np.ndarray
    mean: np.ndarray
    std: np.ndarray


def split_train_val(
    visible: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Visible episode indices split by episode into (train, validation)."""
    episodes = np.flatnonzero(visible)
    if episodes.size < 2:
        raise SplitError(
            f"Expected at least 2 visible episodes to train and validate an IDM. Got "
            f"{episodes.size}; make a split with a larger --labelled-fraction."
        )
    shuffled = np.random.default_rng(seed).permutation(episodes)
    n_val = min(episodes.size - 1, max(1, int(round(val_fraction * episodes.size))))
    return np.sort(shuffled[n_val:]), np.sort(shuffled[:n_val])


def _action_bounds(
    store: TrajectoryStore, actions: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The action space's bounds, or where the space is unbounded the range of `actions`
    [N, A] at the steps of `mask` (the visible episodes' recorded actions)."""
    space = store.action_space
    low = space.low.astype(np.float64).ravel()
    high = space.high.astype(np.float64).ravel()
    finite = np.isfinite(low) & np.isfinite(high)
    if not finite.all():
        flat = actions[mask]
        lo, hi = np.nanmin(flat, 0), np.nanmax(flat, 0)
        margin = 0.05 * (hi - lo) + 1e-3
        low = np.where(finite, low, lo - margin)
        high = np.where(finite, high, hi + margin)
    return low, high


def _scale_actions(actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """`actions` [N, A] float32 mapped in place to [-1, 1], the range of the tanh, computed in
    float64 a slice of rows at a time (NaN rows stay NaN; they are never sampled)."""
    mid, half = (high + low) / 2, (high - low) / 2
    for lo in range(0, actions.shape[0], SCALE_ROWS):
        part = actions[lo : lo + SCALE_ROWS]
        part[:] = ((part - mid) / half).astype(np.float32)
    return actions


def train_idm(
    store: TrajectoryStore,
    split: str,
    out: str | Path | None = None,
    config: IdmTrainConfig = IdmTrainConfig(),
    device: str | torch.device = "cpu",
    progress: bool = True,
    overwrite: bool = False,
) -> TrainResult:
    """Train the IDM ensemble on the visible episodes of `split`; save it to `out` if given.

    `out` is locked while training (a second process writing it is refused), and an IDM
    already there, which relabel runs may point to, is replaced only with `overwrite`; the
    files of one whose saving was killed (no config.json, see `save_idm`) are replaced.
    """
    if out is None:
        return _train_idm(store, split, None, config, device, progress)
    with DirectoryLock(out, "IDM checkpoint"):
        existing = [name for name in (WEIGHTS, CONFIG, PROVENANCE) if (Path(out) / name).exists()]
        if is_complete(out) and not overwrite:
            raise IdmExistsError(
                f"{out}: holds an IDM checkpoint ({', '.join(existing)}), which relabel runs may "
                "point to. Pass overwrite=True (CLI: --overwrite) to replace it, or choose "
                "another --out."
            )
        return _train_idm(store, split, out, config, device, progress)


def _train_idm(
    store: TrajectoryStore,
    split: str,
    out: str | Path | None,
    config: IdmTrainConfig,
    device: str | torch.device,
    progress: bool,
) -> TrainResult:
    """`train_idm` once `out` is locked and free.

    A stale split (made before episodes were appended) is refused: its appended
    labelled episodes would be left out without a word. The provenance records the
    store's identity and committed sizes, and the split's identity (`staleness`).
    """
    started = time.perf_counter()
    table = store.episode_table()
    chosen = store.read_split(split)
    check_split_fresh(store, chosen, "training the IDM")
    train_eps, val_eps = split_train_val(chosen.visible, config.val_fraction, config.seed)
    labelled = read_labelled(store, np.flatnonzero(chosen.visible), table)
    mean, std = store_observation_stats(store)
    low, high = _action_bounds(store, labelled.actions, labelled.action_mask)
    spec = IdmSpec(
        k=config.k,
        hidden=tuple(config.hidden),
        members=config.members,
        dropout=config.dropout,
        shared_trunk=config.shared_trunk,
        obs_shape=tuple(store.observation_space.shape),
        act_shape=tuple(store.action_space.shape),
        obs_mean=tuple(mean.tolist()),
        obs_std=tuple(std.tolist()),
        action_low=tuple(low.tolist()),
        action_high=tuple(high.tolist()),
        delta_std=(
            tuple(difference_std(labelled.observations, labelled.index).tolist())
            if config.delta
            else None
        ),
    )
    arrays = IdmArrays(
        observations=labelled.observations,
        index=labelled.index,
        actions=_scale_actions(labelled.actions, low, high),
        step_mask=labelled.action_mask,
        mean=mean,
        std=std,
    )
    unlabelled = np.flatnonzero(~np.asarray(chosen.visible, bool))
    pseudo = None
    if config.self_train_fraction > 0 and unlabelled.size:
        episodes = sample_episodes(table.lengths, unlabelled, config.self_train_steps, config.seed)
        half = (high - low) / 2

        def pseudo(network: torch.nn.Module) -> PseudoLabels:
            return pseudo_label(
                network, store, episodes, k=config.k, mean=mean, std=std, action_half=half,
                fraction=config.self_train_fraction, device=device,
            )  # fmt: skip

    network, best, history, self_trained = _fit(
        spec, arrays, labelled.local(train_eps), labelled.local(val_eps), config, device,
        progress, pseudo,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    provenance: dict[str, Any] = {
        "store": str(Path(store.path).resolve()),
        "split": split,
        "split_protocol": chosen.attrs,
        "store_identity": store_identity(store),
        "split_identity": split_identity(chosen),
        "train_episodes": train_eps.tolist(),
        "val_episodes": val_eps.tolist(),
        "config": asdict(config),
        "best_step": best.step,
        "best_val_nll": best.nll,
        "steps_run": history[-1]["step"] if history else 0,
        "self_training": self_trained,
        "train_seconds": seconds,
        "history": history,
        "package_version": __version__,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    idm = Idm(spec, network, provenance).to(device)
    directory = save_idm(idm, out) if out is not None else None
    return TrainResult(idm, directory, history, seconds)


def _fit(
    spec: IdmSpec,
    arrays: IdmArrays,
    train_eps: np.ndarray,
    val_eps: np.ndarray,
    config: IdmTrainConfig,
    device: str | torch.device,
    progress: bool,
    pseudo: Callable[[torch.nn.Module], PseudoLabels] | None = None,
) -> tuple[torch.nn.Module, Best, list[dict[str, float]], dict[str, Any] | None]:
    """Train on the windows of `train_eps`, early-stopped on those of `val_eps` (episodes of
    `arrays.index`); with `pseudo`, then also on the pseudo labels it makes from the best
    supervised network (`self_training`). Returns the network at its best validation NLL,
    (best NLL, its weights, its step), the history of evaluations and what self-training
    did (None without it)."""
    torch.manual_seed(config.seed)
    labelled = _window_sampler(arrays, arrays.step_mask, config, train_eps)
    val_windows, val_actions = _validation_set(arrays, val_eps, config, device)
    network = build_network(spec).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    validate = functools.partial(_validation_nll, network, val_windows, val_actions)
    best = Best(float("inf"), copy.deepcopy(network.state_dict()), 0)
    best, history = _train_phase(
        network, optimizer, [(labelled, 1.0)], validate, best, 0, config, generator, device,
        progress,
    )  # fmt: skip
    network.load_state_dict(best.weights)
    if pseudo is None:
        return network, best, history, None
    labels = pseudo(network)
    supervised_step = history[-1]["step"] if history else 0
    sampler = _window_sampler(
        IdmArrays(labels.observations, labels.index, labels.actions, labels.step_mask,
                  arrays.mean, arrays.std), labels.step_mask, config, None,
    )  # fmt: skip
    best, more = _train_phase(
        network, optimizer, [(labelled, 1.0), (sampler, config.self_train_weight)], validate,
        best, supervised_step, config, generator, device, progress,
    )  # fmt: skip
    network.load_state_dict(best.weights)
    report = labels.summary() | {"supervised_steps": supervised_step,
                                 "kept_weights": best.step > supervised_step}  # fmt: skip
    return network, best, history + more, report


class Best(NamedTuple):
    """The lowest validation NLL so far, the weights that reached it and their step."""

    nll: float
    weights: dict[str, Any]
    step: int


def _window_sampler(
    arrays: IdmArrays, step_mask: np.ndarray, config: IdmTrainConfig, episodes
) -> IdmWindowSampler:
    return IdmWindowSampler(
        arrays.observations, arrays.index.step_start, arrays.index.lengths, k=config.k,
        mean=arrays.mean, std=arrays.std, actions=arrays.actions, step_mask=step_mask,
        batch_size=config.batch_size, episodes=episodes, seed=config.seed,
    )  # fmt: skip


def _train_phase(
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    samplers: list[tuple[IdmWindowSampler, float]],
    validate: Callable[[], float],
    best: Best,
    first_step: int,
    config: IdmTrainConfig,
    generator: torch.Generator,
    device: str | torch.device,
    progress: bool,
) -> tuple[Best, list[dict[str, float]]]:
    """Up to `config.max_steps` steps on the weighted sum of each sampler's loss, evaluated
    every `eval_every` steps and stopped after `patience` evaluations without a new best."""
    since_best = 0
    history: list[dict[str, float]] = []
    desc = "idm train" if first_step == 0 else "idm self-train"
    bar = tqdm(total=config.max_steps, unit="step", desc=desc, disable=not progress)
    for step in range(first_step + 1, first_step + config.max_steps + 1):
        network.train()
        loss = torch.zeros((), device=device)
        for sampler, weight in samplers:
            batch = sampler.sample()
            x = batch.windows.flatten(1).to(device, non_blocking=True)
            y = batch.actions.to(device, non_blocking=True)
            mean_, log_std = network(x)
            # Poisson(1) weights per member and sample: a bootstrap that keeps members
            # diverse even though they share each batch.
            draws = torch.poisson(torch.ones(config.members, x.shape[0]), generator=generator)
            nll = squashed_nll(mean_, log_std, y, config.nll_beta)  # [M, B]
            loss = loss + weight * (nll * draws.to(device)).mean(1).sum()
            if sampler is samplers[0][0]:
                train_nll = nll.detach()  # the labelled windows' NLL, for the history
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.update()
        if step % config.eval_every == 0 or step == first_step + config.max_steps:
            val_nll = validate()
            history.append({"step": step, "train_nll": float(train_nll.mean()), "val_nll": val_nll})
            bar.set_postfix(val_nll=f"{val_nll:.3f}")
            if val_nll < best.nll:
                best, since_best = Best(val_nll, copy.deepcopy(network.state_dict()), step), 0
            else:
                since_best += 1
                if since_best >= config.patience:
                    break
    bar.close()
    return best, history


def _validation_set(
    arrays: IdmArrays, val_eps: np.ndarray, config: IdmTrainConfig, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed validation windows and actions: every held-out step with an action, or a seeded
    subset of `max_val_steps` of them."""
    episode, steps = arrays.index.steps_of(val_eps)
    keep = arrays.step_mask[steps]
    episode, steps = episode[keep], steps[keep]
    if steps.size > config.max_val_steps:
        chosen = np.sort(
            np.random.default_rng(config.seed).choice(steps.size, config.max_val_steps, False)
        )
        episode, steps = episode[chosen], steps[chosen]
    windows = step_windows(arrays.observations, arrays.index, episode, steps, arrays.mean,
                           arrays.std, config.k)  # fmt: skip
    actions = torch.from_numpy(arrays.actions[steps])
    return windows.to(device), actions.to(device)


@torch.inference_mode()
def _validation_nll(network, windows: torch.Tensor, actions: torch.Tensor) -> float:
    """Mean NLL over members and validation samples, in eval mode (no dropout)."""
    network.eval()
    total = 0.0
    for x, y in zip(windows.split(8192), actions.split(8192), strict=True):
        mean, log_std = network(x)
        total += float(squashed_nll(mean, log_std, y).mean(0).sum())
    return total / max(1, windows.shape[0])
