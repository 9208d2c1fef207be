"""Relabel throughput: ssorl end to end, the forward-pass ceiling, the data path, a Python loop.

The store is the four Hopper-v5 corpus files imported three times over (1.2 M
steps). All methods run the same IDM ensemble (a checkpoint given with --idm,
else a freshly initialised one of the default configuration: throughput does
not depend on the weights).

- `ssorl`: `relabel_store` end to end: stream chunks, build windows with the
  kernels, run the ensemble, write actions/uncertainty and the done flags, and
  compute the run's metrics.
- `forward_ceiling`: the ensemble's forward pass alone over every step's window,
  already in memory as tensors, in the same batches.
- `data_path`: the chunk loop of `relabel_store` (`relabel_chunks`) with the model
  replaced by a no-op: reading the store, building windows, writing results and
  done flags (the run is created inside the timing; metrics are not computed).
- `python_loop`: the usual research-code loop with the same ensemble: deep-copy
  the dataset, build each step's window with Python slicing and concatenation,
  one forward per trajectory. It runs on every j-th episode (about
  --loop-steps steps, a representative mix) since the whole store would take
  tens of minutes; its steps/s counts the steps it relabelled.

    python -m benchmarks.bench_relabel [--idm DIR] [--repeats 2] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import copy
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import CORPUS, best_of_interleaved, write_results
from ssorl_data.idm import Idm, IdmSpec, load_idm
from ssorl_data.idm.checkpoint import build_network
from ssorl_data.idm.evaluate import predict_windows
from ssorl_data.idm.training import IdmTrainConfig
from ssorl_data.idm.windows import RangeWindows
from ssorl_data.io.importing import import_dataset
from ssorl_data.relabel import DEFAULT_BATCH_SIZE, relabel_chunks, relabel_store
from ssorl_data.store import TrajectoryStore
from ssorl_data.streaming_stats import observation_stats

FILES = ["random", "medium", "medium-replay", "expert"]


def build_store(path: Path, corpus: Path, copies: int) -> None:
    for copy_index in range(copies):
        for index, name in enumerate(FILES):
            first = copy_index == 0 and index == 0
            import_dataset(corpus / "Hopper-v5" / f"{name}.hdf5", path, append=not first,
                           progress=False)  # fmt: skip


def fresh_idm(store: TrajectoryStore, shared_trunk: bool) -> Idm:
    """An untrained IDM of the default configuration for this store."""
    config = IdmTrainConfig()
    obs = store.read_observations(0, min(100_000, store.n_steps))
    mean, std = observation_stats(obs)
    space = store.action_space
    spec = IdmSpec(
        k=config.k, hidden=config.hidden, members=config.members, dropout=config.dropout,
        shared_trunk=shared_trunk, obs_shape=tuple(store.observation_space.shape),
        act_shape=tuple(space.shape), obs_mean=tuple(mean.tolist()), obs_std=tuple(std.tolist()),
        action_low=tuple(space.low.tolist()), action_high=tuple(space.high.tolist()),
    )  # fmt: skip
    torch.manual_seed(0)
    return Idm(spec, build_network(spec), {})


class NoOpIdm(Idm):
    """The IDM's interface with the network replaced by zeros: what the data path costs."""

    def predict(self, windows, actions=None):
        n = windows.shape[0]
        return torch.zeros(n, self.spec.act_dim), torch.zeros(n), None


def data_path(store: TrajectoryStore, idm: Idm) -> None:
    run = store.create_relabel("bench-noop", {}, overwrite=True)
    relabel_chunks(store, run, idm, np.arange(run.n_chunks))


def all_windows(store: TrajectoryStore, idm: Idm) -> torch.Tensor:
    """Every step's window, built as one range by the relabeller's own window builder."""
    table = store.episode_table()
    obs = store.read_observations(0, store.n_steps + store.n_episodes)
    builder = RangeWindows(table, idm.spec.k, idm.mean, idm.std, store.n_steps, obs.shape[1])
    windows, _ = builder.build(obs, 0, store.n_steps)
    return windows


def python_loop(dataset: dict[str, list[np.ndarray]], idm: Idm) -> list[np.ndarray]:
    """Research-code style: a copy of the dataset, per-step windows by slicing, one forward per
    trajectory."""
    data = copy.deepcopy(dataset)
    k = idm.spec.k
    mean, std = idm.mean.numpy(), idm.std.numpy()
    out = []
    for obs in data["observations"]:  # [T + 1, D]
        obs = (obs - mean) / std
        rows = []
        for t in range(obs.shape[0] - 1):
            past = [obs[max(t - j, 0)] for j in range(k, 0, -1)]
            rows.append(np.concatenate([*past, obs[t], obs[t + 1]]))
        with torch.inference_mode():
            actions, _, _ = idm.predict(torch.from_numpy(np.stack(rows)))
        out.append(actions.numpy())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idm", type=Path, help="IDM checkpoint (default: fresh, untrained)")
    parser.add_argument("--copies", type=int, default=3, help="times the corpus is imported")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--loop-steps", type=int, default=100_000,
                        help="about this many steps for python_loop")  # fmt: skip
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="the shared corpus directory")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ssorl-bench-relabel-"))
    try:
        path = root / "store"
        build_store(path, args.corpus, args.copies)
        with TrajectoryStore.open(path, mode="a") as store:
            idm = load_idm(args.idm) if args.idm else fresh_idm(store, shared_trunk=True)
            noop = NoOpIdm(idm.spec, idm.network, {})
            windows = all_windows(store, idm)
            table = store.episode_table()
            obs = store.read_observations(0, store.n_steps + store.n_episodes)
            bounds = table.obs_start  # first observation row of each episode
            stride = max(1, -(-store.n_steps // args.loop_steps))
            episodes = list(zip(bounds, table.lengths, strict=True))[::stride]
            dataset = {"observations": [obs[b : b + t + 1] for b, t in episodes]}
            n = store.n_steps
            steps = {name: n for name in ("ssorl", "forward_ceiling", "data_path")}
            steps["python_loop"] = int(sum(t for _, t in episodes))

            runs = {
                "ssorl": lambda: relabel_store(store, idm, "bench", overwrite=True, progress=False),
                "forward_ceiling": lambda: predict_windows(idm, windows, DEFAULT_BATCH_SIZE),
                "data_path": lambda: data_path(store, noop),
                "python_loop": lambda: python_loop(dataset, idm),
            }
            best = best_of_interleaved(args.repeats, runs)
            # What sharing the trunk does to the ceiling: the same ensemble, members separate.
            separate = fresh_idm(store, shared_trunk=False)
            sample = windows[: 4 * DEFAULT_BATCH_SIZE]
            ceilings = best_of_interleaved(args.repeats, {
                "shared_trunk": lambda: predict_windows(idm, sample, DEFAULT_BATCH_SIZE),
                "separate_members": lambda: predict_windows(separate, sample, DEFAULT_BATCH_SIZE),
            })  # fmt: skip
        ceiling = n / best["forward_ceiling"]
        rows = [
            {"method": m, "steps": steps[m], "steps_per_s": steps[m] / s, "seconds": s,
             "ratio_to_forward_ceiling": steps[m] / s / ceiling}
            for m, s in best.items()
        ]  # fmt: skip
        path = write_results("relabel", {
            "n_steps": n,
            "rows": rows,
            "ensemble": {
                "members": idm.spec.members, "hidden": list(idm.spec.hidden),
                "shared_trunk": idm.spec.shared_trunk, "checkpoint": str(args.idm or "fresh"),
                "forward_steps_per_s": {k: sample.shape[0] / s for k, s in ceilings.items()},
            },
            "batch_size": DEFAULT_BATCH_SIZE,
            "python_loop_episodes": f"every {stride}th episode",
            "chunk_steps": store.chunk_steps,
            "torch_threads": torch.get_num_threads(),
        })  # fmt: skip
        for row in rows:
            print(f"{row['method']:<16} {row['steps_per_s']:>12,.0f} steps/s  "
                  f"({row['ratio_to_forward_ceiling']:.2f} of forward_ceiling)")  # fmt: skip
        print(f"results written to {path}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
