"""`ssorl run --sweep`: a grid of pipelines in worker processes, resumed, failures reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ssorl_data.errors import SsorlError
from ssorl_data.store import TrajectoryStore
from ssorl_train.cli.main import cli
from ssorl_train.errors import PipelineConfigError
from ssorl_train.pipeline import SPLIT_NAME, PipelineConfig
from ssorl_train.sweep import SweepConfig, run_cells, run_sweep

from .test_pipeline import TOY
from .toml_text import toml_text

BASE = {
    "data": {"env_id": "Hopper-v5", "steps": 800, "policy": "hopper-balance"},
    "split": TOY["split"],  # labelled_fraction 0.3: the grid keeps it
    "idm": TOY["idm"],
    "train": TOY["train"],
    "eval": {"eval_episodes": 1},
}
GRID = {"quantile": [0.5, 1.0], "seeds": [0, 1], "jobs": 2}


def stage_statuses(cell_dir: Path) -> set[str]:
    report = json.loads((cell_dir / "report" / "report.json").read_text())
    return {stage["status"] for stage in report["stages"]}


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sweep") / "run"
    return out, run_sweep(SweepConfig.from_dict(BASE | {"sweep": GRID}), out, echo=lambda _: None)


def test_every_cell_runs_and_the_table_pools_seeds(swept):
    out, summary = swept
    assert summary["failed"] == {}
    rows = summary["rows"]
    assert len(rows) == 2 * 3 + 2 * 2  # full agents only in the first quantile's cells
    cells = {(r["quantile"], r["seed"]) for r in rows if r["mode"] != "full"}
    assert cells == {(0.5, 0), (0.5, 1), (1.0, 0), (1.0, 1)}
    full = [r for r in rows if r["mode"] == "full"]
    assert [(r["labelled_fraction"], r["quantile"], r["seed"]) for r in full] == [
        (None, None, 0),
        (None, None, 1),
    ]
    assert all(r["grad_steps"] == TOY["train"]["steps"] for r in rows)
    table = summary["table"]
    assert len(table) == 1 + 2 * 2  # full, then quantiles x the two split modes
    assert all(row["seeds"] == [0, 1] and row["score_mean"] is not None for row in table)
    assert json.loads((out / "sweep.json").read_text()) == summary
    markdown = (out / "sweep.md").read_text()
    assert "| td3bc | - | - | full |" in markdown
    assert "| td3bc | 0.3 | 0.5 | semi-supervised |" in markdown


def test_a_seed_seeds_the_split_the_idm_and_the_agents(swept):
    out, _ = swept
    reports = {
        seed: json.loads((out / "cells" / f"td3bc-lf0.3-q1-seed{seed}" / "report" /
                          "report.json").read_text())
        for seed in (0, 1)
    }  # fmt: skip
    for seed, report in reports.items():
        config = report["config"]
        assert (config["split"]["seed"], config["idm"]["seed"]) == (seed, seed)
        assert config["train"]["seeds"] == [seed]
    visible = []
    for seed in (0, 1):
        with TrajectoryStore.open(out / "cells" / f"td3bc-lf0.3-q1-seed{seed}" / "store") as store:
            visible.append(store.read_split(SPLIT_NAME).visible)
    assert visible[0].sum() == visible[1].sum() and (visible[0] != visible[1]).any()


def test_second_sweep_skips_every_finished_stage(swept):
    out, summary = swept
    again = run_sweep(SweepConfig.from_dict(BASE | {"sweep": GRID}), out, echo=lambda _: None)
    assert again["rows"] == summary["rows"]
    for cell in (out / "cells").iterdir():
        assert stage_statuses(cell) == {"skipped"}


def test_cli_resumes_the_sweep_and_prints_the_table(swept):
    out, summary = swept
    config = out.parent / "sweep.toml"
    config.write_text(toml_text(BASE | {"sweep": GRID}))
    result = CliRunner().invoke(cli, ["run", str(config), "--sweep", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "[sweep] 4 cells, 2 at a time" in result.output
    assert "| td3bc | 0.3 | 1.0 | labelled-only |" in result.output
    for cell in (out / "cells").iterdir():
        assert stage_statuses(cell) == {"skipped"}
    assert json.loads((out / "sweep.json").read_text())["rows"] == summary["rows"]


def test_an_interrupted_sweep_starts_no_more_cells(tmp_path):
    cells = SweepConfig.from_dict(BASE | {"sweep": {"seeds": [0, 1, 2, 3]}}).cells()

    def interrupt(result):
        raise KeyboardInterrupt  # as Ctrl-C reaches the sweep's process

    with pytest.raises(KeyboardInterrupt):
        run_cells(cells, tmp_path, jobs=1, echo=lambda _: None, on_done=interrupt)
    assert [path.name for path in (tmp_path / "cells").iterdir()] == [cells[0].name]


def test_a_failing_cell_is_reported_and_the_others_finish(tmp_path, swept):
    _, summary = swept
    raw = BASE | {"sweep": {"seeds": [0], "algo": ["td3bc", "iql"], "jobs": 1}}
    raw["train"] = TOY["train"] | {"overrides": {}}
    raw["sweep"]["train"] = {"iql": {"steps": 4}, "td3bc": {"overrides": {"batch_size": 16}}}
    bad = SweepConfig.from_dict(raw)
    cells = bad.cells()
    assert [c.config.train["steps"] for c in cells] == [TOY["train"]["steps"], 4]
    missing = SweepConfig(
        {**bad.base, "data": {"source": str(tmp_path / "missing.hdf5")}}, bad.sweep
    )
    result = run_sweep(missing, tmp_path / "run", echo=lambda _: None)
    assert set(result["failed"]) == {c.name for c in cells}
    assert "missing.hdf5" in (tmp_path / "run" / "cells" / cells[0].name / "error.txt").read_text()


@pytest.mark.parametrize(
    ("sweep", "match"),
    [
        ({"seed": [0]}, "unknown key"),
        ({"quantile": 0.5}, "non-empty list"),
        ({"algo": []}, "non-empty list"),
        ({"jobs": 0}, "jobs to be an integer >= 1"),
        ({"train": {"dt": {"steps": 5}}}, "not in"),
        ({"algo": ["td3bc", "nope"]}, "nope"),
    ],
)
def test_sweep_config_errors_name_the_bad_key(sweep, match):
    with pytest.raises(SsorlError, match=match):
        SweepConfig.from_dict(BASE | {"sweep": sweep})


def test_configs_refuse_the_other_command(tmp_path):
    plain, swept = tmp_path / "plain.toml", tmp_path / "sweep.toml"
    plain.write_text('[data]\nenv_id = "Hopper-v5"\n')
    swept.write_text('[data]\nenv_id = "Hopper-v5"\n[sweep]\nseeds = [0, 1]\n')
    with pytest.raises(PipelineConfigError, match="--sweep"):
        PipelineConfig.from_toml(swept)
    with pytest.raises(PipelineConfigError, match=r"no \[sweep\]"):
        SweepConfig.from_toml(plain)
    result = CliRunner().invoke(cli, ["run", str(plain), "--jobs", "2"])
    assert result.exit_code != 0 and "--sweep only" in result.output


def test_example_sweep_config_is_valid():
    example = Path(__file__).parents[2] / "examples" / "sweep.toml"
    cells = SweepConfig.from_toml(example).cells()
    assert len(cells) == 3 * 2 * 2 * 3
    with_full = {(c.labels["labelled_fraction"], c.labels["quantile"])
                 for c in cells if "full" in c.config.train["modes"]}  # fmt: skip
    assert with_full == {(0.05, 0.5)}
    assert {c.config.train["steps"] for c in cells if c.labels["algo"] == "iql"} == {3000}


def test_cells_left_without_a_mode_are_dropped():
    raw = BASE | {"train": TOY["train"] | {"modes": ["full"]}}
    cells = SweepConfig.from_dict(raw | {"sweep": {"quantile": [0.5, 1.0]}}).cells()
    assert [c.name for c in cells] == ["td3bc-lf0.3-q0.5-seed0"]


def test_a_step_budget_cannot_be_swept():
    raw = {"data": {"env_id": "Hopper-v5"}, "split": {"labelled_steps": 500},
           "sweep": {"seeds": [0, 1]}}  # fmt: skip
    with pytest.raises(PipelineConfigError, match="labelled_steps cannot be swept"):
        SweepConfig.from_dict(raw)
