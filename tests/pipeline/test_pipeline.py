"""`ssorl run`: every stage at toy size, stage skipping, and resuming after lost outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ssorl_data.errors import InvalidNameError
from ssorl_data.store import TrajectoryStore
from ssorl_train import loop
from ssorl_train.cli.main import cli
from ssorl_train.errors import PipelineConfigError
from ssorl_train.pipeline import PipelineConfig, run_pipeline
from ssorl_train.pipeline.config import tomllib

from .toml_text import toml_text

EXAMPLE = Path(__file__).parents[2] / "examples" / "pipeline.toml"
TOY = {  # the example config, shrunk so that every stage runs in seconds
    "data": {"steps": 800},
    "split": {"labelled_fraction": 0.3},
    "idm": {"max_steps": 10, "hidden": [16], "members": 2, "batch_size": 32, "eval_every": 5},
    "train": {"steps": 10, "log_every": 5, "overrides": {"batch_size": 16, "hidden_dim": 16}},
    "eval": {"eval_episodes": 1, "eval_every": 5},
}
AGENTS = ["agent-full-seed0", "agent-semi-supervised-seed0", "agent-labelled-only-seed0"]


def toy_config(**changes: dict) -> PipelineConfig:
    raw = tomllib.loads(EXAMPLE.read_text())
    for section, values in (TOY | changes).items():
        raw[section] = raw.get(section, {}) | values
    return PipelineConfig.from_dict(raw)


def statuses(report: dict) -> dict[str, str]:
    return {s["name"]: s["status"] for s in report["stages"]}


def run(out: Path, config: PipelineConfig | None = None) -> dict:
    return run_pipeline(config or toy_config(), out, progress=False, echo=lambda _: None)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("pipeline") / "run"
    return out, run(out)


def test_first_run_runs_every_stage_and_writes_the_report(first_run):
    out, report = first_run
    assert set(statuses(report).values()) == {"ran"}
    assert list(statuses(report)) == ["data", "split", "idm", "relabel", *AGENTS]
    rows = {r["mode"]: r for r in report["comparison"]}
    assert list(rows) == ["full", "semi-supervised", "labelled-only"]
    assert rows["semi-supervised"]["proxy_steps"] > 0 and rows["full"]["proxy_steps"] == 0
    assert rows["labelled-only"]["recorded_steps"] < rows["full"]["recorded_steps"]
    assert all(r["score_mean"] is not None for r in rows.values())
    files = {p.name for p in (out / "report").iterdir()}
    assert files >= {"report.json", "report.md", "learning_curves.png",
                     "proxy_error_vs_return.png", "uncertainty_hist.png"}  # fmt: skip
    written = json.loads((out / "report" / "report.json").read_text())
    assert written["comparison"] == report["comparison"]


def test_second_run_skips_every_stage(first_run):
    out, report = first_run
    again = run(out)
    assert set(statuses(again).values()) == {"skipped"}
    assert again["comparison"] == report["comparison"]


def test_lost_idm_reruns_it_and_only_the_stages_that_read_it(first_run):
    out, _ = first_run
    shutil.rmtree(out / "idm")
    report = run(out)
    assert statuses(report) == {
        "data": "skipped", "split": "skipped", "idm": "ran", "relabel": "ran",
        "agent-full-seed0": "skipped", "agent-semi-supervised-seed0": "ran",
        "agent-labelled-only-seed0": "skipped",
    }  # fmt: skip


def test_changed_train_section_reruns_only_the_agents(first_run):
    out, _ = first_run
    report = run(out, toy_config(train=TOY["train"] | {"steps": 12}))
    assert [n for n, s in statuses(report).items() if s == "ran"] == AGENTS
    assert all(a["steps"] == 12 for a in report["agents"].values())


def test_killed_agent_resumes_from_its_checkpoint(first_run, monkeypatch):
    out, _ = first_run
    config = toy_config(train=TOY["train"] | {"steps": 12, "modes": ["full"], "seeds": [1]})

    def killed(*args, **kwargs):  # the first evaluation (step 5) comes after checkpoint 3
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "evaluate", killed)
    with pytest.raises(KeyboardInterrupt):
        run(out, config)
    monkeypatch.undo()
    assert not (out / "stamps" / "agent-full-seed1.json").exists()
    report = run(out, config)
    assert statuses(report)["agent-full-seed1"] == "ran"
    agent = report["agents"]["full-seed1"]
    assert (agent["steps"], agent["steps_this_process"]) == (12, 9)
    assert agent["normalized_score"] is not None


def test_cli_runs_the_example_schema_and_prints_the_comparison(first_run):
    out, _ = first_run
    config = out.parent / "toy.toml"
    config.write_text(toml_text(toy_config(train=TOY["train"] | {"steps": 12}).to_dict()))
    result = CliRunner().invoke(cli, ["run", str(config), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "[data] skipped" in result.output and "| semi-supervised |" in result.output


@pytest.mark.parametrize(
    ("raw", "error", "match"),
    [
        ({"data": {"env_id": "Hopper-v5"}, "trian": {}}, PipelineConfigError, "trian"),
        ({"data": {"env_id": "Hopper-v5", "stpes": 10}}, PipelineConfigError, "stpes"),
        ({"data": {}}, PipelineConfigError, "exactly one of"),
        ({"data": {"env_id": "Hopper-v5"}, "train": {"modes": ["half"]}}, PipelineConfigError,
         "half"),
        ({"data": {"env_id": "Hopper-v5"}, "idm": {"max_step": 5}}, PipelineConfigError,
         "max_step"),
        ({"data": {"env_id": "Hopper-v5"}, "relabel": {"name": "../x"}}, InvalidNameError, "x"),
        ({"data": {"env_id": "Hopper-v5"}, "train": {"overrides": {"alpah": 1}}}, ValueError,
         "alpah"),
    ],
)  # fmt: skip
def test_config_errors_name_the_bad_key(raw, error, match):
    with pytest.raises(error, match=match):
        PipelineConfig.from_dict(raw)


@pytest.mark.parametrize(("old", "new"), [("every", "eval_every"), ("episodes", "eval_episodes")])
def test_a_renamed_eval_key_fails_naming_its_new_name(old, new):
    with pytest.raises(PipelineConfigError, match=rf"\[eval\] {old} was renamed to {new}"):
        PipelineConfig.from_dict({"data": {"env_id": "Hopper-v5"}, "eval": {old: 5}})


def test_the_cli_reports_a_renamed_key_without_a_traceback(tmp_path):
    config = tmp_path / "old.toml"
    config.write_text('[data]\nenv_id = "Hopper-v5"\n[eval]\nevery = 1000\n')
    result = CliRunner().invoke(cli, ["run", str(config), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "every was renamed to eval_every" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_quickstart_config_is_a_valid_pipeline_config():
    from ssorl_train.cli.quickstart import QUICKSTART

    config = PipelineConfig.from_dict(QUICKSTART)
    assert config.train["modes"] == ["full", "semi-supervised", "labelled-only"]
    assert (config.split["labelled_fraction"], config.split["quantile"]) == (0.1, 0.5)


@pytest.mark.slow
def test_quickstart_runs_every_stage_and_prints_the_comparison(tmp_path):
    out = tmp_path / "quick"
    result = CliRunner().invoke(cli, ["quickstart", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    for mode in ("full", "semi-supervised", "labelled-only"):
        assert f"| {mode} |" in result.output
    assert (out / "report" / "report.md").exists()


def test_imported_source_reruns_the_data_stage_when_the_file_changes(tmp_path, first_run):
    from ssorl_data.io.d4rl_export import export_d4rl_hdf5

    out, _ = first_run
    source = tmp_path / "data.hdf5"
    with TrajectoryStore.open(out / "store") as store:
        export_d4rl_hdf5(store, source)
        export_d4rl_hdf5(store, tmp_path / "new.hdf5")
    raw = toy_config(train=TOY["train"] | {"modes": ["full"]}).to_dict()
    raw["data"] = {"source": str(source)}
    config = PipelineConfig.from_dict(raw)
    assert statuses(run(tmp_path / "run", config))["data"] == "ran"
    assert statuses(run(tmp_path / "run", config))["data"] == "skipped"
    (tmp_path / "new.hdf5").replace(source)  # same bytes, but a new file
    assert statuses(run(tmp_path / "run", config))["data"] == "ran"


def test_lost_relabel_run_reruns_it_and_the_semi_supervised_agents(first_run):
    out, _ = first_run
    run(out)  # back to the toy config after the tests that changed it
    shutil.rmtree(out / "store" / "relabels" / "idm")
    report = run(out)
    assert [n for n, s in statuses(report).items() if s == "ran"] == [
        "relabel",
        "agent-semi-supervised-seed0",
    ]


def test_several_sources_are_imported_in_order_into_one_store(tmp_path, first_run):
    from ssorl_data.io.d4rl_export import export_d4rl_hdf5

    out, report = first_run
    with TrajectoryStore.open(out / "store") as store:
        export_d4rl_hdf5(store, tmp_path / "a.hdf5")
    (tmp_path / "b.hdf5").write_bytes((tmp_path / "a.hdf5").read_bytes())
    config_file = tmp_path / "two.toml"
    config_file.write_text('[data]\nsource = ["a.hdf5", "b.hdf5"]\n')
    config = PipelineConfig.from_toml(config_file)  # paths taken from the config's folder
    assert config.data["source"] == [str(tmp_path / "a.hdf5"), str(tmp_path / "b.hdf5")]
    raw = toy_config(train=TOY["train"] | {"modes": ["full"]}).to_dict() | {"data": config.data}
    both = run(tmp_path / "run", PipelineConfig.from_dict(raw))
    one = next(s for s in report["stages"] if s["name"] == "data")["result"]
    data = next(s for s in both["stages"] if s["name"] == "data")["result"]
    assert (data["n_steps"], data["n_episodes"]) == (2 * one["n_steps"], 2 * one["n_episodes"])
    with TrajectoryStore.open(tmp_path / "run" / "store") as store:
        assert len(store.metadata.extra["imports"]) == 2


@pytest.mark.parametrize("source", [[], [1], {"a": 1}])
def test_source_must_be_a_path_or_a_list_of_paths(source):
    with pytest.raises(PipelineConfigError, match="source to be a string or a non-empty list"):
        PipelineConfig.from_dict({"data": {"source": source}})


def test_collects_with_an_sb3_policy_file_beside_the_config(tmp_path):
    sb3 = pytest.importorskip("stable_baselines3")
    model = sb3.TD3("MlpPolicy", "Pendulum-v1", policy_kwargs={"net_arch": [8]}, seed=0)
    model.save(tmp_path / "td3.zip")
    config_file = tmp_path / "sb3.toml"
    config_file.write_text('[data]\nenv_id = "Pendulum-v1"\npolicy = "sb3:td3.zip"\n')
    config = PipelineConfig.from_toml(config_file)
    assert config.data["policy"] == f"sb3:{tmp_path / 'td3.zip'}"
    raw = toy_config(train=TOY["train"] | {"modes": ["full"]}).to_dict()
    raw["data"] = config.data | {"steps": 1200}  # six 200-step episodes
    raw["split"] = {"labelled_fraction": 0.5}  # an IDM needs two visible episodes
    report = run(tmp_path / "run", PipelineConfig.from_dict(raw))
    assert statuses(report)["data"] == "ran"
    with TrajectoryStore.open(tmp_path / "run" / "store") as store:
        recorded = store.metadata.extra["collect"]["policy"]
        assert recorded["spec"].startswith("sb3:") and len(recorded["sha256"]) == 64
        episode = store.episode(0)
    expected, _ = model.predict(episode.observations[:-1], deterministic=True)
    np.testing.assert_allclose(episode.actions, expected, atol=1e-5)


def test_a_split_by_coverage_within_a_step_budget_feeds_the_idm(tmp_path):
    raw = toy_config(train=TOY["train"] | {"modes": ["semi-supervised"]}).to_dict()
    raw["split"] = {"labelled_steps": 300, "select": "coverage", "quantile": 1.0}
    config = PipelineConfig.from_dict(raw)
    assert "labelled_fraction" not in config.split  # the step budget replaces the default
    report = run(tmp_path / "run", config)
    assert statuses(report)["idm"] == "ran"
    with TrajectoryStore.open(tmp_path / "run" / "store") as store:
        protocol = store.read_split("pipeline").attrs
    assert protocol["method"] == "coverage" and protocol["labelled_steps"] == 300
    assert 0 < protocol["n_visible_steps"] <= 300


def test_the_default_selection_hashes_as_if_left_out():
    written = toy_config(split={"labelled_fraction": 0.3, "select": "random"})
    assert written.split == toy_config().split


@pytest.mark.parametrize(
    ("split", "match"),
    [({"labelled_fraction": 0.2, "labelled_steps": 100}, "give one labelling budget"),
     ({"select": "best"}, "select must be one of")],
)  # fmt: skip
def test_split_budget_and_selection_errors(split, match):
    with pytest.raises(PipelineConfigError, match=match):
        PipelineConfig.from_dict({"data": {"env_id": "Hopper-v5"}, "split": split})


def test_weight_beta_weights_the_semi_supervised_agents_proxy_steps(tmp_path):
    train = TOY["train"] | {"modes": ["semi-supervised", "labelled-only"], "weight_beta": 1.0}
    run(tmp_path / "run", toy_config(train=train))
    keys = {mode: json.loads((tmp_path / "run" / "cache" / mode / "view" / "cache.json")
                             .read_text())["key"] for mode in train["modes"]}  # fmt: skip
    assert keys["semi-supervised"]["weight_beta"] == 1.0  # the view the agent trained on
    assert keys["labelled-only"]["weight_beta"] is None  # it has no proxy steps to weight
    with pytest.raises(PipelineConfigError, match="weight_beta"):
        toy_config(train=TOY["train"] | {"weight_beta": -1.0})


def test_an_idm_of_every_recorded_action_relabels_for_the_splits_agent(tmp_path):
    """[idm] episodes = "all": the upper-bound IDM learns from the hidden actions too, the
    semi-supervised agent still sees only the split's, and the report says which it was."""
    idm = TOY["idm"] | {"episodes": "all"}
    train = TOY["train"] | {"modes": ["semi-supervised"]}
    report = run(tmp_path / "run", toy_config(idm=idm, train=train))
    assert set(statuses(report).values()) == {"ran"}
    assert report["stages"][2]["result"]["trained_on"] == "pipeline-all"
    provenance = json.loads((tmp_path / "run" / "idm" / "provenance.json").read_text())
    seen = set(provenance["train_episodes"]) | set(provenance["val_episodes"])
    with TrajectoryStore.open(tmp_path / "run" / "store") as store:
        hidden = np.flatnonzero(~store.read_split("pipeline").visible)
        assert seen == set(np.flatnonzero(store.episode_table().labelled))
    assert hidden.size and set(hidden) <= seen
    rows = {r["mode"]: r for r in report["comparison"]}
    assert rows["semi-supervised"]["proxy_steps"] > 0  # proxies where the split hides actions
    assert "upper bound" in (tmp_path / "run" / "report" / "report.md").read_text()


def test_the_idm_episodes_key_checks_its_value_and_its_default_hashes_as_if_left_out():
    assert toy_config(idm=TOY["idm"] | {"episodes": "visible"}).idm == toy_config().idm
    assert toy_config(idm=TOY["idm"] | {"episodes": "all"}).idm["episodes"] == "all"
    with pytest.raises(PipelineConfigError, match="episodes must be one of"):
        toy_config(idm=TOY["idm"] | {"episodes": "hidden"})
