"""The IDM study: which network and training choices, which uncertainty, which episodes to label.

On the four shared datasets (Hopper-v5 / HalfCheetah-v5 medium-replay and
medium-expert, medium + expert imported into one store), for each seed:

- `configs` part: every IDM configuration of CONFIGS is trained on the headline's
  split (10% of episodes labelled, drawn from the lowest 50% of returns) and scored
  on the hidden actions: relative MSE (MSE over the actions' variance; 1.0 is no
  better than their mean) overall, inside and outside the labelled return range,
  training seconds on one thread, and for every uncertainty definition the AUROC
  for the worst 10% of errors and the Spearman correlation, on the IDM's held-out
  (val) episodes and on the hidden actions;
- `--compare-selection` part (medium-replay sets): the IDM of --selection-config
  trained on splits that label the same number of steps, chosen by coverage
  (`ssorl data split --select coverage`), farthest-point, at random, and by the paper's
  lowest-return protocol (the headline split itself, whose steps set the budget).

Rows go to benchmarks/results/idm_study.json as each finishes; rerunning the same
command skips the rows already there (a different --max-steps or config set needs
another --out, so that rows of different settings never mix).

    python -m benchmarks.idm_study                              # hours on a 2-core CPU
    python -m benchmarks.idm_study --configs headline,default --seeds 0
    python -m benchmarks.idm_study --compare-selection --configs none --seeds 0,1,2
    python -m benchmarks.idm_study --envs Hopper-v5 --datasets medium-replay \\
        --configs headline --seeds 0 --max-steps 100 --out /tmp/tiny.json  # a smoke run
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import click
import torch

from benchmarks.common import CORPUS, RESULTS, machine
from ssorl_data.durable import write_json
from ssorl_data.idm.evaluate import evaluate_idm
from ssorl_data.idm.model import UNCERTAINTY_DEFINITIONS
from ssorl_data.idm.training import IdmTrainConfig, train_idm
from ssorl_data.io.importing import import_dataset
from ssorl_data.splits import make_split
from ssorl_data.store import TrajectoryStore

ROOT = Path(__file__).resolve().parent
DATASETS = {"medium-replay": ["medium-replay"], "medium-expert": ["medium", "expert"]}
ENVS = ("Hopper-v5", "HalfCheetah-v5")
HEADLINE_SPLIT = {"labelled_fraction": 0.1, "quantile": 0.5}
HEADLINE = {"hidden": (256, 256), "lr": 1e-3, "batch_size": 256, "max_steps": 3000,
            "eval_every": 100, "patience": 5}  # fmt: skip
# name -> IdmTrainConfig fields (the rest are the package defaults); each row names one
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "headline": HEADLINE,
    "headline-512": HEADLINE | {"hidden": (512, 512)},
    "headline-3x256": HEADLINE | {"hidden": (256, 256, 256)},
    "headline-128": HEADLINE | {"hidden": (128, 128)},
    "headline-lr3e-4": HEADLINE | {"lr": 3e-4},
    "headline-batch1024": HEADLINE | {"batch_size": 1024},
    "headline-k0": HEADLINE | {"k": 0},
    "headline-k3": HEADLINE | {"k": 3},
    "headline-separate": HEADLINE | {"shared_trunk": False},
    "headline-no-dropout": HEADLINE | {"dropout": 0.0},
    "headline-patience10": HEADLINE | {"patience": 10, "max_steps": 6000},
    # semi-supervised: self-training on the most confident half of 200k pseudo-labelled steps
    "headline-self-train": HEADLINE | {"self_train_fraction": 0.5},
    # the difference s_{t+1} - s_t as an input of its own, at unit variance
    "headline-delta": HEADLINE | {"delta": True},
    "headline-delta-self-train": HEADLINE | {"delta": True, "self_train_fraction": 0.5},
    # beta-NLL: the mean fitted more like squared error, the variance still learned
    "headline-delta-beta0.5": HEADLINE | {"delta": True, "nll_beta": 0.5},
    "headline-delta-beta1": HEADLINE | {"delta": True, "nll_beta": 1.0},
    "headline-delta-512": HEADLINE | {"delta": True, "hidden": (512, 512)},
    "headline-delta-k0": HEADLINE | {"delta": True, "k": 0},
    # the single changes that helped on seed 0, stacked on the difference input
    "headline-delta-batch1024": HEADLINE | {"delta": True, "batch_size": 1024},
    "headline-delta-batch1024-patience10": HEADLINE
    | {"delta": True, "batch_size": 1024, "patience": 10, "max_steps": 6000},
    "headline-delta-512-batch1024-patience10": HEADLINE
    | {"delta": True, "hidden": (512, 512), "batch_size": 1024, "patience": 10, "max_steps": 6000},
}
SELECTIONS = ("lowest_return", "random", "coverage", "farthest")
KEYS = ("part", "env", "dataset", "name", "seed")  # one row per value of these


def ensure_store(corpus: Path, stores: Path, env: str, dataset: str) -> Path:
    """The dataset's store under `stores`, imported once (into a temporary folder, renamed
    into place, so a killed import leaves nothing that looks finished)."""
    path = stores / f"{env}-{dataset}"
    if path.exists():
        return path
    partial = stores / f".{env}-{dataset}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    stores.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(DATASETS[dataset]):
        import_dataset(corpus / env / f"{name}.hdf5", partial, append=i > 0, progress=False)
    os.replace(partial, path)
    return path


def relative(metrics: dict[str, Any], group: str) -> float | None:
    mse, variance = metrics.get(f"{group}_mse"), metrics.get(f"{group}_action_variance")
    return None if mse is None or not variance else mse / variance


def score(store: TrajectoryStore, split: str, config: IdmTrainConfig) -> dict[str, Any]:
    """Train on `split`, then the row's figures (see the module docstring)."""
    started = time.perf_counter()
    result = train_idm(store, split, None, config, progress=False)
    seconds = time.perf_counter() - started
    metrics = evaluate_idm(result.idm, store, split, compare_uncertainty=True)
    uncertainty = {
        definition: {
            f"{group}_{measure}": metrics[
                f"{group}_uncertainty_{measure}_{definition.replace('-', '_')}"
            ]  # fmt: skip
            for group in ("val", "hidden")
            for measure in ("auroc", "spearman")
        }
        for definition in UNCERTAINTY_DEFINITIONS
    }
    split_attrs = store.read_split(split).attrs
    return {
        "hidden_relative_mse": relative(metrics, "hidden"),
        "hidden_inside_relative_mse": relative(metrics, "hidden_inside"),
        "hidden_outside_relative_mse": relative(metrics, "hidden_outside"),
        "val_relative_mse": relative(metrics, "val"),
        "hidden_steps": metrics["hidden_n_steps"],
        "labelled_episodes": split_attrs["n_visible"],
        "labelled_steps": split_attrs.get("n_visible_steps"),
        "train_seconds": seconds,
        "steps_run": result.idm.provenance.get("steps_run"),
        "self_training": result.idm.provenance.get("self_training"),
        "uncertainty": uncertainty,
    }


def make_splits(store_path: Path, seed: int, selections: bool) -> dict[str, str]:
    """Split names per selection for `seed`: the headline split, and with `selections` the
    random, coverage and farthest splits at its labelled steps."""
    names = {"lowest_return": f"study-lowest_return-{seed}"}
    with TrajectoryStore.open(store_path, mode="a") as store:
        made = make_split(store, names["lowest_return"], seed=seed, overwrite=True,
                          **HEADLINE_SPLIT)  # fmt: skip
        if selections:
            budget = int(store.episode_table().lengths[made.visible].sum())
            for method in SELECTIONS[1:]:
                names[method] = f"study-{method}-{seed}"
                make_split(store, names[method], labelled_steps=budget, select=method,
                           seed=seed, overwrite=True)  # fmt: skip
    return names


@click.command()
@click.option("--envs", default=",".join(ENVS), show_default=True)
@click.option("--datasets", default=",".join(DATASETS), show_default=True)
@click.option("--seeds", default="0,1,2", show_default=True)
@click.option("--configs", default=",".join(CONFIGS), show_default=True,
              help="Comma-separated names of CONFIGS, or 'none' (only "
                   "--compare-selection).")  # fmt: skip
@click.option("--compare-selection", is_flag=True,
              help="Also compare coverage / random / lowest-return at equal labelled steps "
                   "(medium-replay sets only).")  # fmt: skip
@click.option("--selection-config", default="headline", show_default=True)
@click.option("--max-steps", type=click.IntRange(min=1),
              help="Cap every config's gradient steps (smoke runs).")  # fmt: skip
@click.option("--corpus", type=click.Path(path_type=Path), default=CORPUS, show_default=True)
@click.option("--stores", type=click.Path(path_type=Path),
              default=ROOT / "runs" / "idm_study" / "stores", show_default=True)  # fmt: skip
@click.option("--out", type=click.Path(path_type=Path), default=RESULTS / "idm_study.json",
              show_default=True)  # fmt: skip
def main(envs, datasets, seeds, configs, compare_selection, selection_config, max_steps,
         corpus, stores, out) -> None:  # fmt: skip
    torch.set_num_threads(1)
    names = [] if configs == "none" else configs.split(",")
    unknown = [n for n in [*names, selection_config] if n not in CONFIGS]
    if unknown:
        raise click.BadParameter(f"unknown configs {unknown}; known: {', '.join(CONFIGS)}")
    capped = {"max_steps": max_steps} if max_steps else {}
    settings = {"split": HEADLINE_SPLIT, "max_steps_cap": max_steps, "threads": 1,
                "configs": {n: CONFIGS[n] for n in names},
                "selection_config": CONFIGS[selection_config]}  # fmt: skip
    payload = json.loads(out.read_text()) if out.exists() else {"rows": []}
    old = {k: v for k, v in payload.get("settings", {}).items() if k in ("max_steps_cap",)}
    if old and old != {"max_steps_cap": max_steps}:
        raise click.ClickException(
            f"{out} holds rows made with {old}; give another --out for these settings."
        )
    payload["settings"] = {**payload.get("settings", {}), **settings}
    payload["settings"]["configs"] = {**payload["settings"].get("configs", {}),
                                      **settings["configs"]}  # fmt: skip
    payload["machine"] = machine()
    done = {tuple(row[k] for k in KEYS) for row in payload["rows"]}
    out.parent.mkdir(parents=True, exist_ok=True)

    def run(key: tuple, store: TrajectoryStore, split: str, config: str, extra: dict) -> None:
        if key in done:
            return
        fields = {**CONFIGS[config], **capped, "seed": key[-1]}
        row = dict(zip(KEYS, key, strict=True)) | extra
        row |= score(store, split, dataclasses.replace(IdmTrainConfig(), **fields))
        payload["rows"].append(row)
        done.add(key)
        write_json(out, payload)
        click.echo(f"{key}: hidden relative MSE {row['hidden_relative_mse']:.3f} in "
                   f"{row['train_seconds']:.0f}s")  # fmt: skip

    for seed in [int(s) for s in seeds.split(",")]:
        for env in envs.split(","):
            for dataset in datasets.split(","):
                path = ensure_store(corpus, stores, env, dataset)
                selections = compare_selection and dataset == "medium-replay"
                splits = make_splits(path, seed, selections)
                with TrajectoryStore.open(path) as store:
                    for name in names:
                        run(("configs", env, dataset, name, seed), store,
                            splits["lowest_return"], name, {"config": CONFIGS[name]})  # fmt: skip
                    if selections:
                        for method in SELECTIONS:
                            run(("selection", env, dataset, method, seed), store,
                                splits[method], selection_config,
                                {"config": CONFIGS[selection_config]})  # fmt: skip
    click.echo(f"{len(payload['rows'])} rows in {out}")


if __name__ == "__main__":
    main()
