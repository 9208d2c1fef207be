"""Training speed per precision and compile mode (issue 14), and what it does to scores.

Speed: for each algorithm at its published size, modes eager-fp32 / bf16 / compiled /
compiled+bf16 take turns (`best_of_interleaved`) running a short and a long burst of
updates on batches drawn from Hopper-v5 medium-replay, as `ssorl train` draws them;
steps/s = (long - short) / (time of long - time of short), so start-up cancels. Compile
time is measured separately: the first two updates of a fresh compiled algorithm, less
two updates at its measured speed. One row per (device, threads, algo, mode); on a machine
without CUDA the cuda rows are written with "skipped": "no GPU".

--scores: the normalised score of 3 seeds at the headline's budget (TD3+BC 20k steps,
DT 1k steps with a 100-step warm-up, as benchmarks/ss_headline.py) on Hopper-v5
medium-replay, full mode, for eager-fp32 and the fastest one-thread mode of the speed
rows; rows are written as they finish and skipped when present (interrupted runs resume
from their checkpoints under --runs).

Writes benchmarks/results/train_speed.json:
{"settings", "rows": [{"device", "threads", "algo", "mode", "steps_per_s", "vs_eager_fp32",
"compile_s"} or {..., "skipped"}], "scores": [{"algo", "mode", "seed", "grad_steps",
"normalized_score", "steps_per_s"}]}

    python -m benchmarks.bench_train_speed                   # the lead's run: long
    python -m benchmarks.bench_train_speed --short 2 --long 4 --repeats 1 --algos td3bc
    python -m benchmarks.bench_train_speed --scores
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
import torch

from benchmarks.bench_train import _store
from benchmarks.common import CORPUS, RESULTS, best_of_interleaved, write_results
from ssorl_train import loop
from ssorl_train.algos import Algorithm, make_algorithm, make_config
from ssorl_train.common import seed_everything
from ssorl_train.dataset import TrainingData, load_training_data

ROOT = Path(__file__).resolve().parent
MODES = {  # mode -> (precision, compile)
    "eager-fp32": ("fp32", False),
    "bf16": ("bf16", False),
    "compiled": ("fp32", True),
    "compiled+bf16": ("bf16", True),
}
# the headline's budget (benchmarks/ss_headline.py) and DT's warm-up there
SCORE_STEPS = {"td3bc": 20_000, "dt": 1_000}
# default bursts per algorithm (short, long): a few seconds of updates each at eager speed
BURSTS = {"td3bc": (20, 120), "iql": (20, 120), "cql": (2, 10), "dt": (2, 10)}


def _algorithm(algo: str, data: TrainingData, mode: str, device: torch.device) -> Algorithm:
    precision, compiled = MODES[mode]
    seed_everything(0)
    algorithm = make_algorithm(
        algo, make_config(algo), data.obs_dim, data.act_dim, device, precision=precision
    )
    if compiled:
        algorithm.compile()
    return algorithm


def _burst(algorithm: Algorithm, sampler: Any, steps: int, device: torch.device) -> None:
    """`steps` updates, then wait for the device (metrics stay tensors, as in the loop)."""
    for _ in range(steps):
        algorithm.update(sampler.sample())
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(
    algo: str,
    data: TrainingData,
    device: torch.device,
    threads: int,
    modes: list[str],
    bursts: tuple[int, int],
    repeats: int,
) -> list[dict[str, Any]]:
    """Rows of steps/s and compile time of each mode of `algo`, at `threads` threads."""
    torch.set_num_threads(threads)
    short, long = bursts
    built, compile_s = {}, {}
    for mode in modes:
        algorithm = _algorithm(algo, data, mode, device)
        sampler = loop._make_sampler(algorithm, data, 0, device)
        tick = time.perf_counter()
        _burst(algorithm, sampler, 2, device)  # compiles, when compiled
        compile_s[mode] = time.perf_counter() - tick
        built[mode] = (algorithm, sampler)
    runs = {}
    for mode, (algorithm, sampler) in built.items():
        for steps in (short, long):
            runs[f"{mode}/{steps}"] = lambda a=algorithm, s=sampler, n=steps: _burst(
                a, s, n, device
            )
    best = best_of_interleaved(repeats, runs)
    rows = []
    for mode in modes:
        seconds = best[f"{mode}/{long}"] - best[f"{mode}/{short}"]
        speed = (long - short) / seconds if seconds > 0 else None
        row = {"device": device.type, "threads": threads, "algo": algo, "mode": mode}
        row["steps_per_s"] = speed
        if MODES[mode][1] and speed:
            row["compile_s"] = compile_s[mode] - 2 / speed
        rows.append(row)
    base = next((r["steps_per_s"] for r in rows if r["mode"] == "eager-fp32"), None)
    for row in rows:
        if base and row["steps_per_s"]:
            row["vs_eager_fp32"] = row["steps_per_s"] / base
    return rows


def _fastest_mode(rows: list[dict[str, Any]], algo: str) -> str:
    """The mode with the most one-thread CPU steps/s for `algo` in the speed rows."""
    mine = [r for r in rows if r["algo"] == algo and r["threads"] == 1 and r.get("steps_per_s")]
    mine = [r for r in mine if r["device"] == "cpu"]
    if not mine:
        raise click.ClickException(f"no one-thread CPU speed rows for {algo}: run the speed part.")
    return max(mine, key=lambda r: r["steps_per_s"])["mode"]


def scores(
    data: TrainingData, algos: list[str], seeds: list[int], modes: dict[str, list[str]],
    runs: Path, eval_episodes: int, steps: dict[str, int], save: Any,
) -> None:  # fmt: skip
    """Train and evaluate each (algo, mode, seed) not yet in the results; `save` writes."""
    for algo in algos:
        for mode in modes[algo]:
            for seed in seeds:
                key = {"algo": algo, "mode": mode, "seed": seed, "grad_steps": steps[algo]}
                if save.has(key):
                    continue
                precision, compiled = MODES[mode]
                overrides = {"warmup_steps": max(steps[algo] // 10, 1)} if algo == "dt" else {}
                config = loop.LoopConfig(
                    steps=steps[algo], seed=seed, eval_every=0, eval_episodes=eval_episodes,
                    checkpoint_every=steps[algo] // 4 or 1, log_every=min(1000, steps[algo]),
                    precision=precision, compile=compiled,
                )  # fmt: skip
                run_dir = runs / f"{algo}-{mode}-seed{seed}-{steps[algo]}"
                summary = loop.train(
                    data, algo, make_config(algo, overrides), config, run_dir, resume=True,
                    progress=False,
                )  # fmt: skip
                save.add(
                    key
                    | {
                        "normalized_score": summary["final_eval"]["normalized_score"],
                        "steps_per_s": summary["steps_per_s"],
                    }
                )


class _Results:
    """train_speed.json, rewritten whole after every row (a killed run keeps the rows so far)."""

    def __init__(self, settings: dict[str, Any], directory: Path) -> None:
        self.directory = directory
        path = directory / "train_speed.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        self.payload = {"settings": old.get("settings", {}) | settings,
                        "rows": old.get("rows", []), "scores": old.get("scores", [])}  # fmt: skip

    def has(self, key: dict[str, Any]) -> bool:
        return any(all(r.get(k) == v for k, v in key.items()) for r in self.payload["scores"])

    def add(self, row: dict[str, Any]) -> None:
        self.payload["scores"].append(row)
        self.write()
        click.echo(json.dumps(row))

    def write(self) -> None:
        write_results("train_speed", self.payload, self.directory)


@click.command()
@click.option("--algos", default="td3bc,iql,cql,dt", show_default=True)
@click.option("--modes", default=",".join(MODES), show_default=True)
@click.option("--threads", "thread_counts", default="1,2", show_default=True)
@click.option("--repeats", type=int, default=3, show_default=True, help="Interleaved rounds.")
@click.option("--short", type=int, default=None, help="Updates in the short burst.")
@click.option("--long", "long_", type=int, default=None, help="Updates in the long burst.")
@click.option("--dataset", default="medium-replay", show_default=True)
@click.option("--scores", "score_part", is_flag=True, help="Run the score part instead.")
@click.option("--seeds", default="0,1,2", show_default=True, help="Seeds of --scores.")
@click.option("--score-algos", default="td3bc,dt", show_default=True)
@click.option("--td3bc-steps", type=int, default=SCORE_STEPS["td3bc"], show_default=True)
@click.option("--dt-steps", type=int, default=SCORE_STEPS["dt"], show_default=True)
@click.option("--eval-episodes", type=int, default=10, show_default=True)
@click.option("--corpus", type=click.Path(path_type=Path), default=CORPUS / "Hopper-v5")
@click.option("--runs", type=click.Path(path_type=Path), default=ROOT / "runs" / "train_speed")
@click.option("--results", "results_dir", type=click.Path(path_type=Path), default=RESULTS)
def main(
    algos: str, modes: str, thread_counts: str, repeats: int, short: int | None,
    long_: int | None, dataset: str, score_part: bool, seeds: str, score_algos: str,
    td3bc_steps: int, dt_steps: int, eval_episodes: int, corpus: Path, runs: Path,
    results_dir: Path,
) -> None:  # fmt: skip
    data = load_training_data(_store(corpus / f"{dataset}.hdf5", runs))
    results = _Results({"dataset": f"Hopper-v5 {dataset}"}, results_dir)
    if score_part:
        # one thread, as the speed rows that chose the mode: the default (every core) ran
        # 10x slower beside other jobs, its OpenMP threads waiting on each other
        torch.set_num_threads(1)
        steps = {"td3bc": td3bc_steps, "dt": dt_steps}
        chosen = score_algos.split(",")
        rows = results.payload["rows"]
        modes_of = {a: list(dict.fromkeys(["eager-fp32", _fastest_mode(rows, a)])) for a in chosen}
        results.payload["settings"] |= {"score_steps": steps, "score_modes": modes_of}
        scores(data, chosen, [int(s) for s in seeds.split(",")], modes_of, runs,
               eval_episodes, steps, results)  # fmt: skip
        return
    mode_list = modes.split(",")
    results.payload["rows"] = []
    settings = results.payload["settings"]
    settings |= {"repeats": repeats, "bursts": {}}
    for algo in algos.split(","):
        bursts = (short or BURSTS[algo][0], long_ or BURSTS[algo][1])
        settings["bursts"][algo] = bursts
        for device in ("cpu", "cuda"):
            for threads in [int(t) for t in thread_counts.split(",")]:
                if device == "cuda" and not torch.cuda.is_available():
                    rows = [{"device": "cuda", "threads": threads, "algo": algo, "mode": mode,
                             "skipped": "no GPU"} for mode in mode_list]  # fmt: skip
                else:
                    rows = measure(
                        algo, data, torch.device(device), threads, mode_list, bursts, repeats
                    )
                results.payload["rows"] += rows
                results.write()
                for row in rows:
                    click.echo(json.dumps(row))


if __name__ == "__main__":
    main()
