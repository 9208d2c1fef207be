"""`ssorl run --sweep`: one pipeline per cell of a grid, cells in parallel processes.

A sweep config is a pipeline config plus a `[sweep]` section naming the values to
cross (labelled fraction, return quantile, algorithm, seeds). Every cell is an
ordinary `run_pipeline` run in `out/cells/<cell>/`, so each resumes on its own
and a killed sweep redoes only unfinished stages. A seed is a whole replication:
it seeds the split, the IDM and the agent. The table at the end groups the
cells' agents by everything but the seed (mean and standard deviation).
"""

from __future__ import annotations

import itertools
import json
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from ssorl_data.durable import write_json
from ssorl_data.expect import Expect
from ssorl_train.errors import PipelineConfigError
from ssorl_train.pipeline.config import DEFAULTS, TYPES, PipelineConfig, check_types, read_toml

SWEEP_SCHEMA = """\
[sweep]     labelled_fraction = [...], quantile = [...], algo = [...], seeds = [...]
            (each a list; the cells are every combination; a list left out is the base
            config's value), jobs = 2 (cells at once), threads = 1 (torch threads per cell)
[sweep.train.ALGO]  [train] keys for the cells of one algorithm, e.g.
            [sweep.train.dt] steps = 1000, overrides = {batch_size = 64}
"""
SWEEP_DEFAULTS: dict[str, Any] = {"jobs": 2, "threads": 1, "train": {}}
# where a grid list left out is taken from: the base config's one value (or its default)
GRID_SOURCES = {
    "labelled_fraction": ("split", "labelled_fraction"),
    "quantile": ("split", "quantile"),
    "algo": ("train", "algo"),
    "seeds": ("train", "seeds"),
}
GRID_KEYS = tuple(GRID_SOURCES)
# the type of every [sweep] key: a grid key is a non-empty list of its [split]/[train] values
SWEEP_TYPES: dict[str, Expect] = {
    "jobs": Expect(int, min=1),
    "threads": Expect(int, min=1),
    "train": Expect(dict),
    "labelled_fraction": Expect(float, min=0, max=1, many=True),
    "quantile": Expect(float, min=0, max=1, min_open=True, many=True),
    "algo": Expect(str, many=True),
    "seeds": TYPES["train"]["seeds"],
}


@dataclass(frozen=True)
class Cell:
    """One point of the grid: its name (a folder under cells/), labels and full config."""

    name: str
    labels: dict[str, Any]
    config: PipelineConfig


@dataclass(frozen=True)
class SweepConfig:
    base: dict[str, Any]  # the pipeline sections, before the grid is applied
    sweep: dict[str, Any]

    @classmethod
    def from_toml(cls, path: str | Path) -> SweepConfig:
        raw, where = read_toml(path), str(path)
        if "sweep" not in raw:
            raise PipelineConfigError(
                f"{where}: has no [sweep] section, which --sweep needs:\n{SWEEP_SCHEMA}"
            )
        return cls.from_dict(raw, where)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "config") -> SweepConfig:
        """Validate the grid and every cell's config before anything runs."""
        sweep = SWEEP_DEFAULTS | dict(raw.get("sweep", {}))
        unknown = set(sweep) - set(SWEEP_DEFAULTS) - set(GRID_KEYS)
        if unknown:
            raise PipelineConfigError(
                f"{where}: unknown key(s) {sorted(unknown)!r} in [sweep]:\n{SWEEP_SCHEMA}"
            )
        check_types(where, "sweep", sweep, SWEEP_TYPES)
        if "labelled_steps" in raw.get("split", {}):
            raise PipelineConfigError(
                f"{where}: [split] labelled_steps cannot be swept: a sweep's cells are labelled "
                "by fraction. Give [split] labelled_fraction, or run the config without [sweep]."
            )
        for key, (section, name) in GRID_SOURCES.items():
            if key not in sweep:  # the base config's value, checked as its own key
                value = raw.get(section, {}).get(name, DEFAULTS[section][name])
                sweep[key] = value if key == "seeds" else [value]
                check_types(where, section, {key: sweep[key]}, {key: SWEEP_TYPES[key]})
        for algo, table in sweep["train"].items():
            check_types(where, f"sweep.train.{algo}", {"table": table}, {"table": Expect(dict)})
        extra = set(sweep["train"]) - set(sweep["algo"])
        if extra:
            raise PipelineConfigError(
                f"{where}: [sweep.train] has tables for {sorted(extra)!r}, which are not in "
                f"[sweep] algo = {sweep['algo']!r}."
            )
        config = cls({k: v for k, v in raw.items() if k != "sweep"}, sweep)
        config.cells(where)  # every cell must be a valid pipeline config
        return config

    def cells(self, where: str = "config") -> list[Cell]:
        """Every combination of the grid's values, in the order of GRID_KEYS.

        A `full` agent ignores the split, so only the cells of the first (labelled
        fraction, quantile) train it; a cell left with no mode is dropped.
        """
        cells = []
        first_split = (self.sweep["labelled_fraction"][0], self.sweep["quantile"][0])
        grid = itertools.product(*(self.sweep[key] for key in GRID_KEYS))
        for fraction, quantile, algo, seed in grid:
            raw = {section: dict(values) for section, values in self.base.items()}
            raw["split"] = raw.get("split", {}) | {
                "labelled_fraction": fraction,
                "quantile": quantile,
                "seed": seed,
            }
            raw["idm"] = raw.get("idm", {}) | {"seed": seed}
            raw["train"] = raw.get("train", {}) | self.sweep["train"].get(algo, {}) | {"algo": algo}
            raw["train"]["seeds"] = [seed]
            if (fraction, quantile) != first_split:
                modes = raw["train"].get("modes", DEFAULTS["train"]["modes"])
                raw["train"]["modes"] = [mode for mode in modes if mode != "full"]
                if not raw["train"]["modes"]:
                    continue
            name = f"{algo}-lf{fraction:g}-q{quantile:g}-seed{seed}"
            labels = {"labelled_fraction": fraction, "quantile": quantile, "algo": algo}
            labels["seed"] = seed
            cells.append(Cell(name, labels, PipelineConfig.from_dict(raw, f"{where} ({name})")))
        return cells


@dataclass(frozen=True)
class CellResult:
    cell: Cell
    report: dict[str, Any] | None  # the cell's report.json; None when it failed
    error: str | None


def run_cells(
    cells: Iterable[Cell],
    out: str | Path,
    *,
    jobs: int = 2,
    threads: int = 1,
    device: str | None = None,
    echo: Callable[[str], None] = print,
    on_done: Callable[[CellResult], None] | None = None,
) -> list[CellResult]:
    """Run `run_pipeline` for each cell into `out/cells/<name>`, `jobs` at a time, in the
    order given; `on_done` sees each result as it comes (to save partial results).

    A failing cell is reported (its traceback in `out/cells/<name>/error.txt`) and
    the others go on. Each cell's stage messages go to `out/cells/<name>/log.txt`.
    """
    cells = list(cells)
    out = Path(out)
    results: dict[str, CellResult] = {}
    waiting = iter(cells)
    running: dict[Future, Cell] = {}
    context = get_context("spawn")  # fork would copy torch's thread pools and locks
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:

        def start_next() -> None:
            """Submit one cell at a time as workers free up, so that after Ctrl-C (or any
            error here) no queued cell starts: leaving the pool waits for running ones only."""
            cell = next(waiting, None)
            if cell is not None:
                running[
                    pool.submit(_run_cell, cell, out / "cells" / cell.name, threads, device)
                ] = cell

        for _ in range(jobs):
            start_next()
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                cell = running.pop(future)
                report, error = future.result()
                results[cell.name] = CellResult(cell, report, error)
                if on_done is not None:
                    on_done(results[cell.name])
                echo(f"[sweep] {cell.name}: " + ("done" if error is None else f"FAILED ({error})"))
                start_next()
    return [results[cell.name] for cell in cells]


def _run_cell(
    cell: Cell, out: Path, threads: int, device: str | None
) -> tuple[dict[str, Any] | None, str | None]:
    """One cell in a worker process; errors come back as text so one cell cannot stop all."""
    import torch

    from ssorl_train.pipeline import run_pipeline

    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    (out / "error.txt").unlink(missing_ok=True)
    with open(out / "log.txt", "a") as log:
        try:
            report = run_pipeline(
                cell.config,
                out,
                device=device,
                progress=False,
                echo=lambda m: print(m, file=log, flush=True),
            )
        except Exception as error:  # reported per cell; the sweep goes on
            (out / "error.txt").write_text(traceback.format_exc())
            return None, f"{type(error).__name__}: {error}"
    return json.loads(json.dumps(report, default=str)), None


def sweep_rows(results: Iterable[CellResult]) -> list[dict[str, Any]]:
    """One row per finished agent: the cell's labels (no split for `full`), mode, steps and
    score."""
    rows = []
    for result in results:
        if result.report is None:
            continue
        for agent in result.report["agents"].values():
            labels = dict(result.cell.labels)
            if agent["mode"] == "full":  # trained on every action, whatever the split
                labels |= {"labelled_fraction": None, "quantile": None}
            rows.append(
                labels
                | {
                    "mode": agent["mode"],
                    "grad_steps": agent["steps"],
                    "normalized_score": agent["normalized_score"],
                    "mean_return": agent["mean_return"],
                }
            )
    return rows


def summary_table(rows: list[dict[str, Any]], by: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows grouped by the `by` keys (seeds pooled): score mean, std and the seeds used."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in by), []).append(row)
    table = []
    for key, members in groups.items():
        scores = [r["normalized_score"] for r in members if r["normalized_score"] is not None]
        table.append(
            {"grad_steps": sorted({r["grad_steps"] for r in members})}  # unless grouped by
            | dict(zip(by, key, strict=True))
            | {
                "seeds": sorted(r["seed"] for r in members),
                "score_mean": float(np.mean(scores)) if scores else None,
                "score_std": float(np.std(scores)) if scores else None,
            }
        )
    return table


def markdown_summary(table: list[dict[str, Any]], by: tuple[str, ...]) -> str:
    """The summary as Markdown: one line per group, score as mean ± std over seeds."""
    lines = [
        "| " + " | ".join(by) + " | normalised score | seeds | grad steps |",
        "| " + " | ".join("---" for _ in (*by, 1, 2, 3)) + " |",
    ]
    for row in table:
        score = "n/a"
        if row["score_mean"] is not None:
            score = f"{row['score_mean']:.1f} ± {row['score_std']:.1f}"
        steps = ", ".join(map(str, row["grad_steps"]))
        cells = ["-" if row[k] is None else str(row[k]) for k in by]
        cells += [score, str(len(row["seeds"])), steps]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_sweep(
    config: SweepConfig,
    out: str | Path,
    *,
    device: str | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every cell of `config` into `out/cells/`, then write `out/sweep.json` and
    `out/sweep.md`; returns what sweep.json holds."""
    out = Path(out)
    results = run_cells(
        config.cells(),
        out,
        jobs=config.sweep["jobs"],
        threads=config.sweep["threads"],
        device=device,
        echo=echo,
    )
    rows = sweep_rows(results)
    by = ("algo", "labelled_fraction", "quantile", "mode")
    summary = {
        "rows": rows,
        "table": summary_table(rows, by),
        "failed": {r.cell.name: r.error for r in results if r.error is not None},
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "sweep.json", summary)
    (out / "sweep.md").write_text(markdown_summary(summary["table"], by) + "\n")
    return summary
