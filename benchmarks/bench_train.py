"""Offline RL quality and throughput on the Hopper-v5 corpus (full mode).

Writes benchmarks/results/train.json:
{"rows": [{"algo", "dataset", "mode", "seed", "grad_steps", "steps_per_s",
           "normalized_score", "dataset_normalized_return"}]}

Resumable twice over: a row already in the JSON (same algo, dataset, mode, seed and
grad_steps) is skipped, and an interrupted run continues from its checkpoint under
--runs. Slow: the published step counts (TD3+BC 1M, DT 100k) take hours on a CPU;
--steps shortens every run. DT needs the `ssorl_data.ops` kernels.

    python benchmarks/bench_train.py --algos td3bc --datasets medium --steps 200000
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from ssorl_data.durable import write_json
from ssorl_data.episode_index import EpisodeIndex
from ssorl_data.io.importing import import_dataset
from ssorl_data.reference_scores import normalized_score
from ssorl_train import loop
from ssorl_train.algos import make_config
from ssorl_train.dataset import TrainingData, load_training_data
from ssorl_train.evaluate import reference_returns

ROOT = Path(__file__).resolve().parent
CORPUS = ROOT.parents[1] / "shared" / "corpus" / "Hopper-v5"
PUBLISHED_STEPS = {"td3bc": 1_000_000, "iql": 1_000_000, "cql": 1_000_000, "dt": 100_000}


def dataset_normalized_return(data: TrainingData) -> float:
    """Normalised mean undiscounted return of the data's episodes (as the corpus README)."""
    episode = EpisodeIndex.from_lengths(data.lengths.numpy()).episode_of_step()
    returns = np.bincount(episode, weights=data.rewards.numpy().astype(np.float64))
    reference = reference_returns(data.env_id, data.ref_min_score, data.ref_max_score)
    return normalized_score(float(returns.mean()), *reference)


def _store(source: Path, runs: Path) -> Path:
    """The corpus file imported once into a store under the runs directory."""
    store = runs / "stores" / f"{source.parent.name}-{source.stem}"
    if not store.exists():
        import_dataset(source, store, progress=False)
    return store


@click.command()
@click.option("--algos", default="td3bc,dt", help="Comma-separated algorithms.")
@click.option("--datasets", default="medium-replay,medium", help="Comma-separated corpus files.")
@click.option("--seeds", default="0", help="Comma-separated seeds.")
@click.option("--steps", type=int, default=None, help="Gradient steps (default: published).")
@click.option("--eval-every", type=int, default=50_000, help="Steps between evaluations.")
@click.option("--eval-episodes", type=int, default=10, help="Episodes per evaluation.")
@click.option("--corpus", type=click.Path(exists=True), default=str(CORPUS))
@click.option("--runs", type=click.Path(), default=str(ROOT / "runs"), help="Run directories.")
@click.option("--out", type=click.Path(), default=str(ROOT / "results" / "train.json"))
def main(
    algos: str,
    datasets: str,
    seeds: str,
    steps: int | None,
    eval_every: int,
    eval_episodes: int,
    corpus: str,
    runs: str,
    out: str,
) -> None:
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    rows = json.loads(out_path.read_text())["rows"] if out_path.exists() else []
    for dataset in datasets.split(","):
        data = load_training_data(_store(Path(corpus) / f"{dataset}.hdf5", Path(runs)))
        for algo in algos.split(","):
            for seed in map(int, seeds.split(",")):
                grad_steps = steps or PUBLISHED_STEPS[algo]
                key = {
                    "algo": algo,
                    "dataset": dataset,
                    "mode": "full",
                    "seed": seed,
                    "grad_steps": grad_steps,
                }
                if any(all(r[k] == v for k, v in key.items()) for r in rows):
                    click.echo(f"skip {key} (done)")
                    continue
                run_dir = Path(runs) / f"{algo}-{dataset}-full-seed{seed}-{grad_steps}"
                config = loop.LoopConfig(
                    steps=grad_steps,
                    seed=seed,
                    eval_every=eval_every,
                    eval_episodes=eval_episodes,
                    checkpoint_every=min(eval_every, 50_000),
                )
                summary = loop.train(data, algo, make_config(algo), config, run_dir, resume=True)
                rows.append(
                    key
                    | {
                        "steps_per_s": summary["steps_per_s"],
                        "normalized_score": summary["final_eval"]["normalized_score"],
                        "dataset_normalized_return": dataset_normalized_return(data),
                    }
                )
                write_json(out_path, {"rows": rows})
                click.echo(json.dumps(rows[-1]))


if __name__ == "__main__":
    main()
