"""One stage of the scale benchmark, run in its own process by benchmarks/bench_scale.py.

    python -m benchmarks.scale_worker '{"stage": "cli", "args": ["data", "info", "STORE"]}'

The parent measures this process's peak RSS (os.wait4) and wall time; this process
times the stage itself (after its imports, so that interpreter and torch start-up do
not count against a stage's steps/s) and prints one JSON line, prefixed RESULT, with
the seconds, the CPU seconds of all its threads and the bytes it read from and wrote to
storage (/proc/self/io: what a page-cache hit does not count) over the same span, and
what the stage reports. The CPU seconds tell compute from waiting: a stage whose CPU
seconds per step hold while its wall seconds grow is waiting on the disk. A `cli` stage
imports the `ssorl` root command, the subcommand's module and the modules the command
would import anyway (`preload`) before timing it.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _io_bytes() -> tuple[int, int]:
    """(read_bytes, write_bytes) this process has moved to and from storage."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["read_bytes"]), int(fields["write_bytes"])


@contextmanager
def clock() -> Iterator[dict[str, float]]:
    """Wall and CPU seconds and storage MB of the block, filled in when it ends."""
    figures: dict[str, float] = {}
    wall, cpu, (read, write) = time.perf_counter(), time.process_time(), _io_bytes()
    try:
        yield figures
    finally:
        read_end, write_end = _io_bytes()
        figures |= {
            "seconds": time.perf_counter() - wall,
            "cpu_seconds": time.process_time() - cpu,
            "read_mb": (read_end - read) / 1e6,
            "write_mb": (write_end - write) / 1e6,
        }


def run_cli(args: list[str], preload: list[str]) -> dict[str, Any]:
    """`ssorl ARGS` in this process; exit code 0 or the error it printed."""
    from ssorl_train.cli.main import COMMANDS, cli

    for module in [COMMANDS[args[0]].split(":")[0], *preload]:
        importlib.import_module(module)
    with clock() as figures:
        try:
            cli.main(args=args, prog_name="ssorl", standalone_mode=True)
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return figures | {"exit_code": code}


def run_append(path: str, spec: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.scale_data import StoreSpec, write_store

    spec["image_shape"] = tuple(spec["image_shape"])
    with clock() as figures:
        result = write_store(Path(path), StoreSpec(**spec))
    # the CPU and storage figures include generating the data (generate_seconds)
    return figures | result


def _view(view: dict[str, Any]):
    from ssorl_train.dataset import load_training_data

    return load_training_data(**view)


def run_view(view: dict[str, Any]) -> dict[str, Any]:
    """The training view (`load_training_data`; the cache build where the API makes one)."""
    import ssorl_train.dataset  # noqa: F401  (imports are not the stage)

    with clock() as figures:
        data = _view(view)
    return figures | {"view_steps": int(data.n_steps)}


def run_dt_sampling(view: dict[str, Any], batches: int, batch_size: int, context: int):
    """DT sub-trajectory batches as training draws them (`DTBatchSampler` over the view)."""
    import torch

    from ssorl_train.batches import DTBatchSampler

    start = time.perf_counter()
    data = _view(view)
    view_s = time.perf_counter() - start
    sampler = DTBatchSampler(data, batch_size, context, 1e-3, 0, torch.device("cpu"))
    sampler.sample()  # the first batch builds nothing lazily afterwards
    with clock() as figures:
        for _ in range(batches):
            sampler.sample()
    return figures | {"view_seconds": view_s, "batches": batches,
                      "sampled_steps": batches * batch_size * context}  # fmt: skip


STAGES = {
    "cli": lambda job: run_cli(job["args"], job.get("preload", [])),
    "append": lambda job: run_append(job["path"], job["spec"]),
    "view": lambda job: run_view(job["view"]),
    "dt_sampling": lambda job: run_dt_sampling(
        job["view"], job["batches"], job["batch_size"], job["context"]
    ),
}


def main() -> None:
    job = json.loads(sys.argv[1])
    if job.get("threads"):
        import torch

        torch.set_num_threads(job["threads"])
    result = STAGES[job["stage"]](job)
    sys.stdout.flush()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
