"""Writes LeRobot datasets in the v3 layout, as LeRobot's own writer lays them out.

Without the `lerobot` package (it would pull a CUDA torch into the venv), this follows
its code (lerobot.datasets: DatasetInfo.to_dict, get_hf_features_from_features,
DatasetWriter._save_episode_data, LeRobotDatasetMetadata._save_episode_metadata):
meta/info.json; meta/episodes/chunk-XXX/file-XXX.parquet written by a ParquetWriter in
buffers of 10 episodes (columns episode_index, tasks, length, data/*, dataset_*_index,
videos/*, stats/*, meta/episodes/*); meta/tasks.parquet; meta/stats.json; and
data/chunk-XXX/file-XXX.parquet written by one ParquetWriter per file, one
`write_table` (one row group) per episode, shape-(1,) features as plain values and
1-D ones as fixed-size lists. Files roll over every `episodes_per_file` episodes (LeRobot
rolls over by size in MB) and chunks every `chunks_size` files, as
`update_chunk_file_indices` does. Videos are declared (info.json, episode offsets) but
no mp4 is written: the importer never opens one.

Every value is a function of (seed, episode index), so a test rebuilds what it expects
with `episode_frames`. For a ~1M-step benchmark dataset:
`write_lerobot_dataset(root, LeRobotSpec(lengths=[1000] * 1000, episodes_per_file=250))`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
METADATA_BUFFER = 10  # episodes per write_table of the episode metadata (LeRobot's default)
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # datasets.Image


@dataclass(frozen=True)
class LeRobotSpec:
    """What `write_lerobot_dataset` writes."""

    lengths: tuple[int, ...] | list[int]  # frames per episode
    state_dim: int = 6
    action_dim: int = 3
    fps: int = 30
    rewards: bool = True  # write next.reward
    done: str = "eval"  # eval: done on the last two frames of even episodes; last; none
    extra_state: dict[str, int] = field(default_factory=dict)  # more observation.* features
    image_keys: tuple[str, ...] = ()  # dtype "image": PNG-like bytes in the data files
    video_keys: tuple[str, ...] = ()  # dtype "video": declared only
    episodes_per_file: int = 4
    chunks_size: int = 3  # files per chunk directory
    episodes_per_meta_file: int = 5
    codebase_version: str = "v3.0"
    robot_type: str = "so101_follower"
    seed: int = 0


def episode_frames(spec: LeRobotSpec, episode: int) -> dict[str, np.ndarray]:
    """The per-frame values of `episode` (the columns of its rows in the data file)."""
    length = int(spec.lengths[episode])
    rng = np.random.default_rng([spec.seed, episode])
    frames = {"observation.state": rng.standard_normal((length, spec.state_dim), np.float32)}
    for name, dim in spec.extra_state.items():
        frames[name] = rng.standard_normal((length, dim), np.float32)
    frames["action"] = rng.uniform(-1, 1, (length, spec.action_dim)).astype(np.float32)
    if spec.rewards:
        frames["next.reward"] = rng.standard_normal(length, np.float32)
    if spec.done != "none":
        done = np.zeros(length, bool)
        if spec.done == "last":
            done[-1] = True
        elif episode % 2 == 0:  # lerobot_eval's layout: the done frame, then the final frame
            done[-2:] = True
        frames["next.done"] = done
    return frames


def features(spec: LeRobotSpec) -> dict[str, dict]:
    """info.json's features, in LeRobot's order (the dataset's own, then DEFAULT_FEATURES)."""
    motors = [f"joint_{i}.pos" for i in range(spec.state_dim)]
    out: dict[str, dict] = {
        "observation.state": {"dtype": "float32", "shape": [spec.state_dim], "names": motors}
    }
    for name, dim in spec.extra_state.items():
        out[name] = {"dtype": "float32", "shape": [dim], "names": None}
    for key in spec.image_keys:
        out[key] = {"dtype": "image", "shape": [8, 8, 3], "names": ["height", "width", "channel"]}
    for key in spec.video_keys:
        out[key] = {
            "dtype": "video",
            "shape": [480, 640, 3],
            "names": ["height", "width", "channels"],
            "info": {"video.fps": spec.fps, "video.codec": "av1", "video.pix_fmt": "yuv420p"},
        }
    actions = [f"joint_{i}.pos" for i in range(spec.action_dim)]
    out["action"] = {"dtype": "float32", "shape": [spec.action_dim], "names": actions}
    if spec.rewards:
        out["next.reward"] = {"dtype": "float32", "shape": [1], "names": None}
    if spec.done != "none":
        out["next.done"] = {"dtype": "bool", "shape": [1], "names": None}
    for name, dtype in (
        ("timestamp", "float32"),
        ("frame_index", "int64"),
        ("episode_index", "int64"),
        ("index", "int64"),
        ("task_index", "int64"),
    ):
        out[name] = {"dtype": dtype, "shape": [1], "names": None}
    return out


def write_lerobot_dataset(root: Path, spec: LeRobotSpec) -> Path:
    """Write the dataset under `root` (created); returns `root`."""
    root = Path(root)
    feats = features(spec)
    schema = _data_schema(feats)
    n_episodes, total = len(spec.lengths), int(np.sum(spec.lengths))
    info = {
        "codebase_version": spec.codebase_version,
        "fps": spec.fps,
        "features": feats,
        "total_episodes": n_episodes,
        "total_frames": total,
        "total_tasks": 1,
        "chunks_size": spec.chunks_size,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if spec.video_keys else None,
        "robot_type": spec.robot_type,
        "splits": {"train": f"0:{n_episodes}"},
    }
    (root / "meta").mkdir(parents=True)
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    pq.write_table(
        pa.table({"task_index": pa.array([0], pa.int64()), "task": ["pick the cube"]}),
        root / "meta/tasks.parquet",
    )
    episode_rows, stats = _write_data(root, spec, schema)
    _write_episode_metadata(root, spec, episode_rows)
    (root / "meta/stats.json").write_text(json.dumps(stats, indent=4))
    return root


def _data_schema(feats: dict[str, dict]) -> pa.Schema:
    fields, hf = [], {}
    for name, ft in feats.items():
        if ft["dtype"] == "video":
            continue
        if ft["dtype"] == "image":
            fields.append(pa.field(name, IMAGE_TYPE))
            hf[name] = {"_type": "Image"}
            continue
        value = pa.from_numpy_dtype(np.dtype(ft["dtype"]))
        if ft["shape"] == [1]:
            fields.append(pa.field(name, value))
            hf[name] = {"dtype": ft["dtype"], "_type": "Value"}
        else:
            fields.append(pa.field(name, pa.list_(value, ft["shape"][0])))
            hf[name] = {
                "feature": {"dtype": ft["dtype"], "_type": "Value"},
                "length": ft["shape"][0],
                "_type": "List",
            }
    metadata = {"huggingface": json.dumps({"info": {"features": hf}})}
    return pa.schema(fields, metadata=metadata)


def _next_file(chunk: int, file: int, chunks_size: int) -> tuple[int, int]:
    """LeRobot's update_chunk_file_indices: a new chunk after `chunks_size` files."""
    return (chunk + 1, 0) if file == chunks_size - 1 else (chunk, file + 1)


def _write_data(root: Path, spec: LeRobotSpec, schema: pa.Schema) -> tuple[list[dict], dict]:
    rows, writer, chunk, file, start = [], None, 0, 0, 0
    sums: dict[str, list[np.ndarray]] = {}
    for episode, length in enumerate(spec.lengths):
        if episode and episode % spec.episodes_per_file == 0:
            writer.close()
            writer = None
            chunk, file = _next_file(chunk, file, spec.chunks_size)
        if writer is None:
            path = root / DATA_PATH.format(chunk_index=chunk, file_index=file)
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = pq.ParquetWriter(path, schema, compression="snappy", use_dictionary=True)
        frames = episode_frames(spec, episode)
        columns = dict(frames)
        for key in spec.image_keys:
            columns[key] = [{"bytes": bytes([episode % 256]) * 16, "path": None}] * length
        columns["timestamp"] = (np.arange(length) / spec.fps).astype(np.float32)
        columns["frame_index"] = np.arange(length, dtype=np.int64)
        columns["episode_index"] = np.full(length, episode, np.int64)
        columns["index"] = np.arange(start, start + length, dtype=np.int64)
        columns["task_index"] = np.zeros(length, np.int64)
        writer.write_table(
            pa.table([_arrow(columns[f.name], f.type) for f in schema], schema=schema)
        )
        row = {
            "episode_index": episode,
            "tasks": ["pick the cube"],
            "length": length,
            "data/chunk_index": chunk,
            "data/file_index": file,
            "dataset_from_index": start,
            "dataset_to_index": start + length,
        }
        for key in spec.video_keys:
            row |= {
                f"videos/{key}/chunk_index": 0,
                f"videos/{key}/file_index": 0,
                f"videos/{key}/from_timestamp": start / spec.fps,
                f"videos/{key}/to_timestamp": (start + length) / spec.fps,
            }
        for name, values in frames.items():
            values = values.reshape(length, -1).astype(np.float64)
            row |= _stats(name, values)
            sums.setdefault(name, []).append(values)
        rows.append(row)
        start += length
    writer.close()
    stats = {}
    for name, parts in sums.items():
        flat = _stats(name, np.concatenate(parts))
        stats[name] = {key.split("/")[-1]: value for key, value in flat.items()}
    return rows, stats


def _stats(name: str, values: np.ndarray) -> dict[str, list]:
    return {
        f"stats/{name}/min": values.min(0).tolist(),
        f"stats/{name}/max": values.max(0).tolist(),
        f"stats/{name}/mean": values.mean(0).tolist(),
        f"stats/{name}/std": values.std(0).tolist(),
        f"stats/{name}/count": [int(values.shape[0])],
    }


def _arrow(values, type_: pa.DataType) -> pa.Array:
    if pa.types.is_fixed_size_list(type_):
        flat = pa.array(np.ascontiguousarray(values).reshape(-1), type_.value_type)
        return pa.FixedSizeListArray.from_arrays(flat, type_.list_size)
    return pa.array(values, type_)


def _write_episode_metadata(root: Path, spec: LeRobotSpec, rows: list[dict]) -> None:
    chunk, file, writer, buffer = 0, 0, None, []

    def flush() -> None:
        nonlocal writer
        if not buffer:
            return
        table = pa.Table.from_pylist(buffer)
        if writer is None:
            path = root / EPISODES_PATH.format(chunk_index=chunk, file_index=file)
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = pq.ParquetWriter(path, table.schema, compression="snappy")
        writer.write_table(table.select(writer.schema.names))
        buffer.clear()

    for i, row in enumerate(rows):
        if i and i % spec.episodes_per_meta_file == 0:
            flush()
            writer.close()
            writer = None
            chunk, file = _next_file(chunk, file, spec.chunks_size)
        buffer.append(row | {"meta/episodes/chunk_index": chunk, "meta/episodes/file_index": file})
        if len(buffer) >= METADATA_BUFFER:
            flush()
    flush()
    writer.close()
