"""The metadata of a local LeRobot dataset in the v3 layout, read without the `lerobot` package.

What LeRobot's `LeRobotDatasetMetadata` and its writer lay out (codebase_version "v3.0"):
`meta/info.json` (fps, robot_type, features with dtype/shape/names, the `data_path`
template, totals), `meta/episodes/chunk-XXX/file-XXX.parquet` (one row per episode:
`episode_index`, `length`, `data/chunk_index`, `data/file_index`, `dataset_from_index`,
`dataset_to_index`, plus per-episode stats and video offsets we do not need) and
`data/chunk-XXX/file-XXX.parquet` (one row per frame; many episodes per file, each
episode's frames contiguous and in `dataset_from_index` order).
"""

from __future__ import annotations

import json
import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ssorl_data.errors import ImportFormatError

INFO_PATH = Path("meta/info.json")
EPISODES_DIR = Path("meta/episodes")
EPISODE_COLUMNS = (
    "episode_index",
    "length",
    "data/chunk_index",
    "data/file_index",
    "dataset_from_index",
    "dataset_to_index",
)
VISUAL_DTYPES = ("video", "image")
CONVERT_HINT = (
    "Convert it with LeRobot's own converter (in an environment with the `lerobot` "
    "package): python -m lerobot.scripts.convert_dataset_v21_to_v30 --repo-id=<repo id> "
    "--root=<this directory> --push-to-hub=false (a v2.0 dataset first needs LeRobot's "
    "v2.0 to v2.1 conversion)."
)


@dataclass(frozen=True)
class Feature:
    """One entry of info.json's `features`: a column of the data files (or a video)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    names: Any  # LeRobot's per-dimension names (a list, a dict of lists, or None)

    @property
    def visual(self) -> bool:
        return self.dtype in VISUAL_DTYPES

    @property
    def numeric(self) -> bool:
        try:
            return not self.visual and np.dtype(self.dtype).kind in "fiub"
        except TypeError:
            return False

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "names": self.names,
        }


@dataclass(frozen=True)
class DataFile:
    """One data Parquet file and the episodes meta/episodes places in it, in row order."""

    path: Path
    episodes: np.ndarray  # [k] int64 episode_index
    lengths: np.ndarray  # [k] int64 frames per episode


@dataclass(frozen=True)
class LeRobotMeta:
    """The parts of a v3 dataset's metadata an import needs."""

    root: Path
    info: dict[str, Any]
    features: dict[str, Feature]
    files: list[DataFile]

    @property
    def lengths(self) -> np.ndarray:
        """Frames of every episode, in data order."""
        return np.concatenate([f.lengths for f in self.files])


def is_lerobot_dataset(path: str | os.PathLike[str]) -> bool:
    """A directory holding meta/info.json is taken for a LeRobot dataset."""
    return (Path(path) / INFO_PATH).is_file()


def read_meta(root: Path) -> LeRobotMeta:
    """info.json, checked, and the data files with their episodes; every file must exist."""
    info = _read_info(root)
    features = _features(info, root / INFO_PATH)
    return LeRobotMeta(root, info, features, _data_files(root, info))


def _read_info(root: Path) -> dict[str, Any]:
    path = root / INFO_PATH
    if not path.is_file():
        raise ImportFormatError(
            f"{root}: no {INFO_PATH} here, so this is not a LeRobot dataset directory. Pass the "
            "dataset's root (the folder holding meta/ and data/)."
        )
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ImportFormatError(f"{path}: not readable JSON ({error}).") from None
    if not isinstance(info, dict):
        raise ImportFormatError(f"{path}: expected a JSON object. Got {type(info).__name__}.")
    version = info.get("codebase_version")
    if not isinstance(version, str) or not version.startswith("v3."):
        if isinstance(version, str) and version[:2] in ("v1", "v2"):
            raise ImportFormatError(
                f"{path}: codebase_version is {version!r}; ssorl reads the LeRobot v3 layout "
                f"(codebase_version 'v3.0', many episodes per Parquet file). {CONVERT_HINT}"
            )
        raise ImportFormatError(
            f"{path}: codebase_version is {version!r}; ssorl reads LeRobot datasets of "
            "codebase_version 'v3.x' only."
        )
    for key, kind in (("features", dict), ("data_path", str)):
        if not isinstance(info.get(key), kind):
            raise ImportFormatError(
                f"{path}: key {key!r} is missing or not a {kind.__name__}; a v3 info.json has it."
            )
    return info


def _features(info: dict[str, Any], path: Path) -> dict[str, Feature]:
    features = {}
    for name, spec in info["features"].items():
        shape = spec.get("shape") if isinstance(spec, dict) else None
        if (
            not isinstance(spec, dict)
            or not isinstance(spec.get("dtype"), str)
            or not isinstance(shape, list)
            or not all(isinstance(n, int) and n > 0 for n in shape)
        ):
            raise ImportFormatError(
                f"{path}: feature {name!r} needs a 'dtype' string and a 'shape' list of positive "
                f"integers. Got {spec!r}."
            )
        features[name] = Feature(name, spec["dtype"], tuple(shape), spec.get("names"))
    return features


def _data_files(root: Path, info: dict[str, Any]) -> list[DataFile]:
    """Episodes from meta/episodes, in data order, grouped by the data file that holds them."""
    paths = sorted((root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
    if not paths:
        raise ImportFormatError(
            f"{root}: no episode metadata ({EPISODES_DIR}/chunk-*/file-*.parquet). A v3 dataset "
            "writes it when recording ends (LeRobotDataset.finalize()); is the copy complete?"
        )
    columns = {name: [] for name in EPISODE_COLUMNS}
    for path in paths:
        table = _read_columns(path, EPISODE_COLUMNS)
        for name in EPISODE_COLUMNS:
            columns[name].append(table.column(name).to_numpy().astype(np.int64))
    cols = {name: np.concatenate(parts) for name, parts in columns.items()}
    order = np.argsort(cols["dataset_from_index"], kind="stable")
    cols = {name: values[order] for name, values in cols.items()}
    episodes_dir = root / EPISODES_DIR
    if np.unique(cols["episode_index"]).size != order.size:
        raise ImportFormatError(f"{episodes_dir}: some episode_index appears more than once.")
    bad = np.flatnonzero(
        (cols["length"] < 1)
        | (cols["dataset_to_index"] - cols["dataset_from_index"] != cols["length"])
    )
    if bad.size:
        raise ImportFormatError(
            f"{episodes_dir}: episode {int(cols['episode_index'][bad[0]])} has length "
            f"{int(cols['length'][bad[0]])} but dataset_from_index..dataset_to_index "
            f"{int(cols['dataset_from_index'][bad[0]])}..{int(cols['dataset_to_index'][bad[0]])}."
        )
    keys = np.stack([cols["data/chunk_index"], cols["data/file_index"]], axis=1)
    files = []
    for chunk, file in dict.fromkeys(map(tuple, keys.tolist())):
        mine = (keys[:, 0] == chunk) & (keys[:, 1] == file)
        path = _data_path(root, info["data_path"], chunk, file)
        episodes, lengths = cols["episode_index"][mine], cols["length"][mine]
        _check_data_file(path, int(episodes[0]), int(lengths.sum()))
        files.append(DataFile(path, episodes, lengths))
    return files


def _read_columns(path: Path, names: tuple[str, ...]) -> pa.Table:
    try:
        present = pq.read_schema(path).names
        missing = [name for name in names if name not in present]
        if missing:
            raise ImportFormatError(
                f"{path}: missing column(s) {missing}; LeRobot v3 episode metadata has "
                f"{list(names)}. Found: {present}."
            )
        return pq.read_table(path, columns=list(names))
    except (OSError, pa.ArrowException) as error:
        raise ImportFormatError(f"{path}: not a readable Parquet file ({error}).") from None


def _data_path(root: Path, template: str, chunk: int, file: int) -> Path:
    """info.json's data_path filled in; only the two index fields, never outside `root`."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        relative = (
            Path(template.format(chunk_index=chunk, file_index=file))
            if fields == {"chunk_index", "file_index"}
            else None
        )
    except ValueError:  # a malformed template ('{', a bad format spec)
        relative = None
    if relative is None or relative.is_absolute() or ".." in relative.parts:
        raise ImportFormatError(
            f"{root / INFO_PATH}: data_path {template!r} must be a relative path template with "
            "the fields {chunk_index} and {file_index} only, e.g. "
            "'data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet'."
        )
    return root / relative


def _check_data_file(path: Path, first_episode: int, frames: int) -> None:
    """The file exists and has as many rows as meta/episodes says (read from its footer)."""
    if not path.is_file():
        raise ImportFormatError(
            f"{path}: missing; meta/episodes places episode {first_episode} in it."
        )
    try:
        rows = pq.ParquetFile(path).metadata.num_rows
    except (OSError, pa.ArrowException) as error:
        raise ImportFormatError(f"{path}: not a readable Parquet file ({error}).") from None
    if rows != frames:
        raise ImportFormatError(
            f"{path}: holds {rows} frames but meta/episodes places {frames} frames in it "
            f"(episodes from {first_episode} on). The dataset is incomplete or was edited."
        )
