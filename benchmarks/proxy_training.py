"""Do the proxy-label choices pay off in the agent? TD3+BC scores at the headline's budget.

For each shared dataset (benchmarks/idm_study.py's four) and seed, an IDM of the headline
config is trained on the headline split (10% of episodes labelled, from the lowest 50%
of returns) and relabels the store; TD3+BC then trains semi-supervised on it three ways:

- `plain`: every proxy action counts the same (the headline's semi-supervised agent);
- `drop-uncertain`: the DROP_UNCERTAIN most uncertain proxy steps are left out
  (`ssorl train --drop-uncertain`);
- `weight-beta`: proxy steps are drawn with weight exp(-beta u / median u)
  (`ssorl train --weight-beta`).

On the medium-replay sets, the episodes to label are also chosen by `coverage` and at
`random` with the same number of labelled steps (`ssorl data split --select`), each with
its own IDM and a `plain` agent, against the lowest-return protocol's.

Rows go to benchmarks/results/proxy_training.json as each agent finishes: normalised
score, and the IDM's relative MSE on the hidden actions. A rerun skips finished rows.
Each process uses its own stores (--stores; a seed's store is its own folder), so two
processes with different --seeds can run side by side.

    python -m benchmarks.proxy_training --seeds 0,1,2         # hours on a 2-core CPU
    python -m benchmarks.proxy_training --envs Hopper-v5 --datasets medium-replay \\
        --seeds 0 --steps 200 --out /tmp/proxy.json           # a smoke run
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import click
import torch

from benchmarks.common import CORPUS, RESULTS, machine, merge_rows
from benchmarks.idm_study import DATASETS, ENVS, HEADLINE, ensure_store, make_splits, relative
from ssorl_data.durable import write_json
from ssorl_data.idm.evaluate import evaluate_idm
from ssorl_data.idm.training import IdmTrainConfig, train_idm
from ssorl_data.relabel import relabel
from ssorl_data.store import TrajectoryStore
from ssorl_train import loop
from ssorl_train.algos import make_config
from ssorl_train.dataset import load_training_data

ROOT = Path(__file__).resolve().parent
DROP_UNCERTAIN = 0.2
WEIGHT_BETA = 1.0
VARIANTS = {"plain": {}, "drop-uncertain": {"drop_uncertain": DROP_UNCERTAIN},
            "weight-beta": {"weight_beta": WEIGHT_BETA}}  # fmt: skip
SELECTIONS = ("lowest_return", "coverage", "random")
KEYS = ("env", "dataset", "selection", "variant", "seed")


def idm_and_relabel(
    store_path: Path, split: str, seed: int, work: Path, max_steps: int | None
) -> dict[str, Any]:
    """Train the headline IDM on `split`, relabel the store with it into run `split`; its
    hidden-action relative MSE."""
    capped = {"max_steps": max_steps} if max_steps else {}
    config = dataclasses.replace(IdmTrainConfig(), **HEADLINE | capped, seed=seed)
    with TrajectoryStore.open(store_path) as store:
        trained = train_idm(store, split, work / f"idm-{split}", config, progress=False,
                            overwrite=True)  # fmt: skip
        metrics = evaluate_idm(trained.idm, store, split)
    relabel(store_path, work / f"idm-{split}", split, overwrite=True, progress=False)
    return {"idm_hidden_relative_mse": relative(metrics, "hidden"),
            "idm_seconds": trained.seconds}  # fmt: skip


def agent(store_path: Path, split: str, view: dict[str, Any], seed: int, steps: int,
          episodes: int, run_dir: Path) -> dict[str, Any]:  # fmt: skip
    """A TD3+BC agent trained semi-supervised on `split` and its relabel run."""
    data = load_training_data(store_path, "semi-supervised", split, split, **view)
    config = loop.LoopConfig(steps=steps, seed=seed, eval_every=0, eval_episodes=episodes,
                             checkpoint_every=0, log_every=min(1000, steps))  # fmt: skip
    started = time.perf_counter()
    summary = loop.train(data, "td3bc", make_config("td3bc"), config, run_dir, progress=False,
                         overwrite=True)  # fmt: skip
    final = summary["final_eval"] or {}
    return {"normalized_score": final.get("normalized_score"),
            "mean_return": final.get("mean_return"), "train_seconds": time.perf_counter() - started,
            "n_proxy": summary["data"].get("n_proxy")}  # fmt: skip


@click.command()
@click.option("--envs", default=",".join(ENVS), show_default=True)
@click.option("--datasets", default=",".join(DATASETS), show_default=True)
@click.option("--seeds", default="0,1,2", show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=20_000, show_default=True,
              help="TD3+BC gradient steps (the headline's budget).")  # fmt: skip
@click.option("--eval-episodes", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--idm-max-steps", type=click.IntRange(min=1),
              help="Cap the IDM's gradient steps (smoke runs).")  # fmt: skip
@click.option("--corpus", type=click.Path(path_type=Path), default=CORPUS, show_default=True)
@click.option("--stores", type=click.Path(path_type=Path),
              default=ROOT / "runs" / "proxy_training", show_default=True)  # fmt: skip
@click.option("--out", type=click.Path(path_type=Path), default=RESULTS / "proxy_training.json",
              show_default=True)  # fmt: skip
def main(envs, datasets, seeds, steps, eval_episodes, idm_max_steps, corpus, stores,
         out) -> None:  # fmt: skip
    torch.set_num_threads(1)
    settings = {"td3bc_steps": steps, "eval_episodes": eval_episodes, "idm": HEADLINE,
                "idm_max_steps": idm_max_steps, "variants": VARIANTS, "threads": 1}  # fmt: skip
    payload = json.loads(out.read_text()) if out.exists() else {"rows": []}
    if payload.get("settings", settings) != settings:
        raise click.ClickException(
            f"{out} holds rows made with {payload['settings']}; give another --out."
        )
    payload |= {"settings": settings, "machine": machine()}
    done = {tuple(row[k] for k in KEYS) for row in payload["rows"]}
    out.parent.mkdir(parents=True, exist_ok=True)
    for seed in [int(s) for s in seeds.split(",")]:
        for env in envs.split(","):
            for dataset in datasets.split(","):
                selections = SELECTIONS if dataset == "medium-replay" else SELECTIONS[:1]
                variants = {s: VARIANTS if s == "lowest_return" else {"plain": {}}
                            for s in selections}  # fmt: skip
                todo = [(env, dataset, s, v, seed) for s in selections for v in variants[s]]
                if all(key in done for key in todo):
                    continue
                work = stores / f"seed{seed}"
                path = ensure_store(corpus, work, env, dataset)
                splits = make_splits(path, seed, dataset == "medium-replay")
                for selection in selections:
                    runs = work / "runs" / path.name  # beside the store, not inside it
                    idm = idm_and_relabel(path, splits[selection], seed, runs, idm_max_steps)
                    for variant, view in variants[selection].items():
                        key = (env, dataset, selection, variant, seed)
                        run_dir = runs / f"agent-{selection}-{variant}"
                        row = dict(zip(KEYS, key, strict=True)) | idm | agent(
                            path, splits[selection], view, seed, steps, eval_episodes, run_dir
                        )  # fmt: skip
                        shutil.rmtree(run_dir, ignore_errors=True)
                        payload["rows"] = merge_rows(payload["rows"], [row], KEYS)
                        done.add(key)
                        write_json(out, payload)
                        click.echo(f"{key}: score {row['normalized_score']:.1f}, IDM relative "
                                   f"MSE {row['idm_hidden_relative_mse']:.3f}")  # fmt: skip
    click.echo(f"{len(payload['rows'])} rows in {out}")


if __name__ == "__main__":
    main()
