"""The one training loop: batches, updates, logs, evaluation, checkpoints, resumption.

A run directory holds `config.json`, `log.csv` (training metrics averaged over each
`log_every` steps), `eval.csv`, TensorBoard events under `tb/`, the latest
`checkpoint.{safetensors,json}` and, once finished, `summary.json`.
Resuming restores networks, optimizers, the batch generator and torch's RNG, so a
run killed and resumed produces exactly the parameters of an uninterrupted one.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ssorl_train.algos import Algorithm, make_algorithm
from ssorl_train.batches import BatchSampler, SubtrajectorySampler, TransitionSampler
from ssorl_train.checkpoint import load_checkpoint, paths, save_checkpoint
from ssorl_train.common import seed_everything, select_device
from ssorl_train.dataset import TrainingData
from ssorl_train.errors import CheckpointError
from ssorl_train.evaluate import EvalResult, evaluate, reference_returns


@dataclass(frozen=True)
class LoopConfig:
    steps: int  # gradient steps in all (a resumed run counts the steps already done)
    seed: int = 0  # seeds networks, batches and noise; evaluation episodes use seed + i
    eval_every: int = 10_000  # evaluate every this many steps and at the end; 0: end only
    eval_episodes: int = 10  # episodes per evaluation (run in parallel envs)
    checkpoint_every: int = 10_000  # save every this many steps and at the end; 0: end only
    log_every: int = 1_000  # average training metrics over, and log, this many steps
    env_id: str | None = None  # env to evaluate in; None: the data's, or no evaluation


def _make_sampler(
    algorithm: Algorithm, data: TrainingData, seed: int, device: torch.device
) -> BatchSampler:
    c = algorithm.config
    if algorithm.batch_kind == "subtrajectories":
        return SubtrajectorySampler(data, c.batch_size, c.context, c.return_scale, seed, device)
    return TransitionSampler(data, c.batch_size, seed, device)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _data_summary(data: TrainingData) -> dict[str, int]:
    return {
        "n_steps": data.n_steps,
        "n_episodes": data.n_episodes,
        "n_usable": int(data.step_mask.sum()),
        "n_recorded": data.n_recorded,
        "n_proxy": data.n_proxy,
    }


def _save(
    stem: Path,
    step: int,
    algorithm: Algorithm,
    sampler: BatchSampler,
    data: TrainingData,
    run_config: dict[str, Any],
) -> None:
    """Everything a resumed run or `ssorl eval` needs, after `step` updates."""
    state = {
        "algorithm": algorithm.state_dict(),
        "sampler": sampler.state_dict(),
        "rng": _rng_state(),
        "normalizer": {
            "obs_mean": data.obs_mean,
            "obs_std": data.obs_std,
            "action_low": data.action_low,
            "action_high": data.action_high,
        },
    }
    meta = run_config | {
        "step": step,
        "obs_dim": data.obs_dim,
        "act_dim": data.act_dim,
        "ref_min_score": data.ref_min_score,
        "ref_max_score": data.ref_max_score,
    }
    save_checkpoint(stem, state, meta)


def _truncate_csv(path: Path, step: int) -> None:
    """Drop rows logged after `step` (written after the checkpoint a resume starts from)."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if int(r[0]) <= step]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(kept)


class _CsvLog:
    """Appends rows to a CSV whose columns are fixed by its first row."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns: list[str] | None = None
        if path.exists() and path.stat().st_size:
            with path.open(newline="") as f:
                self.columns = next(csv.reader(f))

    def write(self, row: dict[str, Any]) -> None:
        new = self.columns is None
        if new:
            self.columns = list(row)
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, self.columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)


def train(
    data: TrainingData,
    algo: str,
    algo_config: Any,
    loop: LoopConfig,
    out_dir: str | Path,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train `algo` on `data` for `loop.steps` gradient steps; returns the run's summary.

    With `resume`, continue from `out_dir`'s checkpoint, which must come from the same
    algorithm, config, seed and data; without it, `out_dir` must hold no checkpoint.
    """
    from torch.utils.tensorboard import SummaryWriter

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = select_device(device)
    env_id = loop.env_id or data.env_id
    run_config = {
        "algo": algo,
        "algo_config": asdict(algo_config),
        "loop": asdict(loop),
        "data": _data_summary(data),
        "env_id": env_id,
    }
    stem = out / "checkpoint"
    has_checkpoint = paths(stem)[1].exists()
    if has_checkpoint and not resume:
        raise CheckpointError(
            f"Expected an empty run directory. Got a checkpoint in {str(out)!r}: pass "
            "--resume to continue it, or choose another --out."
        )
    seed_everything(loop.seed)
    normalizer = data.normalizer().to(dev)
    algorithm = make_algorithm(algo, algo_config, data.obs_dim, data.act_dim, dev)
    sampler = _make_sampler(algorithm, data, loop.seed, dev)
    start = 0
    if resume and has_checkpoint:
        state, meta = load_checkpoint(stem)
        saved = {k: meta[k] for k in ("algo", "algo_config", "data")} | {
            "seed": meta["loop"]["seed"]
        }
        wanted = {k: run_config[k] for k in ("algo", "algo_config", "data")} | {"seed": loop.seed}
        if saved != wanted:
            raise CheckpointError(
                f"Expected the checkpoint in {str(out)!r} to match this run. Got {saved!r} "
                f"there and {wanted!r} here: resume with the original options."
            )
        algorithm.load_state_dict(state["algorithm"])
        sampler.load_state_dict(state["sampler"])
        _set_rng_state(state["rng"])
        start = int(meta["step"])
        if start >= loop.steps and (out / "summary.json").exists():
            return json.loads((out / "summary.json").read_text())  # finished already
    for name in ("log.csv", "eval.csv"):  # rows written after the checkpoint are redone
        _truncate_csv(out / name, start)
    (out / "config.json").write_text(json.dumps(run_config, indent=1))
    reference = (
        reference_returns(env_id, data.ref_min_score, data.ref_max_score) if env_id else None
    )
    writer = SummaryWriter(str(out / "tb"), purge_step=start)
    train_log, eval_log = _CsvLog(out / "log.csv"), _CsvLog(out / "eval.csv")
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    last_eval: EvalResult | None = None
    busy = busy_total = 0.0  # seconds in sampling and updates (no eval, no checkpoints)
    interval_from = start
    bar = tqdm(
        total=loop.steps, initial=start, unit="step", disable=not progress, dynamic_ncols=True
    )
    step = start
    try:
        while step < loop.steps:
            tick = time.perf_counter()
            metrics = algorithm.update(sampler.sample())
            busy += time.perf_counter() - tick
            step += 1
            bar.update(1)
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value
                counts[key] = counts.get(key, 0) + 1
            done = step == loop.steps
            if step % loop.log_every == 0 or done:
                row = {"step": step, "steps_per_s": (step - interval_from) / max(busy, 1e-9)}
                row |= {k: sums[k] / counts[k] for k in sorted(sums)}
                train_log.write(row)
                for key, value in row.items():
                    if key != "step":
                        writer.add_scalar(f"train/{key}", value, step)
                sums, counts, interval_from = {}, {}, step
                busy_total, busy = busy_total + busy, 0.0
            if env_id and ((loop.eval_every and step % loop.eval_every == 0) or done):
                last_eval = evaluate(
                    algorithm, normalizer, env_id, loop.eval_episodes, loop.seed, reference
                )
                eval_log.write(
                    {
                        "step": step,
                        "mean_return": last_eval.mean_return,
                        "std_return": last_eval.std_return,
                        "normalized_score": last_eval.normalized_score,
                    }
                )
                writer.add_scalar("eval/mean_return", last_eval.mean_return, step)
                if last_eval.normalized_score is not None:
                    writer.add_scalar("eval/normalized_score", last_eval.normalized_score, step)
                bar.set_postfix(
                    eval_return=f"{last_eval.mean_return:.1f}", score=last_eval.normalized_score
                )
            if (loop.checkpoint_every and step % loop.checkpoint_every == 0) or done:
                _save(stem, step, algorithm, sampler, data, run_config)
    finally:
        bar.close()
        writer.close()
    summary = run_config | {
        "steps": step,
        "steps_this_process": step - start,
        "steps_per_s": (step - start) / busy_total if busy_total > 0 else None,
        "final_eval": last_eval.to_dict() if last_eval else None,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
