"""The scale benchmark at a tiny size: every stage's row, the targets, resuming, failures.

The benchmark runs the real stages in child processes, so this is the end-to-end check
that its JSON says what ran; its figures are not checked against speed (benchmarks, not
tests, claim speed).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.tables import scale_tables
from ssorl_data.store import TrajectoryStore

REPO = Path(__file__).resolve().parents[1]
STAGES = [
    "append", "data info", "data verify", "data split", "idm train", "relabel",
    "training view in RAM", "training cache", "ssorl train", "ssorl train --no-cache",
    "DT sampling", "data export d4rl", "data export minari", "data drop-actions",
]  # fmt: skip
TINY = ["--episode-length", "200", "--train-steps", "20", "--image-train-steps", "5",
        "--dt-batches", "5"]  # fmt: skip


def bench(tmp: Path, results: str, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "benchmarks.bench_scale", "--results", str(tmp / results),
               "--work-dir", str(tmp / "work"), *TINY, *args]  # fmt: skip
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)


def rows_of(path: Path) -> dict[tuple, dict]:
    return {(r["kind"], r["size"], r["stage"]): r for r in json.loads(path.read_text())["rows"]}


def test_every_stage_gets_a_measured_row_and_a_rerun_measures_nothing_again(tmp_path):
    done = bench(tmp_path, "scale.json", "--sizes", "20k", "--image-sizes", "")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "scale.json").read_text())
    rows = rows_of(tmp_path / "scale.json")
    assert [stage for (_, _, stage) in rows] == STAGES
    for row in rows.values():
        assert "error" not in row, row
        assert row["seconds"] > 0 and row["wall_seconds"] >= row["seconds"]
        assert 5 < row["peak_rss_mb"] < 4096 and 0 < row["peak_anon_mb"] <= row["peak_rss_mb"]
        assert row["steps_per_s"] > 0
        assert row["cpu_seconds"] > 0 and row["read_mb"] >= 0 and row["write_mb"] >= 0
        assert len(row["load_1min"]) == 2
    # the D4RL export writes its file: storage writes or dirty pages, never nothing read
    assert rows["lowdim", 20_000, "data export d4rl"]["output_mb"] > 0
    assert rows["lowdim", 20_000, "ssorl train"]["unit"] == "gradient steps"
    assert rows["lowdim", 20_000, "data info"]["steps_per_s"] == pytest.approx(
        20_000 / rows["lowdim", 20_000, "data info"]["seconds"]
    )
    # the labelled windows: the split's visible rows as the store holds them
    with TrajectoryStore.open(tmp_path / "work" / "lowdim-20000" / "store") as store:
        visible = np.asarray(store.read_split("p10q50").visible, bool)
        steps = int(store.episode_table().lengths[visible].sum())
        expected = ((steps + visible.sum()) * 17 * 4 + steps * 6 * 4) / 1e6
    assert result["stores"]["lowdim/20000"]["labelled_windows_mb"] == pytest.approx(expected)
    memory = {t["stage"]: t for t in result["targets"]["memory"]}
    assert set(memory) == set(STAGES)
    assert memory["data verify"]["limit_mb"] == pytest.approx(2048 + expected)
    assert all(t["verdict"] == "n/a: one size" for t in result["targets"]["scaling"])
    assert result["targets"]["cache"]["store"] == "lowdim/20000"
    # the exports, the copy and the decompressed view are removed after their rows
    assert sorted(p.name for p in (tmp_path / "work" / "lowdim-20000").iterdir()) == [
        "drop.txt", "idm", "logs", "store"
    ]  # fmt: skip
    assert (tmp_path / "scale.png").stat().st_size > 0
    assert "| lowdim | 20,000 | data verify |" in scale_tables(result)

    again = bench(tmp_path, "scale.json", "--sizes", "20k", "--image-sizes", "")
    assert again.returncode == 0, again.stderr[-3000:]
    assert " ... " not in again.stdout  # no stage was run again
    assert rows_of(tmp_path / "scale.json") == rows

    redo = bench(tmp_path, "scale.json", "--sizes", "20k", "--image-sizes", "", "--redo",
                 "--stages", "data verify,ssorl train")  # fmt: skip
    assert redo.returncode == 0, redo.stderr[-3000:]
    ran = [line[: -len(" ...")].split(" ", 2)[2] for line in redo.stdout.splitlines()
           if line.endswith(" ...")]  # fmt: skip
    assert ran == ["data verify", "ssorl train"]
    redone = rows_of(tmp_path / "scale.json")
    assert redone["lowdim", 20_000, "data verify"] != rows["lowdim", 20_000, "data verify"]
    assert redone["lowdim", 20_000, "append"] == rows["lowdim", 20_000, "append"]
    assert (tmp_path / "work" / "lowdim-20000" / "store").exists()

    other = bench(tmp_path, "scale.json", "--sizes", "20k", "--image-sizes", "", "--seed", "1")
    assert other.returncode != 0 and "--fresh" in other.stderr


def test_a_failed_stage_records_its_error_and_the_stages_that_need_it_get_no_row(tmp_path):
    done = bench(tmp_path, "failed.json", "--sizes", "20k", "--image-sizes", "",
                 "--stages", "relabel", "--idm-hidden", "not-sizes")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = rows_of(tmp_path / "failed.json")
    assert [stage for (_, _, stage) in rows] == ["append", "data split", "idm train"]
    assert "--hidden" in rows["lowdim", 20_000, "idm train"]["error"]
    assert "error" not in rows["lowdim", 20_000, "data split"]


@pytest.mark.slow
def test_an_image_store_goes_through_every_stage(tmp_path):
    done = bench(tmp_path, "image.json", "--sizes", "", "--image-sizes", "4k")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = rows_of(tmp_path / "image.json")
    assert [stage for (_, _, stage) in rows] == STAGES
    errors = {stage: row["error"] for (_, _, stage), row in rows.items() if "error" in row}
    assert not errors, errors
