"""The headline experiment: does semi-supervised offline RL match fully labelled data?

On the corpus's Hopper-v5 and HalfCheetah-v5 medium-replay and medium-expert
(medium + expert imported into one store) sets, TD3+BC on all four and DT on the
two medium-replay sets, for each seed, as `ssorl run` cells (ssorl_train.sweep), so a
seed replicates the whole pipeline: split, IDM (the package default) and agents.
Each cell is one labelling variant:

- `10%`: 10% of episodes labelled, drawn from the lowest 50% of returns; agents
  `full`, `semi-supervised` (the rest relabelled by the IDM) and `labelled-only`;
- `2%`: the same protocol at 2% labelled; `semi-supervised` only;
- `drop-uncertain`: the `10%` split, with the DROP_UNCERTAIN most uncertain proxy steps
  left out (TD3+BC; benchmarks/proxy_training.py found it the better of the two
  uncertainty-aware modes, within noise of plain);
- `coverage`: as many labelled steps as that seed's `10%` split, spent by coverage
  selection over every episode (TD3+BC; `ssorl data split --select coverage`);
- `all-actions IDM`: the `10%` split's semi-supervised agent, relabelled by an IDM that
  learned from every recorded action, the hidden ones included (`[idm] episodes = "all"`):
  an upper bound that tells the IDM's share of the gap to `full` from the method's.

Agents are evaluated every 10% of their budget (the learning curves) and train in the
fastest mode of the training-speed issue (TD3+BC compiled + bf16, DT bf16).

Writes benchmarks/results/ss_headline.json after every finished cell:
{"settings", "rows": [{"env", "dataset", "algo", "variant", "mode", "seed", "grad_steps",
"normalized_score"}], "idm": [...], "curves": [...]}, one row per finished agent (never
an unfinished one), per cell how well its IDM recovered the hidden actions (MSE over
their variance: 1.0 is no better than predicting their mean), inside and outside the
labelled return quantile, and per agent its evaluations; and a PNG of the curves per
(env, dataset, algo) under benchmarks/results/ss_headline/, with one of every
semi-supervised agent's share of `full` against its IDM's error (SHARE_PNG).
Resumable: rerun the same command; finished stages are skipped and interrupted
agents continue from their checkpoints under --runs. Cells run in the order of
`priority`: the `10%` variant of both algorithms seed by seed, then TD3+BC's other
variants, then DT's.

    python -m benchmarks.ss_headline            # a working day and more on a 2-core CPU
    python -m benchmarks.ss_headline --seeds 0 --td3bc-steps 2000 --dt-steps 100
    python -m benchmarks.ss_headline --seeds 3,4,5 --cells 'Hopper-v5-medium-replay-td3bc-*'
"""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path
from typing import Any, NamedTuple

import click

from benchmarks.common import CORPUS, RESULTS, merge_rows
from benchmarks.idm_study import DATASETS, ENVS, HEADLINE_SPLIT, ensure_store
from ssorl_data.durable import write_json
from ssorl_data.store import EpisodeTable
from ssorl_train.pipeline import PipelineConfig
from ssorl_train.sweep import Cell, CellResult, run_cells

ROOT = Path(__file__).resolve().parent
ALGOS = {"medium-replay": ["td3bc", "dt"], "medium-expert": ["td3bc"]}
MODES = ("full", "semi-supervised", "labelled-only")
DROP_UNCERTAIN = 0.2


class Variant(NamedTuple):
    """A labelling variant: its [split] section, extra [train] and [idm] keys, the modes it
    trains and the algorithms it runs for."""

    split: dict[str, Any]
    train: dict[str, Any]
    modes: list[str]
    algos: tuple[str, ...]
    idm: dict[str, Any] = {}

    def settings(self) -> dict[str, Any]:
        """As the results JSON records it (no `idm` key where it adds none, as before the
        field was added, so earlier results keep their settings)."""
        fields = {"split": self.split, "train": self.train, "modes": self.modes,
                  "algos": self.algos}  # fmt: skip
        return fields | ({"idm": self.idm} if self.idm else {})


SEMI = ["semi-supervised"]
VARIANTS: dict[str, Variant] = {
    "10%": Variant(HEADLINE_SPLIT, {}, list(MODES), ("td3bc", "dt")),
    "2%": Variant(HEADLINE_SPLIT | {"labelled_fraction": 0.02}, {}, SEMI, ("td3bc", "dt")),
    "drop-uncertain": Variant(HEADLINE_SPLIT, {"drop_uncertain": DROP_UNCERTAIN}, SEMI,
                              ("td3bc",)),
    "coverage": Variant({"select": "coverage", "quantile": 1.0}, {}, SEMI, ("td3bc",)),
    "all-actions IDM": Variant(HEADLINE_SPLIT, {}, SEMI, ("td3bc", "dt"), {"episodes": "all"}),
}  # fmt: skip
FASTEST = {"td3bc": {"precision": "bf16", "compile": True}, "dt": {"precision": "bf16"}}
LABELS = ("env", "dataset", "algo", "variant", "seed")
SHARE_PNG = "share-of-full-vs-idm-error.png"
ROW_KEYS = (*LABELS[:4], "mode", "seed", "grad_steps", "normalized_score")


def episode_table(corpus: Path, stores: Path, env: str, dataset: str) -> EpisodeTable:
    """The set's episode table, from a store imported once under `stores`."""
    from ssorl_data.store import TrajectoryStore

    with TrajectoryStore.open(ensure_store(corpus, stores, env, dataset)) as store:
        return store.episode_table()


def headline_steps(table: EpisodeTable, seed: int) -> int:
    """Steps labelled by the `10%` split of `seed`: the coverage variant's budget."""
    from ssorl_data.splits import choose_visible

    return int(table.lengths[choose_visible(table, seed=seed, **HEADLINE_SPLIT)].sum())


def too_few_episodes(table: EpisodeTable, split: dict[str, Any]) -> str | None:
    """Why the IDM cannot train on `split` of this set (it needs one episode to train on and
    one to validate on), or None."""
    if "labelled_fraction" not in split:
        return None
    n = round(split["labelled_fraction"] * table.n_episodes)
    if n >= 2:
        return None
    return (f"{split['labelled_fraction']:.0%} of {table.n_episodes} episodes is {n}; the IDM "
            "needs 2 (one to validate on)")  # fmt: skip


def cells(
    corpus: Path,
    seeds: list[int],
    td3bc_steps: int,
    dt_steps: int,
    eval_episodes: int,
    stores: Path,
    skipped: dict[str, str] | None = None,
) -> list[Cell]:
    """Every (env, dataset, algo, variant, seed) cell, in the order of `priority`. A cell
    whose split leaves the IDM too few episodes goes to `skipped` (name -> why) instead."""
    steps = {"td3bc": td3bc_steps, "dt": dt_steps}
    found, tables = [], {}  # tables: one store read per set, not per seed and algorithm
    grid = itertools.product(seeds, ("td3bc", "dt"), ENVS, DATASETS.items(), VARIANTS.items())
    for seed, algo, env, (dataset, files), (variant, spec) in grid:
        if algo not in ALGOS[dataset] or algo not in spec.algos:
            continue
        sources = [str(corpus / env / f"{name}.hdf5") for name in files]
        missing = [s for s in sources if not Path(s).exists()]
        if missing:
            raise click.ClickException(f"corpus files not found: {missing}; see --corpus.")
        if (env, dataset) not in tables:
            tables[env, dataset] = episode_table(corpus, stores, env, dataset)
        table = tables[env, dataset]
        folder = variant.replace("%", "pct").replace(" ", "-")
        name = f"{env}-{dataset}-{algo}-{folder}-seed{seed}"
        split = spec.split
        why = too_few_episodes(table, split)
        if why is not None:
            (skipped if skipped is not None else {})[name] = why
            continue
        if variant == "coverage":
            split = split | {"labelled_steps": headline_steps(table, seed)}
        train = {"algo": algo, "modes": spec.modes, "seeds": [seed],
                 "steps": steps[algo]} | spec.train  # fmt: skip
        raw = cell_config(sources, split, train, spec.idm, seed, eval_episodes)
        labels = {"env": env, "dataset": dataset, "algo": algo, "variant": variant,
                  "seed": seed}  # fmt: skip
        found.append(Cell(name, labels, PipelineConfig.from_dict(raw, name)))
    return sorted(found, key=priority)  # stable: env, dataset and variant order kept


def cell_config(
    sources: list[str],
    split: dict[str, Any],
    train: dict[str, Any],
    idm: dict[str, Any],
    seed: int,
    episodes: int,
) -> dict[str, Any]:
    """One cell's `ssorl run` config: the algorithm's fastest mode, the published DT warm-up
    (10k of 100k steps) scaled to the budget, logs every 5% and evaluations every 10% of it."""
    algo, steps = train["algo"], train["steps"]
    overrides = {"warmup_steps": max(steps // 10, 1)} if algo == "dt" else {}
    train = {"log_every": max(steps // 20, 1), "overrides": overrides} | FASTEST[algo] | train
    return {
        "data": {"source": sources},
        "split": split | {"seed": seed},
        "idm": {"seed": seed} | idm,
        "train": train,
        "eval": {"eval_episodes": episodes, "eval_every": max(steps // 10, 1)},
    }


def chosen_cells(found: list[Cell], patterns: str) -> list[Cell]:
    """The cells whose names match one of the comma-separated glob `patterns`; an error
    naming the patterns when none does, rather than a run of nothing."""
    from fnmatch import fnmatchcase

    globs = [p.strip() for p in patterns.split(",") if p.strip()]
    chosen = [cell for cell in found if any(fnmatchcase(cell.name, g) for g in globs)]
    if not chosen:
        example = found[0].name if found else "none"
        raise click.ClickException(
            f"--cells {patterns!r} matches no cell (names look like {example!r})."
        )
    return chosen


def other_settings(old: dict[str, Any] | None, new: dict[str, Any]) -> str | None:
    """How the settings of earlier results differ from `new`, or None where the results can
    be kept: the same settings, or the same with variants added."""
    if not isinstance(old, dict):
        return "none recorded"
    rest = sorted(k for k in old.keys() | new.keys()
                  if k != "variants" and old.get(k) != new.get(k))  # fmt: skip
    changed = sorted(name for name, variant in old.get("variants", {}).items()
                     if new["variants"].get(name) != variant)  # fmt: skip
    if not rest and not changed:
        return None
    return "; ".join([*(f"{k}: {old.get(k)!r}, now {new.get(k)!r}" for k in rest),
                      *(f"variant {name!r} changed or gone" for name in changed)])  # fmt: skip


def priority(cell: Cell) -> tuple[int, int]:
    """Which cells run first: the claim itself (the `10%` variant of both algorithms) seed by
    seed, then TD3+BC's added variants seed by seed, then DT's, so an interrupted run leaves
    whole seeds of the most telling comparisons. (A DT cell at 5k steps takes about twice
    as long as a TD3+BC cell at 100k: DT trains 7-11 steps/s and TD3+BC 260-360 on one
    thread beside another cell, in the agents' summary.json.)"""
    labels = cell.labels
    if labels["variant"] == "10%":
        return (0, labels["seed"])
    return (1 if labels["algo"] == "td3bc" else 2, labels["seed"])


def agent_rows(result: CellResult, runs: Path) -> tuple[list[dict], list[dict]]:
    """The cell's finished agents: one score row each, and its evaluations (eval.csv)."""
    labels = {k: result.cell.labels[k] for k in LABELS}
    rows, curves = [], []
    for run, agent in result.report["agents"].items():
        row = labels | {"mode": agent["mode"], "grad_steps": agent["steps"],
                        "normalized_score": agent["normalized_score"]}  # fmt: skip
        rows.append(row)
        with open(runs / "cells" / result.cell.name / "agents" / run / "eval.csv") as f:
            evals = list(csv.DictReader(f))
        curves.append(row | {"steps": [int(e["step"]) for e in evals],
                             "scores": [float(e["normalized_score"]) for e in evals]})  # fmt: skip
    return rows, curves


def in_results(cell: Cell, rows: list[dict]) -> bool:
    """Whether `rows` hold a score of every agent of `cell` at its budget, so that a run
    without the cell's folders (a fresh checkout) does not train them again."""
    labels = {k: cell.labels[k] for k in LABELS}
    steps = cell.config.train["steps"]
    have = {row["mode"] for row in rows
            if {k: row[k] for k in LABELS} == labels and row["grad_steps"] == steps}  # fmt: skip
    return set(cell.config.train["modes"]) <= have


def idm_row(result: CellResult) -> dict[str, Any]:
    """The cell's IDM on the hidden actions: relative MSE overall, inside the labelled return
    quantile and outside it, and its training time."""
    stage = next(s for s in result.report["stages"] if s["name"] == "idm")["result"]
    metrics = stage["metrics"]
    row = {k: result.cell.labels[k] for k in LABELS}
    for part in ("hidden", "hidden_inside", "hidden_outside"):
        variance = metrics.get(f"{part}_action_variance")
        mse = metrics.get(f"{part}_mse")
        row[f"{part}_relative_mse"] = mse / variance if mse is not None and variance else None
    return row | {"hidden_steps": metrics["hidden_n_steps"], "train_seconds": stage["seconds"]}


def plot_curves(curves: list[dict], folder: Path) -> None:
    """One PNG per (env, dataset, algo): each (variant, mode)'s mean score over seeds against
    gradient steps, with a band of one standard deviation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for curve in curves:
        key = (curve["env"], curve["dataset"], curve["algo"])
        label = curve["mode"] if curve["variant"] == "10%" else f"{curve['variant']} semi"
        groups.setdefault(key, {}).setdefault(label, []).append(curve)
    for (env, dataset, algo), lines in groups.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, members in sorted(lines.items()):
            steps = members[0]["steps"]
            same = [m["scores"] for m in members if m["steps"] == steps]
            mean, std = np.mean(same, axis=0), np.std(same, axis=0)
            ax.plot(steps, mean, "o-", markersize=3, label=f"{label} ({len(same)})")
            ax.fill_between(steps, mean - std, mean + std, alpha=0.15)
        ax.set(xlabel="gradient step", ylabel="normalised score",
               title=f"{env} {dataset} {algo}: mean ± std over seeds")  # fmt: skip
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / f"{env}-{dataset}-{algo}.png", dpi=100)
        plt.close(fig)


def share_points(rows: list[dict], idm: list[dict]) -> list[dict]:
    """Per semi-supervised agent: its cell's IDM error on the hidden actions (relative MSE)
    and its score as a share of the mean `full` score of its (env, dataset, algo)."""
    import numpy as np

    full: dict[tuple, list[float]] = {}
    for row in rows:
        if row["mode"] == "full":
            full.setdefault(_set_key(row), []).append(row["normalized_score"])
    errors = {tuple(r[k] for k in LABELS): r["hidden_relative_mse"] for r in idm}
    points = []
    for row in rows:
        error = errors.get(tuple(row[k] for k in LABELS))
        if row["mode"] != "semi-supervised" or error is None or _set_key(row) not in full:
            continue
        share = row["normalized_score"] / float(np.mean(full[_set_key(row)]))
        points.append({k: row[k] for k in LABELS} | {"error": error, "share": share})
    return points


def _set_key(row: dict) -> tuple[str, str, str]:
    return row["env"], row["dataset"], row["algo"]


def plot_share_vs_error(points: list[dict], path: Path) -> None:
    """One PNG: each semi-supervised agent's share of `full` against its IDM's error on the
    hidden actions, coloured by (env, dataset, algo), shaped by variant, with the target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    sets = sorted({_set_key(p) for p in points})
    markers = dict(zip(VARIANTS, "osD^v", strict=True))
    for i, key in enumerate(sets):
        for variant, marker in markers.items():
            chosen = [p for p in points if _set_key(p) == key and p["variant"] == variant]
            if chosen:
                ax.scatter([p["error"] for p in chosen], [p["share"] for p in chosen],
                           color=f"C{i}", marker=marker, s=24)  # fmt: skip
    for i, key in enumerate(sets):  # legend: sets by colour, variants by shape
        ax.scatter([], [], color=f"C{i}", marker="o", label=" ".join(key))
    for variant, marker in markers.items():
        ax.scatter([], [], color="grey", marker=marker, label=variant)
    ax.axhline(0.95, color="grey", linestyle="--", linewidth=1)
    ax.axhline(1.0, color="black", linewidth=0.5)
    ax.set(xlabel="IDM error on the hidden actions (MSE / their variance)",
           ylabel="semi-supervised score / mean full score",
           title="Share of full against the IDM's error, per agent")  # fmt: skip
    ax.legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw(result: dict[str, Any], folder: Path) -> None:
    """Every PNG of the results: the curves per set and algorithm, and SHARE_PNG."""
    plot_curves(result["curves"], folder)
    plot_share_vs_error(share_points(result["rows"], result["idm"]), folder / SHARE_PNG)


@click.command()
@click.option("--seeds", default="0,1,2", show_default=True, help="Comma-separated seeds.")
@click.option("--td3bc-steps", type=click.IntRange(min=1), default=100_000, show_default=True)
@click.option("--dt-steps", type=click.IntRange(min=1), default=5_000, show_default=True)
@click.option("--eval-episodes", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Cells at once, one torch thread each.")  # fmt: skip
@click.option("--corpus", type=click.Path(path_type=Path), default=CORPUS, show_default=True)
@click.option(
    "--runs", type=click.Path(path_type=Path), default=ROOT / "runs" / "ss_headline",
    show_default=True, help="Cell run directories (resumed).",
)  # fmt: skip
@click.option("--out", type=click.Path(path_type=Path), default=RESULTS / "ss_headline.json",
              show_default=True)  # fmt: skip
@click.option("--redraw", is_flag=True, help="Only redraw the PNGs from --out's results.")
@click.option(
    "--cells", "patterns", default="*", show_default=True,
    help="Comma-separated glob patterns of the cell names to run (ENV-DATASET-ALGO-VARIANT-"
    "seedN, e.g. 'Hopper-v5-medium-replay-td3bc-10pct-*'), to add seeds to some cells only.",
)  # fmt: skip
def main(
    seeds: str,
    td3bc_steps: int,
    dt_steps: int,
    eval_episodes: int,
    jobs: int,
    corpus: Path,
    runs: Path,
    out: Path,
    redraw: bool,
    patterns: str,
) -> None:
    if redraw:
        if not out.exists():
            raise click.ClickException(f"{out}: no results to draw; run the cells first.")
        draw(json.loads(out.read_text()), out.parent / out.stem)
        return
    skipped: dict[str, str] = {}
    todo = cells(corpus, [int(s) for s in seeds.split(",")], td3bc_steps, dt_steps,
                 eval_episodes, runs / "stores", skipped)  # fmt: skip
    todo = chosen_cells(todo, patterns)
    for name, why in skipped.items():
        click.echo(f"{name} skipped: {why}")
    settings = {
        "command": "python -m benchmarks.ss_headline",
        "td3bc_steps": td3bc_steps,
        "dt_steps": dt_steps,
        "eval_episodes": eval_episodes,
        "idm": "package default (IdmTrainConfig)",
        "variants": {name: v.settings() for name, v in VARIANTS.items()},
        "fastest": FASTEST,
        "threads_per_cell": 1,
    }
    settings = json.loads(json.dumps(settings))  # as it reads back: lists, not tuples
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() else {}
    why = other_settings(previous.get("settings"), settings) if previous else None
    if why:
        raise click.ClickException(f"{out} holds results of other settings ({why}); give --out.")
    rows, curves, idm = (previous.get(k, []) for k in ("rows", "curves", "idm"))
    planned = len(todo)
    todo = [cell for cell in todo if not in_results(cell, rows)]
    if len(todo) < planned:
        click.echo(f"{planned - len(todo)} cells already in {out}: not run again")

    def save(result: CellResult) -> None:
        """Add the cell's rows (replacing its own from an earlier run) and redraw the PNGs."""
        nonlocal rows, curves, idm
        if result.report is None:
            return
        new_rows, new_curves = agent_rows(result, runs)
        rows = merge_rows(rows, new_rows, ROW_KEYS[:7])
        curves = merge_rows(curves, new_curves, ROW_KEYS[:7])
        idm = merge_rows(idm, [idm_row(result)], LABELS)
        result_json = {"settings": settings, "skipped": skipped, "rows": rows, "idm": idm,
                       "curves": curves}  # fmt: skip
        write_json(out, result_json)
        draw(result_json, out.parent / out.stem)

    click.echo(f"{len(todo)} cells, {jobs} at a time; logs under {runs}/cells/")
    results = run_cells(todo, runs, jobs=jobs, threads=1, echo=click.echo, on_done=save)
    failed = [r for r in results if r.error is not None]
    for result in failed:
        click.echo(f"{result.cell.name} failed: {result.error}", err=True)
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
