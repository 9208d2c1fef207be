"""The one training loop: batches, updates, logs, evaluation, checkpoints, resumption.

A run directory holds `config.json`, `log.csv` (training metrics averaged over each
`log_every` steps), `eval.csv`, TensorBoard events under `tb/`, the latest
`checkpoint.{safetensors,json}` (and `checkpoint.prev.*`, the one before, kept until a
new one is complete) and, once finished, `summary.json`; a writer lock
(`.ssorl-writer.lock`) keeps a second process out while one trains there.
Resuming restores networks, optimizers, the batch generator and torch's RNG, so a
run killed and resumed produces exactly the parameters of an uninterrupted one (with the
same `precision`, which the checkpoint records; a compiled run resumed compiled).
Metrics stay device tensors until a log row is written, so steps never wait for the device.
`train` reads top to bottom as a list of named steps: prepare the run directory,
build, restore; then per update log, evaluate and save; finish with the summary.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ssorl_data.durable import write_json
from ssorl_data.errors import InvalidArgumentError
from ssorl_data.expect import Expect, check_fields
from ssorl_data.store.lock import DirectoryLock
from ssorl_train.algos import Algorithm, make_algorithm
from ssorl_train.batches import BatchSampler, DTBatchSampler, TransitionSampler
from ssorl_train.checkpoint import (
    RUN_STEM,
    checkpoint_files,
    has_checkpoint,
    load_checkpoint,
    paths,
    previous,
    save_checkpoint,
)
from ssorl_train.common import PRECISIONS, Normalizer, seed_everything, select_device
from ssorl_train.dataset import TrainingData
from ssorl_train.errors import CheckpointError
from ssorl_train.evaluate import EvalResult, check_eval_env, evaluate, reference_returns


@dataclass(frozen=True)
class LoopConfig:
    steps: int  # gradient steps in all (a resumed run counts the steps already done)
    seed: int = 0  # seeds networks, batches and noise; evaluation episodes use seed + i
    eval_every: int = 10_000  # evaluate every this many steps and at the end; 0: end only
    eval_episodes: int = 10  # episodes per evaluation (run in parallel envs)
    checkpoint_every: int = 10_000  # save every this many steps and at the end; 0: end only
    log_every: int = 1_000  # average training metrics over, and log, this many steps
    env_id: str | None = None  # env to evaluate in; None: the data's, or no evaluation
    precision: str = "fp32"  # "fp32" or "bf16" (autocast forwards, fp32 weights and losses)
    compile: bool = False  # torch.compile each update step (compiled on the first steps)

    def __post_init__(self) -> None:
        check_fields(self, LOOP_FIELDS)
        if self.precision not in PRECISIONS:
            raise InvalidArgumentError(
                f"LoopConfig: precision must be one of {list(PRECISIONS)!r}. "
                f"Got {self.precision!r}."
            )


# type and range of every LoopConfig field: checked on construction, and the limits of
# `ssorl train`'s options and of a pipeline's [train]/[eval] keys of the same names
LOOP_FIELDS: dict[str, Expect] = {
    "steps": Expect(int, min=1),
    "seed": Expect(int, min=0),
    "eval_every": Expect(int, min=0),
    "eval_episodes": Expect(int, min=1),
    "checkpoint_every": Expect(int, min=0),
    "log_every": Expect(int, min=1),
    "env_id": Expect(str, optional=True),
    "precision": Expect(str),
    "compile": Expect(bool),
}


def _build(
    algo: str, algo_config: Any, data: TrainingData, loop: LoopConfig, device: str | None
) -> tuple[Normalizer, Algorithm, BatchSampler]:
    """The observation normalizer, the algorithm's networks (initialised from the seed, in
    the loop's precision, compiled if asked) and the batch sampler, on the chosen device."""
    dev = select_device(device)
    seed_everything(loop.seed)  # before the networks are built: their init draws from it
    normalizer = data.normalizer().to(dev)
    algorithm = make_algorithm(
        algo, algo_config, data.obs_dim, data.act_dim, dev, precision=loop.precision
    )
    if loop.compile:
        algorithm.compile()
    return normalizer, algorithm, _make_sampler(algorithm, data, loop.seed, dev)


def _make_sampler(
    algorithm: Algorithm, data: TrainingData, seed: int, device: torch.device
) -> BatchSampler:
    c = algorithm.config
    if algorithm.batch_kind == "subtrajectories":
        return DTBatchSampler(data, c.batch_size, c.context, c.return_scale, seed, device)
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
    out: Path,
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
    save_checkpoint(out / RUN_STEM, state, meta)


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


class _RunLog:
    """What a run reports as it goes: log.csv (training metrics averaged over `log_every`
    steps), eval.csv, TensorBoard scalars and the progress bar. Rows after `start` (written
    after the checkpoint a resume starts from) are dropped, so they are redone exactly."""

    def __init__(
        self, out: Path, run_config: dict[str, Any], start: int, total: int, progress: bool
    ) -> None:
        from torch.utils.tensorboard import SummaryWriter

        _truncate_csv(out / "log.csv", start)
        _truncate_csv(out / "eval.csv", start - 1)  # the evaluation at `start` follows its save
        write_json(out / "config.json", run_config)
        self.writer = SummaryWriter(str(out / "tb"), purge_step=start)
        self.train_csv, self.eval_csv = _CsvLog(out / "log.csv"), _CsvLog(out / "eval.csv")
        self.bar = tqdm(
            total=total, initial=start, unit="step", disable=not progress, dynamic_ncols=True
        )
        self.sums: dict[str, torch.Tensor | float] = {}  # device tensors until `log_train`
        self.counts: dict[str, int] = {}
        self.busy = self.busy_total = 0.0  # seconds in sampling and updates (no eval, no saves)
        self.interval_from = start
        self.last_eval: EvalResult | None = None

    def add(self, metrics: dict[str, torch.Tensor | float], seconds: float) -> None:
        """Count one step's metrics towards the next training row (summed on the device:
        no value is read back here)."""
        self.busy += seconds
        self.bar.update(1)
        for key, value in metrics.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1

    def log_train(self, step: int) -> None:
        """Write the metrics averaged since the last row, and the speed over those steps."""
        row = {"step": step, "steps_per_s": (step - self.interval_from) / max(self.busy, 1e-9)}
        row |= {k: float(self.sums[k]) / self.counts[k] for k in sorted(self.sums)}
        self.train_csv.write(row)
        for key, value in row.items():
            if key != "step":
                self.writer.add_scalar(f"train/{key}", value, step)
        self.sums, self.counts, self.interval_from = {}, {}, step
        self.busy_total, self.busy = self.busy_total + self.busy, 0.0

    def log_eval(self, step: int, result: EvalResult) -> None:
        self.last_eval = result
        self.eval_csv.write(
            {
                "step": step,
                "mean_return": result.mean_return,
                "std_return": result.std_return,
                "normalized_score": result.normalized_score,
            }
        )
        self.writer.add_scalar("eval/mean_return", result.mean_return, step)
        if result.normalized_score is not None:
            self.writer.add_scalar("eval/normalized_score", result.normalized_score, step)
        self.bar.set_postfix(eval_return=f"{result.mean_return:.1f}", score=result.normalized_score)

    def close(self) -> None:
        self.bar.close()
        self.writer.close()


def train(
    data: TrainingData,
    algo: str,
    algo_config: Any,
    loop: LoopConfig,
    out_dir: str | Path,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train `algo` on `data` for `loop.steps` gradient steps; returns the run's summary.

    With `resume`, continue from `out_dir`'s checkpoint, which must come from the same
    algorithm, config, seed and data; without it, `out_dir` must hold no run, unless
    `overwrite` replaces it. The run directory is locked while training: a second
    process writing it is refused. Each checkpoint is saved before the evaluation of its
    step, so a crash in evaluation keeps the trained agent; a resume redoes that evaluation.
    """
    out = Path(out_dir)
    check_eval_env(loop.env_id or data.env_id, data.obs_dim, data.act_dim)  # before any work
    with DirectoryLock(out, "training run"):
        run_config = _prepare_run_dir(out, algo, algo_config, loop, data, resume, overwrite)
        saved = _read_checkpoint(out, run_config) if resume else None  # checked before building
        normalizer, algorithm, sampler = _build(algo, algo_config, data, loop, device)
        start = _restore(saved, algorithm, sampler) if saved else 0
        if start and start >= loop.steps and (finished := _read_summary(out)) is not None:
            return finished
        run_log = _RunLog(out, run_config, start, loop.steps, progress)
        evaluate_now = _evaluator(algorithm, normalizer, loop, data, run_config["env_id"])
        step = start
        try:
            if start and evaluate_now and (_due(start, loop.eval_every) or start == loop.steps):
                run_log.log_eval(start, evaluate_now())  # it may have died there, after the save
            while step < loop.steps:
                metrics, seconds = _update(algorithm, sampler)
                step += 1
                run_log.add(metrics, seconds)
                done = step == loop.steps
                if step % loop.log_every == 0 or done:
                    run_log.log_train(step)
                if _due(step, loop.checkpoint_every) or done:
                    _save(out, step, algorithm, sampler, data, run_config)
                if evaluate_now and (_due(step, loop.eval_every) or done):
                    run_log.log_eval(step, evaluate_now())
        finally:
            run_log.close()
        return _finish(out, run_config, start, step, run_log)


def _read_summary(out: Path) -> dict[str, Any] | None:
    """summary.json of a finished run; None when absent, unreadable or not an object (edited
    or damaged), so that a resume redoes the final evaluation and writes it again."""
    try:
        summary = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


# what a run writes into its directory besides the checkpoint files (`--overwrite` removes them)
_RUN_FILES = ("config.json", "log.csv", "eval.csv", "summary.json", "tb")


def _prepare_run_dir(
    out: Path,
    algo: str,
    algo_config: Any,
    loop: LoopConfig,
    data: TrainingData,
    resume: bool,
    overwrite: bool,
) -> dict[str, Any]:
    """Refuse a run directory holding a finished or partial run unless resuming (or clear it
    with `overwrite`), and return the run's config (what config.json, the checkpoint and the
    summary record). The caller holds the directory's lock."""
    if resume and overwrite:
        raise CheckpointError(
            f"{out}: --resume continues the run there and --overwrite replaces it; pass one."
        )
    if not resume and (has_checkpoint(out / RUN_STEM) or (out / "summary.json").exists()):
        if not overwrite:
            raise CheckpointError(
                f"Expected an empty run directory. Got a finished or partial run in "
                f"{str(out)!r}: pass --resume to continue it, --overwrite to replace it, or "
                "choose another --out."
            )
        for path in [*checkpoint_files(out / RUN_STEM), *(out / name for name in _RUN_FILES)]:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    return {
        "algo": algo,
        "algo_config": asdict(algo_config),
        "loop": asdict(loop),
        "data": _data_summary(data),
        "data_source": data.source,  # store identity and sizes, split and relabel identities
        "env_id": loop.env_id or data.env_id,
    }


def _read_checkpoint(
    out: Path, run_config: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The run directory's newest complete checkpoint (state, meta), validated and matched
    against this run; None without any checkpoint file (the run starts afresh)."""
    stem = out / RUN_STEM
    if not any(p.exists() for p in (*paths(stem), *paths(previous(stem)))):
        return None
    state, meta = load_checkpoint(stem)
    if meta["step"] > run_config["loop"]["steps"]:
        raise CheckpointError(
            f"{out}: its checkpoint holds {meta['step']} steps (key 'step'), more than this "
            f"run's --steps {run_config['loop']['steps']}: pass --steps {meta['step']} or "
            "more to continue it."
        )
    # precision changes every rounding, so a resume in another one would not continue the
    # run; checkpoints from before it existed were fp32. compile may differ (see README).
    saved = {k: meta[k] for k in ("algo", "algo_config", "data")} | {
        "seed": meta["loop"]["seed"],
        "precision": meta["loop"].get("precision", "fp32"),
    }
    wanted = {k: run_config[k] for k in ("algo", "algo_config", "data")}
    wanted |= {k: run_config["loop"][k] for k in ("seed", "precision")}
    if saved != wanted:
        changes = "; ".join(differences(saved, wanted))
        raise CheckpointError(
            f"Expected the checkpoint in {str(out)!r} to match this run. These differ "
            f"(checkpoint -> this run): {changes}. Resume with the original options."
        )
    return state, meta


def _restore(
    saved: tuple[dict[str, Any], dict[str, Any]], algorithm: Algorithm, sampler: BatchSampler
) -> int:
    """Load a checkpoint read by `_read_checkpoint` into the algorithm, the sampler and
    torch's RNG; returns the steps it holds."""
    state, meta = saved
    algorithm.load_state_dict(state["algorithm"])
    sampler.load_state_dict(state["sampler"])
    _set_rng_state(state["rng"])
    return int(meta["step"])


def differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """'key: old -> new' for every field that differs, nested dicts by dotted key."""
    lines = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            lines += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            lines.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return lines


def _update(
    algorithm: Algorithm, sampler: BatchSampler
) -> tuple[dict[str, torch.Tensor | float], float]:
    """One gradient step on one batch: its metrics and the seconds it took."""
    tick = time.perf_counter()
    metrics = algorithm.update(sampler.sample())
    return metrics, time.perf_counter() - tick


def _due(step: int, every: int) -> bool:
    """Whether a periodic action (evaluation, checkpoint) is due; `every` 0: never."""
    return bool(every) and step % every == 0


def _evaluator(
    algorithm: Algorithm,
    normalizer: Normalizer,
    loop: LoopConfig,
    data: TrainingData,
    env_id: str | None,
) -> Callable[[], EvalResult] | None:
    """Rolls out the current policy in the run's env (seeds loop.seed + i); None without an
    env to evaluate in."""
    if not env_id:
        return None
    reference = reference_returns(env_id, data.ref_min_score, data.ref_max_score)
    return lambda: evaluate(algorithm, normalizer, env_id, loop.eval_episodes, loop.seed, reference)


def _finish(
    out: Path, run_config: dict[str, Any], start: int, step: int, run_log: _RunLog
) -> dict[str, Any]:
    """Write and return summary.json: the run's config, its steps, speed and last evaluation."""
    busy = run_log.busy_total
    summary = run_config | {
        "steps": step,
        "steps_this_process": step - start,
        "steps_per_s": (step - start) / busy if busy > 0 else None,
        "final_eval": run_log.last_eval.to_dict() if run_log.last_eval else None,
    }
    write_json(out / "summary.json", summary)
    return summary
