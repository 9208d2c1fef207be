"""Import throughput of the store beside a raw zarr write and Minari's dataset creation.

All write the same episodes (the four HalfCheetah-v5 corpus files, concatenated, x3)
with the same content; MB/s counts the bytes of observations, actions, rewards and
flags. `ssorl` ingests arrays already in memory (the store's own write path, with
validation); `ssorl_hdf5` is the full `ssorl data import` of the HDF5 files including
reading them; `zarr_raw` writes the same arrays into zarr arrays of the same chunking
and codec with no validation or bookkeeping; `minari` is create_dataset_from_buffers.

    python benchmarks/bench_store.py [--repeats 3]
    python benchmarks/bench_store.py --foreign [--foreign-steps 1000000]

`--foreign` instead times `ssorl data import` of datasets in other libraries' formats
against the reader each library itself offers, on ~1M steps written by the test suite's
writers (a Minari hdf5 Hopper-v5 dataset from `create_dataset_from_buffers`, a LeRobot
v3 dataset as LeRobot's writer lays it out): `minari.load_dataset(...).iterate_episodes()`
and `pyarrow.parquet.read_table` of every data file. The import reads with those same
readers and also validates and writes the store, so its time is the reader's plus ours.
It writes benchmarks/results/store_foreign.json.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import warnings
from pathlib import Path

import h5py
import numpy as np
import zarr
from zarr.codecs import BloscCodec

from benchmarks.common import CORPUS, best_of_interleaved, write_results
from ssorl_data import layout
from ssorl_data.io.flat import from_arrays
from ssorl_data.io.importing import import_dataset

FILES = ["random", "medium", "medium-replay", "expert"]


def load(env: str, copies: int) -> dict[str, np.ndarray]:
    keys = ("observations", "next_observations", "actions", "rewards", "terminals", "timeouts")
    parts = {k: [] for k in keys}
    for name in FILES:
        with h5py.File(CORPUS / env / f"{name}.hdf5") as f:
            for k in keys:
                parts[k].append(f[k][:])
    return {k: np.concatenate(v * copies) for k, v in parts.items()}


def payload_bytes(arrays: dict[str, np.ndarray]) -> int:
    n_episodes = int((arrays["terminals"] | arrays["timeouts"]).sum())
    obs_row = arrays["observations"].nbytes // arrays["observations"].shape[0]
    steps = sum(arrays[k].nbytes for k in ("actions", "rewards", "terminals", "timeouts"))
    return arrays["observations"].nbytes + n_episodes * obs_row + steps


def zarr_raw(arrays: dict[str, np.ndarray], path: Path) -> None:
    """The store's arrays written straight into a zarr group: the ceiling for our write path.

    The same ten arrays the store holds (T+1 observations, the step columns with the
    action mask, the episode table), derived the plain NumPy way, one write each,
    without validation, transactions or locking.
    """
    codec = BloscCodec(cname="zstd", clevel=layout.DEFAULT_COMPRESSION_LEVEL, shuffle="shuffle")
    group = zarr.open_group(path, mode="w", zarr_format=3)
    ends = np.flatnonzero(arrays["terminals"] | arrays["timeouts"])
    starts = np.concatenate(([0], ends[:-1] + 1))
    obs = np.insert(arrays["observations"], ends + 1, arrays["next_observations"][ends], axis=0)
    mask = ~np.isnan(arrays["actions"]).any(axis=1)
    data = {
        layout.OBSERVATIONS: obs,
        layout.ACTIONS: arrays["actions"],
        layout.ACTION_MASK: mask,
        layout.REWARDS: arrays["rewards"],
        layout.TERMINATIONS: arrays["terminals"],
        layout.TRUNCATIONS: arrays["timeouts"],
        layout.STEP_START: starts.astype(np.int64),
        layout.LENGTH: (ends + 1 - starts).astype(np.int64),
        layout.RETURN: np.add.reduceat(arrays["rewards"].astype(np.float64), starts),
        layout.LABELLED: np.logical_and.reduceat(mask, starts),
    }
    for name, value in data.items():
        z = group.create_array(
            name,
            shape=value.shape,
            dtype=value.dtype,
            chunks=(layout.DEFAULT_CHUNK_STEPS, *value.shape[1:]),
            compressors=codec,
        )
        z[:] = value


def minari_create(arrays: dict[str, np.ndarray], root: Path, env_id: str) -> None:
    import os

    import minari
    from minari.data_collector import EpisodeBuffer

    ends = np.flatnonzero(arrays["terminals"] | arrays["timeouts"])
    starts = np.concatenate(([0], ends[:-1] + 1))
    buffers = [
        EpisodeBuffer(
            id=i,
            observations=np.concatenate(
                [arrays["observations"][s : e + 1], arrays["next_observations"][e : e + 1]]
            ),
            actions=arrays["actions"][s : e + 1],
            rewards=arrays["rewards"][s : e + 1],
            terminations=arrays["terminals"][s : e + 1],
            truncations=arrays["timeouts"][s : e + 1],
            infos={},
        )
        for i, (s, e) in enumerate(zip(starts, ends, strict=True))
    ]
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers(
            f"bench/run{np.random.randint(1 << 30)}-v0", buffers, env=env_id, algorithm_name="bench"
        )


def chunk_sweep(arrays, args, fresh, mb: float) -> list[dict]:
    """Write and whole-store read throughput of ssorl for a few chunk lengths."""
    from ssorl_data.store import TrajectoryStore

    def read_all(path: Path) -> None:
        with TrajectoryStore.open(path) as store:
            for _ in store.iter_batches():
                pass

    sweep = []
    for chunk in (8_192, 16_384, 32_768, 65_536, 131_072):
        path = fresh(f"chunk{chunk}")

        def write(chunk: int = chunk, path: Path = path) -> None:
            shutil.rmtree(path, ignore_errors=True)
            import_dataset(
                from_arrays(arrays, env_id=args.env), path, chunk_steps=chunk, progress=False
            )

        def read(path: Path = path) -> None:
            read_all(path)

        times = best_of_interleaved(args.repeats, {"write": write, "read": read})
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6
        sweep.append(
            {
                "chunk_steps": chunk,
                "write_mb_per_s": mb / times["write"],
                "read_mb_per_s": mb / times["read"],
                "disk_mb": size,
            }
        )
        print(
            f"chunk {chunk:>7}: write {mb / times['write']:7.1f} MB/s, "
            f"read {mb / times['read']:7.1f} MB/s, {size:.1f} MB on disk"
        )
    return sweep


def foreign_imports(steps: int, repeats: int, scratch: Path) -> list[dict]:
    """Import time of a Minari and a LeRobot dataset against each library's own reader."""
    import os

    import minari
    import pyarrow.parquet as pq

    from tests.data.factories import write_minari_hopper
    from tests.data.lerobot_factory import LeRobotSpec, write_lerobot_dataset

    os.environ["MINARI_DATASETS_PATH"] = str(scratch / "minari")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_minari_hopper("bench/hopper-v0", steps)
    episodes = max(1, steps // 1000)
    lerobot = write_lerobot_dataset(
        scratch / "lerobot", LeRobotSpec(lengths=[1000] * episodes, episodes_per_file=250)
    )

    def store(name: str) -> Path:
        shutil.rmtree(scratch / name, ignore_errors=True)
        return scratch / name

    def minari_read() -> None:
        for episode in minari.load_dataset("bench/hopper-v0").iterate_episodes():
            np.asarray(episode.observations), np.asarray(episode.actions)

    def lerobot_read() -> None:
        for path in sorted((lerobot / "data").glob("chunk-*/file-*.parquet")):
            pq.read_table(path)

    runs = {
        "minari:ssorl_import": lambda: import_dataset(
            "bench/hopper-v0", store("from_minari"), progress=False
        ),
        "minari:minari_iterate": minari_read,
        "lerobot:ssorl_import": lambda: import_dataset(
            lerobot, store("from_lerobot"), progress=False
        ),
        "lerobot:pyarrow_read_table": lerobot_read,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        times = best_of_interleaved(repeats, runs)
    n_steps = {"minari": steps, "lerobot": episodes * 999}  # L frames -> L - 1 steps
    rows = []
    for name, seconds in times.items():
        source, method = name.split(":")
        reader = min(t for n, t in times.items() if n.startswith(source) and "ssorl" not in n)
        rows.append({"source": source, "method": method, "steps": n_steps[source],
                     "seconds": seconds, "steps_per_s": n_steps[source] / seconds,
                     "time_vs_reader": seconds / reader})  # fmt: skip
        print(f"{name:>28}: {n_steps[source] / seconds:12,.0f} steps/s ({seconds:.3f} s)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument(
        "--copies",
        type=int,
        default=3,
        help="Repeat the corpus files this many times (corpus-scale sizes).",
    )
    parser.add_argument("--foreign", action="store_true", help="Minari and LeRobot imports.")
    parser.add_argument("--foreign-steps", type=int, default=1_000_000)
    args = parser.parse_args()
    if args.foreign:
        scratch = Path(tempfile.mkdtemp(prefix="bench_store_foreign-"))
        rows = foreign_imports(args.foreign_steps, args.repeats, scratch)
        shutil.rmtree(scratch, ignore_errors=True)
        path = write_results("store_foreign", {"repeats": args.repeats, "rows": rows})
        print(f"written to {path}")
        return
    arrays = load(args.env, args.copies)
    mb = payload_bytes(arrays) / 1e6
    scratch = Path(tempfile.mkdtemp(prefix="bench_store-"))

    def fresh(name: str) -> Path:
        shutil.rmtree(scratch / name, ignore_errors=True)
        return scratch / name

    def ours() -> None:
        import_dataset(from_arrays(arrays, env_id=args.env), fresh("ours"), progress=False)

    def ours_hdf5() -> None:
        target = fresh("ours_hdf5")
        for i, name in enumerate(FILES * args.copies):
            import_dataset(CORPUS / args.env / f"{name}.hdf5", target, append=i > 0, progress=False)

    runs = {
        "ssorl": ours,
        "ssorl_hdf5": ours_hdf5,
        "zarr_raw": lambda: zarr_raw(arrays, fresh("raw")),
        "minari": lambda: minari_create(arrays, fresh("minari"), args.env),
    }
    rows = []
    for method, seconds in best_of_interleaved(args.repeats, runs).items():
        rows.append({"method": method, "seconds": seconds, "mb_per_s": mb / seconds})
        print(f"{method:>10}: {mb / seconds:8.1f} MB/s ({seconds:.3f} s)")
    sweep = chunk_sweep(arrays, args, fresh, mb)
    raw = next(r["mb_per_s"] for r in rows if r["method"] == "zarr_raw")
    for row in rows:
        row["ratio_to_zarr_raw"] = row["mb_per_s"] / raw
    shutil.rmtree(scratch, ignore_errors=True)
    path = write_results(
        "store",
        {
            "dataset": f"{args.env}: ({' + '.join(FILES)}) x {args.copies}",
            "n_steps": int(arrays["rewards"].shape[0]),
            "megabytes": mb,
            "repeats": args.repeats,
            "rows": rows,
            "chunk_sweep": sweep,
        },
    )
    print(f"ssorl / zarr_raw = {rows[0]['ratio_to_zarr_raw']:.2f}; written to {path}")


if __name__ == "__main__":
    main()
