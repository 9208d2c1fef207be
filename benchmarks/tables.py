"""Render benchmarks/results/*.json as the README's Markdown tables.

python -m benchmarks.tables          # rewrite the README blocks between <!-- name --> markers
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from benchmarks.common import RESULTS

README = Path(__file__).resolve().parents[1] / "README.md"


def _markdown(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    head = "| " + " | ".join(title for _, title, _ in columns) + " |"
    rule = "| " + " | ".join("---" for _ in columns) + " |"
    body = [
        "| "
        + " | ".join(
            format(row.get(key, ""), fmt) if key in row else "-" for key, _, fmt in columns
        )
        + " |"
        for row in rows
    ]
    return "\n".join([head, rule, *body])


def store_table(result: dict) -> str:
    return _markdown(
        result["rows"],
        [
            ("method", "method", ""),
            ("mb_per_s", "MB/s", ".1f"),
            ("ratio_to_zarr_raw", "vs zarr_raw", ".2f"),
            ("seconds", "seconds", ".3f"),
        ],
    )


def chunk_table(result: dict) -> str:
    return _markdown(
        result["chunk_sweep"],
        [
            ("chunk_steps", "chunk (rows)", ","),
            ("write_mb_per_s", "write MB/s", ".1f"),
            ("read_mb_per_s", "read MB/s", ".1f"),
            ("disk_mb", "MB on disk", ".1f"),
        ],
    )


def store_tables(result: dict) -> str:
    title = "Chunk length (ssorl, Blosc-zstd level 3):"
    return f"{store_table(result)}\n\n{title}\n\n{chunk_table(result)}"


def relabel_table(result: dict) -> str:
    return _markdown(
        result["rows"],
        [
            ("method", "method", ""),
            ("steps_per_s", "steps/s", ",.0f"),
            ("ratio_to_forward_ceiling", "vs forward_ceiling", ".2f"),
            ("seconds", "seconds", ".2f"),
        ],
    )


def kernels_table(result: dict) -> str:
    return _markdown(
        result["rows"],
        [
            ("op", "op", ""),
            ("batch", "batch", ""),
            ("method", "method", ""),
            ("samples_per_s", "samples/s", ",.0f"),
            ("gb_per_s", "GB/s out", ".2f"),
            ("vs_copy", "vs copy", ".2f"),
            ("vs_python_loop", "vs python_loop", ",.0f"),
        ],
    )


def train_table(result: dict) -> str:
    return _markdown(
        result["rows"],
        [
            ("algo", "algo", ""),
            ("dataset", "dataset", ""),
            ("mode", "mode", ""),
            ("seed", "seed", ""),
            ("grad_steps", "gradient steps", ","),
            ("steps_per_s", "steps/s", ".0f"),
            ("normalized_score", "normalised score", ".1f"),
            ("dataset_normalized_return", "data's normalised return", ".1f"),
        ],
    )


def headline_table(result: dict) -> str:
    """Modes side by side per (env, dataset, algo): score mean ± std over the seeds that ran."""
    from ssorl_train.sweep import summary_table

    groups = ("env", "dataset", "algo", "grad_steps")
    table = summary_table(result["rows"], by=(*groups, "mode"))
    pivot: dict[tuple, dict] = {}
    for row in table:
        entry = pivot.setdefault(
            tuple(row[k] for k in groups), dict(zip(groups, [row[k] for k in groups], strict=True))
        )
        entry[row["mode"]] = (
            f"{row['score_mean']:.1f} ± {row['score_std']:.1f} ({len(row['seeds'])})"
        )
    modes = ("full", "semi-supervised", "labelled-only")
    columns = [("env", "env", ""), ("dataset", "dataset", ""), ("algo", "algo", ""),
               ("grad_steps", "gradient steps", ",")]  # fmt: skip
    columns += [(mode, f"{mode} (seeds)", "") for mode in modes]
    scores = _markdown([pivot[key] for key in sorted(pivot)], columns)
    if not result.get("idm"):
        return scores
    return f"{scores}\n\n{idm_table(result['idm'])}"


HEADLINE_COLUMNS = [  # (variant, mode) -> column of the real-budget headline table
    (("10%", "full"), "full"), (("10%", "semi-supervised"), "semi 10%"),
    (("10%", "labelled-only"), "labelled-only 10%"), (("2%", "semi-supervised"), "semi 2%"),
    (("drop-uncertain", "semi-supervised"), "semi 10%, drop-uncertain"),
    (("coverage", "semi-supervised"), "semi, coverage-chosen"),
    (("all-actions IDM", "semi-supervised"), "semi 10%, IDM of all actions (bound)"),
]  # fmt: skip


def headline_variants_table(result: dict) -> str:
    """Per (env, dataset, algo): each (variant, mode)'s final score; then the same for each
    agent's mean over its evaluations after half its budget (steadier where evaluations
    swing, as DT's do on Hopper); then the IDMs' errors per variant."""
    parts = [_variant_scores(result["rows"])]
    late = [curve | {"normalized_score": _late_mean(curve)} for curve in result.get("curves", [])]
    if late:
        title = ("Each agent's mean over its evaluations after half its budget (mean ± std "
                 "over seeds; steadier than one evaluation):")  # fmt: skip
        parts.append(f"{title}\n\n{_variant_scores(late)}")
    if result.get("idm"):
        parts.append(idm_table(result["idm"], by_variant=True))
        parts.append(share_error_table(result["rows"], result["idm"]))
    return "\n\n".join(parts)


def share_error_table(rows: list[dict], idm: list[dict], least: int = 5) -> str:
    """Per (env, dataset, algo) with at least `least` semi-supervised agents (all variants):
    the rank correlation of their share of `full` with their IDM's error."""
    import numpy as np

    from benchmarks.ss_headline import share_points
    from ssorl_data.idm.ranking import spearman

    groups: dict[tuple, list[dict]] = {}
    for point in share_points(rows, idm):
        groups.setdefault((point["env"], point["dataset"], point["algo"]), []).append(point)
    table = []
    for (env, dataset, algo), points in sorted(groups.items()):
        if len(points) < least:
            continue
        errors, shares = ([p[k] for p in points] for k in ("error", "share"))
        rho = spearman(np.array(errors), np.array(shares))
        table.append({"env": env, "dataset": dataset, "algo": algo, "agents": len(points),
                      "rho": "-" if rho is None else f"{rho:+.2f}",
                      "errors": f"{min(errors):.3f}-{max(errors):.3f}",
                      "shares": f"{min(shares):.0%}-{max(shares):.0%}"})  # fmt: skip
    title = ("Semi-supervised agents of every variant: Spearman's rank correlation of their "
             "share of full with their IDM's error on the hidden actions:")  # fmt: skip
    columns = [("env", "env", ""), ("dataset", "dataset", ""), ("algo", "algo", ""),
               ("agents", "agents", ""), ("rho", "rank correlation", ""),
               ("errors", "IDM error", ""), ("shares", "share of full", "")]  # fmt: skip
    return f"{title}\n\n{_markdown(table, columns)}"


def _late_mean(curve: dict) -> float:
    """The mean of an agent's evaluations after half its budget."""
    import numpy as np

    late = [
        s
        for t, s in zip(curve["steps"], curve["scores"], strict=True)
        if t > curve["grad_steps"] / 2
    ]
    return float(np.mean(late))


def _variant_scores(rows: list[dict]) -> str:
    """Each (variant, mode)'s score mean ± std (seeds) per (env, dataset, algo), and the
    semi-supervised agents' ratio of means to `full`."""
    import numpy as np

    groups: dict[tuple, dict[tuple, list[float]]] = {}
    for row in rows:
        key = (row["env"], row["dataset"], row["algo"], row["grad_steps"])
        scores = groups.setdefault(key, {}).setdefault((row["variant"], row["mode"]), [])
        scores.append(row["normalized_score"])
    table = []
    for (env, dataset, algo, steps), cells in sorted(groups.items()):
        line = {"env": env, "dataset": dataset, "algo": algo, "grad_steps": steps}
        full = cells.get(("10%", "full"))
        for column, title in HEADLINE_COLUMNS:
            if column not in cells:
                continue
            line[title] = _spread(cells[column], ".1f")
            if full and column[1] == "semi-supervised":
                line[title] += f"; {np.mean(cells[column]) / np.mean(full):.0%}"
        table.append(line)
    columns = [("env", "env", ""), ("dataset", "dataset", ""), ("algo", "algo", ""),
               ("grad_steps", "gradient steps", ",")]  # fmt: skip
    columns += [(title, title, "") for _, title in HEADLINE_COLUMNS]
    return _markdown(table, columns)


def idm_table(rows: list[dict], by_variant: bool = False) -> str:
    """The IDMs' relative MSE on hidden actions per (env, dataset), averaged over cells."""
    import numpy as np

    keys = ("env", "dataset", "variant") if by_variant else ("env", "dataset")
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    parts = ("hidden", "hidden_inside", "hidden_outside")
    table = [
        dict(zip(keys, key, strict=True))
        | {"cells": len(members)}
        | {p: float(np.mean([m[f"{p}_relative_mse"] for m in members])) for p in parts}
        | {"seconds": float(np.mean([m["train_seconds"] for m in members]))}
        for key, members in sorted(groups.items())
    ]
    title = "IDM error on the hidden actions (MSE / their variance; mean over cells):"
    columns = [("env", "env", ""), ("dataset", "dataset", "")]
    columns += [("variant", "labelled", "")] if by_variant else []
    columns += [("cells", "cells", ""),
               ("hidden", "all hidden", ".3f"), ("hidden_inside", "lowest 50% of returns", ".3f"),
               ("hidden_outside", "the rest", ".3f"), ("seconds", "train s", ".0f")]  # fmt: skip
    return f"{title}\n\n{_markdown(table, columns)}"


def store_foreign_table(result: dict) -> str:
    return _markdown(
        result["rows"],
        [
            ("source", "source", ""),
            ("method", "method", ""),
            ("steps", "steps", ",d"),
            ("steps_per_s", "steps/s", ",.0f"),
            ("seconds", "seconds", ".2f"),
            ("time_vs_reader", "time vs the library's reader", ".2f"),
        ],
    )


def scale_tables(result: dict) -> str:
    """Every stage's row per store, then the targets' verdicts (benchmarks/scale_targets.py)."""
    rows = [
        row | {"note": "error: " + row["error"][:120]} if "error" in row else row
        for row in result["rows"]
    ]
    for row in rows:
        if "load_1min" in row:  # at the stage's start and end
            row["load"] = " -> ".join(f"{v:.1f}" for v in row["load_1min"])
    measured = _markdown(
        rows,
        [
            ("kind", "kind", ""),
            ("size", "steps", ","),
            ("stage", "stage", ""),
            ("seconds", "seconds", ".2f"),
            ("steps_per_s", "steps/s", ",.0f"),
            ("unit", "steps/s counts", ""),
            ("peak_rss_mb", "peak RSS MB", ",.0f"),
            ("peak_anon_mb", "peak anon MB", ",.0f"),
            ("cpu_seconds", "CPU s", ".2f"),
            ("read_mb", "read MB", ",.0f"),
            ("write_mb", "written MB", ",.0f"),
            ("load", "load (1 min)", ""),
            ("note", "note", ""),
        ],
    )
    targets = result.get("targets", {})
    scaling = {(t["kind"], t["stage"]): t for t in targets.get("scaling", [])}
    verdicts = [
        {
            "kind": m["kind"],
            "stage": m["stage"],
            "size": m["size"],
            "memory": f"{m['peak_rss_mb']:,.0f} of {m['limit_mb']:,.0f} MB: {m['verdict']}",
            "scaling": _scaling_cell(scaling.get((m["kind"], m["stage"]), {})),
        }
        for m in targets.get("memory", [])
    ]
    title = (
        "Targets at each kind's largest size: peak RSS <= 2 GB + the labelled windows; "
        "steps/s >= 75% of those at the smallest size:"
    )
    verdict_table = _markdown(
        verdicts,
        [
            ("kind", "kind", ""),
            ("stage", "stage", ""),
            ("size", "steps", ","),
            ("memory", "peak RSS of the bound", ""),
            ("scaling", "steps/s vs smallest size", ""),
        ],
    )
    cache = targets.get("cache", {})
    cache_line = f"Training from the cache vs in RAM: {cache.get('verdict', 'n/a')}" + (
        f" (steps/s ratio {cache['ratio']:.2f} on {cache['store']})" if "ratio" in cache else ""
    )
    return f"{measured}\n\n{title}\n\n{verdict_table}\n\n{cache_line}."


def _scaling_cell(target: dict) -> str:
    if "ratio" not in target:
        return target.get("verdict", "n/a")
    sizes = f"{target['from_size']:,} -> {target['to_size']:,}"
    cpu = f"; CPU {target['cpu_ratio']:.2f}" if "cpu_ratio" in target else ""
    return f"{target['ratio']:.2f}{cpu} ({sizes}): {target['verdict']}"


def train_speed_tables(result: dict) -> str:
    """Steps/s per (device, threads, algo, mode) with the ratio to eager fp32 and the compile
    time; then the scores of eager fp32 and the fastest mode, mean ± std over seeds."""
    import numpy as np

    def shown(row: dict) -> str:  # the column also says why a row was not measured
        value = row.get("steps_per_s")
        return row.get("skipped") or (f"{value:.1f}" if value else "-")

    rows = [r | {"steps_per_s": shown(r)} for r in result["rows"]]
    speed = _markdown(
        rows,
        [("device", "device", ""), ("threads", "threads", ""), ("algo", "algo", ""),
         ("mode", "mode", ""), ("steps_per_s", "steps/s", ""),
         ("vs_eager_fp32", "vs eager fp32", ".2f"), ("compile_s", "compile s", ".0f"),
         ("run", "measured", "")],
    )  # fmt: skip
    groups: dict[tuple, list[float]] = {}
    for row in result.get("scores", []):
        groups.setdefault((row["algo"], row["mode"], row["grad_steps"]), []).append(
            row["normalized_score"]
        )
    if not groups:
        return speed
    table = [
        {"algo": algo, "mode": mode, "grad_steps": steps, "seeds": len(values),
         "score": f"{np.mean(values):.1f} ± {np.std(values):.1f}"}
        for (algo, mode, steps), values in sorted(groups.items())
    ]  # fmt: skip
    columns = [("algo", "algo", ""), ("mode", "mode", ""), ("grad_steps", "gradient steps", ","),
               ("seeds", "seeds", ""), ("score", "normalised score (mean ± std)", "")]  # fmt: skip
    return f"{speed}\n\nScores (Hopper-v5 medium-replay, full mode):\n\n{_markdown(table, columns)}"


def _spread(values: list[float], fmt: str = ".3f") -> str:
    """mean ± std (n) of `values`, or '-' for none."""
    import numpy as np

    if not values:
        return "-"
    return f"{np.mean(values):{fmt}} ± {np.std(values):{fmt}} ({len(values)})"


SETS = [("Hopper-v5", "medium-replay"), ("Hopper-v5", "medium-expert"),
        ("HalfCheetah-v5", "medium-replay"), ("HalfCheetah-v5", "medium-expert")]  # fmt: skip


def _set_name(env: str, dataset: str) -> str:
    return f"{env.split('-')[0]} {dataset}"


def idm_study_tables(result: dict) -> str:
    """Per IDM config: hidden relative MSE (mean ± std over seeds) on each set, its ratio to
    the headline config's, and median training seconds; per label selection the same MSE;
    per uncertainty definition its AUROC on hidden actions, with the headline config."""
    import numpy as np

    rows = result["rows"]

    def pick(part: str, name: str, env: str, dataset: str) -> list[dict]:
        return [r for r in rows if (r["part"], r["name"], r["env"], r["dataset"]) ==
                (part, name, env, dataset)]  # fmt: skip

    headline = {(r["env"], r["dataset"], r["seed"]): r["hidden_relative_mse"]
                for r in rows if (r["part"], r["name"]) == ("configs", "headline")}  # fmt: skip
    names = list(dict.fromkeys(r["name"] for r in rows if r["part"] == "configs"))
    configs = []
    for name in names:
        entry: dict = {"name": name}
        ratios, seconds = [], []  # ratios paired by (set, seed) with the headline config
        for s in SETS:
            mine = pick("configs", name, *s)
            entry[s] = _spread([r["hidden_relative_mse"] for r in mine])
            seconds += [r["train_seconds"] for r in mine]
            ratios += [r["hidden_relative_mse"] / headline[(*s, r["seed"])] for r in mine
                       if (*s, r["seed"]) in headline]  # fmt: skip
        entry["ratio"] = (
            f"{np.mean(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})" if ratios else "-"
        )
        entry["seconds"] = f"{np.median(seconds):.0f} ({max(seconds):.0f})" if seconds else "-"
        configs.append(entry)
    columns = (
        [("name", "config", "")]
        + [(s, _set_name(*s), "") for s in SETS]
        + [("ratio", "vs headline (same set, seed): mean (range)", "")]
        + [("seconds", "train s: median (max)", "")]
    )
    parts = [_markdown(configs, columns)]
    selections = []
    for s in SETS:
        methods = {r["name"] for r in rows if r["part"] == "selection" and (r["env"],
                   r["dataset"]) == s}  # fmt: skip
        if methods:
            entry = {"set": _set_name(*s)}
            for method in methods:
                entry[method] = _spread([r["hidden_relative_mse"]
                                         for r in pick("selection", method, *s)])  # fmt: skip
            selections.append(entry)
    if selections:
        methods = ("lowest_return", "random", "coverage", "farthest")
        parts.append("Label selection at equal labelled steps (hidden relative MSE, headline "
                     "IDM):\n\n" + _markdown(selections, [("set", "set", "")] + [
                         (m, m, "") for m in methods]))  # fmt: skip
    definitions = sorted({d for r in rows for d in r.get("uncertainty", {})})
    auroc = []
    for s in SETS:
        mine = pick("configs", "headline", *s)
        if mine and definitions:
            entry = {"set": _set_name(*s)}
            for d in definitions:
                entry[d] = _spread([r["uncertainty"][d]["hidden_auroc"] for r in mine])
            auroc.append(entry)
    if auroc:
        parts.append("Uncertainty AUROC for the worst 10% of hidden-action errors (headline "
                     "IDM):\n\n" + _markdown(auroc, [("set", "set", "")] + [
                         (d, d, "") for d in definitions]))  # fmt: skip
    return "\n\n".join(parts)


def proxy_training_table(result: dict) -> str:
    """TD3+BC normalised score (mean ± std over seeds) per set, label selection and
    uncertainty-aware variant, with the IDM's hidden relative MSE."""
    groups: dict[tuple, list[dict]] = {}
    for row in result["rows"]:
        key = (row["env"], row["dataset"], row["selection"], row["variant"])
        groups.setdefault(key, []).append(row)
    order = {s: i for i, s in enumerate(SETS)}
    table = [
        {"set": _set_name(env, dataset), "selection": selection, "variant": variant,
         "score": _spread([r["normalized_score"] for r in members], ".1f"),
         "idm": _spread([r["idm_hidden_relative_mse"] for r in members])}
        for (env, dataset, selection, variant), members in sorted(
            groups.items(), key=lambda item: (order.get(item[0][:2], 9), item[0][2:]))
    ]  # fmt: skip
    columns = [("set", "set", ""), ("selection", "labelled episodes", ""),
               ("variant", "proxy actions", ""), ("score", "TD3+BC score (seeds)", ""),
               ("idm", "IDM hidden relative MSE", "")]  # fmt: skip
    return _markdown(table, columns)


RENDERERS = {
    "train_speed": train_speed_tables,
    "store": store_tables,
    "scale": scale_tables,
    "store_foreign": store_foreign_table,
    "relabel": relabel_table,
    "kernels": kernels_table,
    "train": train_table,
    "ss_headline": headline_variants_table,
    "ss_headline_20k": headline_table,
    "idm_study": idm_study_tables,
    "proxy_training": proxy_training_table,
}


# results made by several invocations: where the commands are written down
COMMANDS = {
    "ss_headline_20k": "python -m benchmarks.ss_headline --td3bc-steps 20000 --dt-steps 1000, "
    "before issue 15 (the IDM then: 256x256 without the difference input; fp32, no curves)",
    "idm_study": "OMP_NUM_THREADS=1 python -m benchmarks.idm_study --seeds 0,1,2 --configs "
    "CONFIGS --compare-selection (configs with 3 seeds), and --seeds 0 --configs CONFIGS for "
    "the configs with one",
    "proxy_training": "OMP_NUM_THREADS=1 python -m benchmarks.proxy_training --seeds S, one "
    "process per seed",
    "scale": "python -m benchmarks.bench_scale --image-train-steps 200 --redo (low-dim at "
    "every size; of the image store only the Minari export), then the same with --sizes 10M "
    "--image-sizes '' --stages 'training cache,ssorl train,ssorl train --no-cache,DT sampling' "
    "(the 10M training rows again, on a quiet machine); the 100M append row and the other "
    "image rows are from the earlier run",
}


def render(name: str) -> str:
    result = json.loads((RESULTS / f"{name}.json").read_text())
    settings = result.get("settings", {})
    command = (
        COMMANDS.get(name)
        or result.get("command")
        or settings.get("command", f"python -m benchmarks.bench_{name}")
    )
    return f"{RENDERERS[name](result)}\n\nCommand: `{command}`"


def update_readme() -> None:
    text = README.read_text()
    for name in RENDERERS:
        if not (RESULTS / f"{name}.json").exists():
            continue
        block = f"<!-- {name} -->\n{render(name)}\n<!-- /{name} -->"
        pattern = re.compile(rf"<!-- {name} -->.*?<!-- /{name} -->", flags=re.S)
        text = pattern.sub(block.replace("\\", "\\\\"), text)
    README.write_text(text)


if __name__ == "__main__":
    update_readme()
