"""Corpus scale: seconds, steps/s and peak RSS of every stage, each in its own process.

Synthetic stores (benchmarks/scale_data.py: obs 17 float32, act 6, 1000-step episodes,
every second one action-free; or uint8 frames of a moving blob) of each size go through
append (API), `data info`, `data verify`, `data split` (10% from the lowest 50%), `idm
train` (tiny IDM, 50 steps), `relabel`, the training view (`load_training_data`,
semi-supervised), `ssorl train` (TD3+BC, 1000 steps), DT sub-trajectory sampling
(`DTBatchSampler`), `data export` to D4RL and to Minari, and `data drop-actions` (a
copy; the exports and the copy are deleted after their row). A stage is one child
process (benchmarks/scale_worker.py); its peak RSS is the child's ru_maxrss (os.wait4)
and its peak anonymous memory (RssAnon, polled every 20 ms: what memory-mapped data
does not count), its seconds are timed inside it after its imports.

    python -m benchmarks.bench_scale --sizes 1M,10M,100M --image-sizes 1M
    python -m benchmarks.bench_scale --plot     # only redraw benchmarks/results/scale.png

The JSON is rewritten after every finished row; a rerun skips the rows already there
for the same settings (rows that failed are retried; --fresh starts over; --redo
measures the --stages again) and reuses a complete synthetic store. Each row records
the 1-minute load average before and after it, and the stage's CPU seconds and storage
MB (benchmarks/scale_worker.py) beside its wall seconds. A stage that fails records
{"error": ...}; the stages that need its output are then not run and get no row.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, write_results
from benchmarks.scale_data import GENERATOR, StoreSpec, is_complete
from benchmarks.scale_measure import measure
from benchmarks.scale_targets import evaluate_targets

REPO = Path(__file__).resolve().parents[1]
SPLIT = RELABEL = "p10q50"
NEEDS = {"idm train": "data split", "relabel": "idm train", "training view in RAM": "relabel",
         "training cache": "relabel", "ssorl train": "relabel",
         "ssorl train --no-cache": "relabel", "DT sampling": "relabel"}  # fmt: skip


def needed(stages: list[str] | None) -> set[str]:
    """The stages listed and every stage they need (append always); empty: all of them."""
    if not stages:
        return set()
    wanted = {"append", *stages}
    while missing := {NEEDS[s] for s in wanted if s in NEEDS} - wanted:
        wanted |= missing
    return wanted


def parse_size(text: str) -> int:
    """'1M' -> 1_000_000, '20k' -> 20_000, '5000' -> 5000."""
    text = text.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}.get(text[-1:], 1)
    number = text[:-1] if scale > 1 else text
    return int(float(number) * scale)


def parse_sizes(text: str) -> list[int]:
    return [parse_size(part) for part in text.split(",") if part.strip()]


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """Everything that changes a row's figures (not the sizes, paths or what to redo)."""
    return {
        "generator": GENERATOR,
        "episode_length": args.episode_length,
        "image_shape": args.image_shape,
        "image_chunk_steps": args.image_chunk_steps,
        "seed": args.seed,
        "threads": args.threads,
        "split": {"labelled_fraction": 0.1, "quantile": 0.5, "seed": 0},
        "idm": {
            "hidden": args.idm_hidden,
            "members": 2,
            "max_steps": 50,
            "eval_every": 25,
            "batch_size": 256,
        },
        "relabel_batch_size": {"lowdim": 8192, "image": 256},
        "train": {
            "algo": "td3bc",
            "mode": "semi-supervised",
            "steps": {"lowdim": args.train_steps, "image": args.image_train_steps},
        },
        "dt_sampling": {"batches": args.dt_batches, "batch_size": 64, "context": 20},
    }


def stage_jobs(kind: str, spec: StoreSpec, work: Path, settings: dict) -> list[dict[str, Any]]:
    """The stages of one store, in order: name, worker job, unit of steps/s, files made."""
    store, idm, run, cache = work / "store", work / "idm", work / "run", work / "cache"
    s, i = str(store), settings["idm"]
    threads = ["--threads", str(settings["threads"])]
    torch_pre = ["torch", "ssorl_data.idm.training"]
    view = {"store_path": s, "mode": "semi-supervised", "split": SPLIT, "relabel": RELABEL}
    dt = settings["dt_sampling"]
    spec_json = {**spec.__dict__, "image_shape": list(spec.image_shape)}
    split = ["--labelled-fraction", "0.1", "--quantile", "0.5", "--seed", "0", "--overwrite"]

    def cli(*args: str, preload: list[str] | None = None) -> dict[str, Any]:
        preloads = ["ssorl_data.store", *(preload or [])]
        return {"stage": "cli", "args": list(args), "preload": preloads}

    def train(*view_args: str) -> dict[str, Any]:
        return cli(
            "train", s, "--algo", "td3bc", "--mode", "semi-supervised", "--split", SPLIT,
            "--relabel", RELABEL, "--steps", str(settings["train"]["steps"][kind]),
            "--out", str(run),
            "--eval-every", "0", "--checkpoint-every", "0", *view_args, *threads, "--overwrite",
            "--quiet", preload=["torch", "ssorl_train.loop", "ssorl_train.dataset"],
        )  # fmt: skip

    return [
        {"stage": "append", "job": {"stage": "append", "path": s, "spec": spec_json}},
        {"stage": "data info", "job": cli("data", "info", s, "--json")},
        {"stage": "data verify", "job": cli("data", "verify", s, "--quiet")},
        {"stage": "data split", "job": cli("data", "split", s, "--name", SPLIT, *split)},
        {"stage": "idm train", "job": cli(
            "idm", "train", s, "--split", SPLIT, "--out", str(idm), "--hidden", i["hidden"],
            "--members", str(i["members"]), "--max-steps", str(i["max_steps"]),
            "--eval-every", str(i["eval_every"]), "--batch-size", str(i["batch_size"]),
            *threads, "--overwrite", "--quiet", preload=torch_pre)},
        {"stage": "relabel", "job": cli(
            "relabel", s, "--idm", str(idm), "--name", RELABEL, "--batch-size",
            str(settings["relabel_batch_size"][kind]), *threads, "--overwrite", "--quiet",
            preload=[*torch_pre, "ssorl_data.relabel"])},
        {"stage": "training view in RAM", "in_ram": True, "job": {"stage": "view", "view": view}},
        {"stage": "training cache", "made": [cache], "keep": True,
         "job": {"stage": "view", "view": view | {"cache": str(cache)}}},
        {"stage": "ssorl train", "unit": "gradient steps", "job": train("--cache", str(cache))},
        {"stage": "ssorl train --no-cache", "unit": "gradient steps", "in_ram": True,
         "job": train("--no-cache")},
        {"stage": "DT sampling", "unit": "sub-trajectory steps", "job": {
            "stage": "dt_sampling", "view": view | {"cache": str(cache)},
            "threads": settings["threads"], **dt}},
        {"stage": "data export d4rl", "made": [work / "export.hdf5"], "job": cli(
            "data", "export", s, str(work / "export.hdf5"), "--format", "d4rl", "--overwrite",
            preload=["h5py"])},
        {"stage": "data export minari", "made": [work / "minari"], "job": cli(
            "data", "export", s, "bench/scale-v0", "--format", "minari", "--minari-root",
            str(work / "minari"), preload=["minari"])},
        {"stage": "data drop-actions", "made": [work / "dropped"], "job": cli(
            "data", "drop-actions", s, str(work / "dropped"), "--episodes",
            str(work / "drop.txt"))},
    ]  # fmt: skip


def artefact_present(stage: str, store: Path, work: Path, spec: StoreSpec) -> bool:
    """Whether what a finished stage made for later stages is still there."""
    from ssorl_data.store import TrajectoryStore

    if stage == "append":
        return is_complete(store, spec)
    if stage == "idm train":
        return (work / "idm" / "config.json").exists()
    if stage not in ("data split", "relabel"):
        return True
    if not is_complete(store, spec):
        return False
    with TrajectoryStore.open(store) as opened:
        if stage == "data split":
            return SPLIT in opened.list_splits()
        return RELABEL in opened.list_relabels() and opened.relabel_run(RELABEL).status == (
            "complete"
        )


def describe_store(store: Path, spec: StoreSpec) -> dict[str, Any]:
    """Sizes of a store and of its split's labelled windows (visible rows, store dtype)."""
    import numpy as np

    from ssorl_data.store import TrajectoryStore

    with TrajectoryStore.open(store) as opened:
        table = opened.episode_table()
        disk_mb = sum(f.stat().st_size for f in _files(store)) / 1e6
        info = {"n_steps": opened.n_steps, "n_episodes": opened.n_episodes, "disk_mb": disk_mb}
        if SPLIT in opened.list_splits():
            visible = np.asarray(opened.read_split(SPLIT).visible, bool)
            steps, episodes = int(table.lengths[visible].sum()), int(visible.sum())
            act_bytes = int(np.prod(opened.action_space.shape)) * 4
            info |= {"labelled_episodes": episodes, "labelled_steps": steps,
                     "labelled_windows_mb": ((steps + episodes) * spec.obs_row_bytes()
                                             + steps * act_bytes) / 1e6}  # fmt: skip
    return info


class Results:
    """benchmarks/results/scale.json (or --results): rows keyed by (kind, size, stage)."""

    def __init__(self, path: Path, settings: dict[str, Any], fresh: bool) -> None:
        self.path, self.settings = path, settings
        self.rows: list[dict[str, Any]] = []
        self.stores: dict[str, Any] = {}
        if path.exists() and not fresh:
            old = json.loads(path.read_text())
            if old.get("settings") != settings:
                raise SystemExit(
                    f"{path} was written with other settings ({old.get('settings')!r}); "
                    "pass --fresh to start over or --results to write elsewhere."
                )
            self.rows, self.stores = old.get("rows", []), old.get("stores", {})

    def done(self, kind: str, size: int, stage: str) -> bool:
        return any(
            r["kind"] == kind and r["size"] == size and r["stage"] == stage and "error" not in r
            for r in self.rows
        )

    def add(self, row: dict[str, Any]) -> None:
        key = (row["kind"], row["size"], row["stage"])
        self.rows = [r for r in self.rows if (r["kind"], r["size"], r["stage"]) != key] + [row]
        self.write()

    def write(self) -> None:
        payload = {"settings": self.settings, "stores": self.stores, "rows": self.rows,
                   "targets": evaluate_targets(self.rows, self.stores)}  # fmt: skip
        write_results(self.path.stem, payload, directory=self.path.parent)


def run_store(kind: str, size: int, args: argparse.Namespace, results: Results) -> None:
    """Every stage of one synthetic store, skipping the ones already measured."""
    spec = StoreSpec(kind, size, args.episode_length, tuple(args.image_shape),
                     args.image_chunk_steps if kind == "image" else None, args.seed)  # fmt: skip
    work = args.work_dir / f"{kind}-{size}"
    store, key = work / "store", f"{kind}/{size}"
    ok: set[str] = set()
    wanted = needed(args.stages)
    for stage in stage_jobs(kind, spec, work, results.settings):
        name = stage["stage"]
        if name != "append" and "append" not in ok:
            return
        redo = args.redo and (not args.stages or name in args.stages)
        if (
            not redo
            and results.done(kind, size, name)
            and artefact_present(name, store, work, spec)
        ):
            ok.add(name)
            continue
        if (name in NEEDS and NEEDS[name] not in ok) or (wanted and name not in wanted):
            continue
        if stage.get("in_ram") and in_ram_gb(spec) > args.in_ram_max_gb:
            results.stores.setdefault(key, {})["in_ram_not_run"] = (
                f"view of {in_ram_gb(spec):.1f} GB > --in-ram-max-gb {args.in_ram_max_gb}"
            )
            continue
        if name == "append":
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
        if name == "data drop-actions":
            ids = range(0, spec.n_episodes, 4)  # every second labelled episode
            (work / "drop.txt").write_text("".join(f"{e}\n" for e in ids))
        for made in stage.get("made", []):
            shutil.rmtree(made, ignore_errors=True) if made.is_dir() else made.unlink(True)
        print(f"{kind} {size:,} {name} ...", flush=True)
        row: dict[str, Any] = {"kind": kind, "size": size, "stage": name}
        load_before = os.getloadavg()[0]
        row |= measure(stage["job"], work / "logs" / name.replace(" ", "_"))
        row["load_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        if "error" not in row:
            ok.add(name)
            row |= throughput(row, stage.get("unit", "store steps"), size, work)
        for made in stage.get("made", []):
            if made.exists():
                row["output_mb"] = sum(f.stat().st_size for f in _files(made)) / 1e6
                if not stage.get("keep"):
                    shutil.rmtree(made) if made.is_dir() else made.unlink()
        if name in ("append", "data split") and "error" not in row:
            results.stores[key] = results.stores.get(key, {}) | describe_store(store, spec)
        results.add(row)
        print("   ", {k: v for k, v in row.items() if k not in ("kind", "size", "stage")})
    for scratch in ("cache", "run"):  # the decompressed view: as large as the data
        shutil.rmtree(work / scratch, ignore_errors=True)


def in_ram_gb(spec: StoreSpec) -> float:
    """Observation bytes of the whole store decompressed: what an in-RAM view holds at least."""
    return (spec.n_steps + spec.n_episodes) * spec.obs_row_bytes() / 1e9


def _files(path: Path) -> list[Path]:
    return [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]


def throughput(row: dict[str, Any], unit: str, size: int, work: Path) -> dict[str, Any]:
    """steps/s of a finished row: store steps, gradient steps (summary.json) or sampled steps."""
    if unit == "gradient steps":
        summary = json.loads((work / "run" / "summary.json").read_text())
        return {"unit": unit, "steps_per_s": summary.get("steps_per_s")}
    if unit == "sub-trajectory steps":
        return {"unit": unit, "steps_per_s": row["sampled_steps"] / row["seconds"]}
    return {"unit": unit, "steps_per_s": size / row["seconds"] if row["seconds"] > 0 else None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=parse_sizes("1M,10M,100M"),
        help="Low-dim store sizes in steps, e.g. 1M,10M,100M ('' for none).",
    )
    parser.add_argument(
        "--image-sizes",
        type=parse_sizes,
        default=parse_sizes("1M"),
        help="Image store sizes in frames (steps).",
    )
    parser.add_argument(
        "--image-shape", type=lambda t: [int(x) for x in t.split(",")], default=[64, 64, 3]
    )
    parser.add_argument(
        "--image-chunk-steps",
        type=int,
        default=1024,
        help="Chunk length of image stores (1024 frames of 64x64x3: 12.6 MB).",
    )
    parser.add_argument("--episode-length", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each stage.")
    parser.add_argument("--idm-hidden", default="32,32")
    parser.add_argument("--train-steps", type=int, default=1000)
    parser.add_argument(
        "--image-train-steps",
        type=int,
        default=1000,
        help="TD3+BC steps on image stores (an MLP on 12,288 inputs: slow on CPU).",
    )
    parser.add_argument("--dt-batches", type=int, default=200)
    parser.add_argument(
        "--in-ram-max-gb",
        type=float,
        default=4.0,
        help="Run the in-RAM view and training only on stores whose observations "
        "take at most this many GB decompressed (10M low-dim steps: 0.7 GB).",
    )
    parser.add_argument(
        "--stages",
        type=lambda t: [s.strip() for s in t.split(",")],
        default=None,
        help="Only these stages (names as in the JSON) and the ones they need.",
    )
    parser.add_argument(
        "--redo",
        action="store_true",
        help="Measure the --stages again (all stages without --stages) where rows exist, "
        "replacing them; a complete store is reused unless append is listed.",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path("/tmp/ssorl-bench-scale"),
        help="Where the stores go (100M low-dim steps: ~10 GB); not the repo.",
    )
    parser.add_argument("--results", type=Path, default=RESULTS / "scale.json")
    parser.add_argument("--fresh", action="store_true", help="Forget the rows already measured.")
    parser.add_argument("--plot", action="store_true", help="Only redraw the PNG from the JSON.")
    args = parser.parse_args(argv)
    png = args.results.with_suffix(".png")
    if not args.plot:
        args.work_dir = args.work_dir.resolve()
        if args.work_dir.is_relative_to(REPO):
            raise SystemExit(f"--work-dir {args.work_dir} is inside the repository; use /tmp.")
        results = Results(args.results, settings_of(args), args.fresh)
        results.write()
        for kind, sizes in (("lowdim", args.sizes), ("image", args.image_sizes)):
            for size in sorted(sizes):
                run_store(kind, size, args, results)
        print(f"written to {args.results}")
    from benchmarks.scale_targets import plot

    plot(json.loads(args.results.read_text()), png)
    print(f"plot: {png}")


if __name__ == "__main__":
    sys.exit(main())
