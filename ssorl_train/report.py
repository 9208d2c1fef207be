"""The pipeline's report: report.json, a Markdown table and PNG plots in `out/report/`."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from ssorl_data.durable import write_json
from ssorl_train.pipeline.config import SPLIT_NAME


def write_report(
    out: Path,
    config: Any,
    store: Path,
    relabel_name: str,
    agents: dict[str, dict[str, Any]],
    stages: list[dict[str, Any]],
) -> dict[str, Any]:
    """Write the report of a finished pipeline run; returns what report.json holds."""
    report_dir = out / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    table = comparison(agents)
    report = {"config": config.to_dict(), "stages": stages, "agents": agents, "comparison": table}
    write_json(report_dir / "report.json", report)
    (report_dir / "report.md").write_text(comparison_text(config, table) + "\n")
    _plots(out, report_dir, store, relabel_name, agents)
    return report


def comparison(agents: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per mode: normalised score (mean and std over seeds) and the data it saw."""
    rows = []
    for mode in dict.fromkeys(a["mode"] for a in agents.values()):
        runs = [a for a in agents.values() if a["mode"] == mode]
        scores = [a["normalized_score"] for a in runs if a["normalized_score"] is not None]
        returns = [a["mean_return"] for a in runs if a["mean_return"] is not None]
        rows.append(
            {
                "mode": mode,
                "seeds": len(runs),
                "score_mean": float(np.mean(scores)) if scores else None,
                "score_std": float(np.std(scores)) if scores else None,
                "return_mean": float(np.mean(returns)) if returns else None,
                "recorded_steps": runs[0]["n_recorded"],
                "proxy_steps": runs[0]["n_proxy"],
            }
        )
    return rows


def comparison_text(config: Any, rows: list[dict[str, Any]]) -> str:
    """The comparison table, and a warning under it where the IDM read the actions the split
    hides (`[idm] episodes = "all"`), so an upper bound is never read as a result."""
    text = markdown_table(rows)
    if config.idm.get("episodes") == "all":
        text += (
            "\n\nThe IDM learned from every recorded action, the split's hidden ones included "
            '([idm] episodes = "all"): semi-supervised is an upper bound here, not what a '
            "corpus without those actions gets."
        )
    return text


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The comparison as a Markdown table (printed by `ssorl run` and `ssorl quickstart`)."""

    def num(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f}"

    lines = [
        "| mode | normalised score | return | seeds | recorded steps | proxy steps |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        score = f"{num(r['score_mean'])} ± {num(r['score_std'])}"
        lines.append(
            f"| {r['mode']} | {score} | {num(r['return_mean'])} | {r['seeds']} | "
            f"{r['recorded_steps']} | {r['proxy_steps']} |"
        )
    return "\n".join(lines)


def _save(fig: Any, path: Path) -> None:
    """Lay out, write as PNG, and free the figure (pyplot keeps figures alive otherwise)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plots(
    out: Path, report_dir: Path, store: Path, relabel_name: str, agents: dict[str, dict[str, Any]]
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ssorl_data.store import TrajectoryStore

    fig, ax = plt.subplots(figsize=(6, 4))
    for run in agents:
        path = out / "agents" / run / "eval.csv"
        if not path.exists():  # data without an env id: nothing to evaluate in
            continue
        with open(path) as f:
            rows = list(csv.DictReader(f))
        key = "normalized_score" if rows and rows[0]["normalized_score"] else "mean_return"
        ax.plot([int(r["step"]) for r in rows], [float(r[key]) for r in rows], "o-", label=run)
    ax.set(xlabel="gradient step", ylabel="normalised score", title="Learning curves")
    ax.legend(fontsize=7)
    _save(fig, report_dir / "learning_curves.png")

    with TrajectoryStore.open(store) as opened:
        table = opened.episode_table()
        visible = opened.read_split(SPLIT_NAME).visible
        run = opened.relabel_run(relabel_name)
        n = int(table.lengths.sum())
        proxy, uncertainty = run.read("actions", 0, n), run.read("uncertainty", 0, n)
        recorded = opened.read_steps("actions", 0, n)
    episode = table.episode_of_step()
    step_error = np.nanmean((proxy - recorded).reshape(n, -1) ** 2, axis=1)
    has = np.isfinite(step_error)
    error = np.bincount(episode[has], step_error[has], table.n_episodes) / np.maximum(
        np.bincount(episode[has], minlength=table.n_episodes), 1
    )
    fig, ax = plt.subplots(figsize=(6, 4))
    for mask, label in ((visible, "labelled (IDM training)"), (~visible, "unlabelled")):
        ax.scatter(
            table.returns[mask & table.labelled], error[mask & table.labelled], s=8, label=label
        )
    ax.set(
        xlabel="episode return",
        ylabel="proxy-action MSE",
        yscale="log",
        title="Proxy-action error against return",
    )
    ax.legend()
    _save(fig, report_dir / "proxy_error_vs_return.png")

    step_visible = visible[episode]
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.logspace(
        np.log10(max(uncertainty.min(), 1e-8)), np.log10(uncertainty.max() + 1e-8), 40
    )
    for mask, label in ((step_visible, "labelled"), (~step_visible, "unlabelled")):
        ax.hist(uncertainty[mask], bins=bins, alpha=0.6, density=True, label=label)
    ax.set(
        xscale="log",
        xlabel="IDM uncertainty (ensemble variance)",
        ylabel="density",
        title="Uncertainty: labelled vs unlabelled steps",
    )
    ax.legend()
    _save(fig, report_dir / "uncertainty_hist.png")
