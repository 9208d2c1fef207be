"""The scale benchmark's targets, evaluated (never asserted) from its rows, and its plot.

- memory: at each kind's largest size, every stage's peak RSS <= 2 GB plus the split's
  labelled windows (visible observation rows and actions in the store's dtype). Where
  the RSS is over but the anonymous memory is not, the excess is file-backed pages
  (memory-mapped data held by the page cache), and the verdict says so.
- scaling: steps/s at the largest size >= 75% of those at the smallest (within 25%).
  Beside it, the same ratio in steps per CPU second (rows that record CPU seconds):
  near 1 where the wall-time ratio is low means the stage waited on the disk (or on
  other processes), not that its work per step grew.
- cache: training steps/s from the out-of-core view at 10M steps >= 90% of the in-RAM
  view on the same data, where the API offers both paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

BOUND_MB = 2048.0
SCALING_FLOOR = 0.75
CACHE_FLOOR = 0.90


def _memory(row: dict[str, Any], windows_mb: float) -> dict[str, Any]:
    limit = BOUND_MB + windows_mb
    anon = row.get("peak_anon_mb")
    if row["peak_rss_mb"] <= limit:
        verdict = "pass"
    elif anon is not None and anon <= limit:
        verdict = "pass (anonymous memory; the rest is file-backed pages)"
    else:
        verdict = "FAIL"
    return {"limit_mb": limit, "peak_rss_mb": row["peak_rss_mb"], "peak_anon_mb": anon,
            "verdict": verdict}  # fmt: skip


def evaluate_targets(rows: list[dict[str, Any]], stores: dict[str, Any]) -> dict[str, Any]:
    """Per kind and stage: memory at the largest size and steps/s against the smallest."""
    good = [r for r in rows if "error" not in r]
    targets: dict[str, Any] = {"memory": [], "scaling": []}
    for kind in sorted({r["kind"] for r in good}):
        for stage in dict.fromkeys(r["stage"] for r in good if r["kind"] == kind):
            mine = sorted((r for r in good if (r["kind"], r["stage"]) == (kind, stage)),
                          key=lambda r: r["size"])  # fmt: skip
            low, high = mine[0], mine[-1]
            store = stores.get(f"{kind}/{high['size']}", {})
            windows = store.get("labelled_windows_mb")
            memory = {"kind": kind, "stage": stage, "size": high["size"],
                      "labelled_windows_mb": windows}  # fmt: skip
            targets["memory"].append(memory | _memory(high, windows or 0.0))
            scaling = {"kind": kind, "stage": stage, "from_size": low["size"],
                       "to_size": high["size"]}  # fmt: skip
            if len(mine) < 2:
                scaling["verdict"] = "n/a: one size"
            elif not low.get("steps_per_s") or not high.get("steps_per_s"):
                scaling["verdict"] = "n/a: no steps/s"
            else:
                ratio = high["steps_per_s"] / low["steps_per_s"]
                scaling |= {"ratio": ratio, "verdict": "pass" if ratio >= SCALING_FLOOR else "FAIL"}
                if low.get("cpu_seconds") and high.get("cpu_seconds"):
                    scaling["cpu_ratio"] = _cpu_rate(high) / _cpu_rate(low)
            targets["scaling"].append(scaling)
    targets["cache"] = _cache_target(good)
    return targets


def _cpu_rate(row: dict[str, Any]) -> float:
    """Work per CPU second: store steps, or (gradient steps and sampled batches are the
    same at every size) one unit of the stage's fixed work."""
    work = row["size"] if row.get("unit", "store steps") == "store steps" else 1.0
    return work / row["cpu_seconds"]


def _cache_target(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Training steps/s from the cache against in-RAM, where both rows exist."""

    def find(stage: str) -> dict[str, dict[str, Any]]:
        return {f"{r['kind']}/{r['size']}": r for r in rows if r["stage"] == stage}

    ram, cache = find("ssorl train --no-cache"), find("ssorl train")
    both = sorted(set(ram) & set(cache))
    if not both:
        return {"verdict": "n/a: no store with both `ssorl train` and `ssorl train --no-cache`"}
    key = both[-1]
    ratio = cache[key]["steps_per_s"] / ram[key]["steps_per_s"]
    return {"store": key, "ratio": ratio, "verdict": "pass" if ratio >= CACHE_FLOOR else "FAIL"}


def plot(result: dict[str, Any], path: Path) -> Path:
    """Seconds and peak RSS against store size, log-log, one line per (kind, stage)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result.get("rows", []) if "error" not in r]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    lines = sorted({(r["kind"], r["stage"]) for r in rows})
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    colours = plt.get_cmap("tab20")  # one colour per stage, one line style per kind
    for kind, stage in lines:
        mine = sorted((r for r in rows if (r["kind"], r["stage"]) == (kind, stage)),
                      key=lambda r: r["size"])  # fmt: skip
        sizes = [r["size"] for r in mine]
        style = "-o" if kind == "lowdim" else "--s"
        colour = colours(stages.index(stage) % 20)
        for ax, key in zip(axes, ("seconds", "peak_rss_mb"), strict=True):
            ax.plot(sizes, [r[key] for r in mine], style, color=colour, label=f"{kind}: {stage}")
    for ax, title in zip(axes, ("seconds (inside the stage)", "peak RSS (MB)"), strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("store size (steps)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].axhline(BOUND_MB, color="grey", linestyle=":", label="2 GB")
    if lines:
        axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
