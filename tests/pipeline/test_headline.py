"""The headline experiment's cells and its README table (the runs themselves take hours)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks import ss_headline
from benchmarks.common import merge_rows
from benchmarks.tables import headline_table
from ssorl_data.splits import choose_visible
from ssorl_data.store import EpisodeTable

CORPUS = Path(__file__).parents[3] / "shared" / "corpus"


def episode_table(corpus, stores, env, dataset):  # ss_headline's imports the corpus
    n = 40 if (env, dataset) == ("HalfCheetah-v5", "medium-replay") else 200
    lengths = np.arange(n) % 7 + 10
    step_start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return EpisodeTable(step_start, lengths, np.arange(n, dtype=float), np.ones(n, bool))


@pytest.mark.skipif(not CORPUS.exists(), reason="needs ../shared/corpus")
def test_cells_cover_the_protocol_seed_by_seed(tmp_path, monkeypatch):
    monkeypatch.setattr(ss_headline, "episode_table", episode_table)
    skipped = {}
    cells = ss_headline.cells(CORPUS, [0, 1, 2], td3bc_steps=100_000, dt_steps=5_000,
                              eval_episodes=10, stores=tmp_path, skipped=skipped)  # fmt: skip
    # td3bc: 4 sets x 5 variants; dt: 2 medium-replay sets x 3; but 2% of HalfCheetah
    # medium-replay's 40 episodes is 1, too few for an IDM (it validates on another)
    assert sorted(skipped) == [f"HalfCheetah-v5-medium-replay-{a}-2pct-seed{s}"
                               for a in ("dt", "td3bc") for s in (0, 1, 2)]  # fmt: skip
    assert len(cells) == 3 * (4 * 5 + 2 * 3 - 2) and len({c.name for c in cells}) == len(cells)
    order = [(c.labels["algo"], c.labels["variant"] == "10%", c.labels["seed"]) for c in cells]
    # the claim first (both algorithms at 10%, seed by seed), then TD3+BC's other variants,
    # then DT's (Hopper medium-replay's 2% and both sets' all-actions IDM)
    assert order == [(a, True, s) for s in (0, 1, 2) for a in ["td3bc"] * 4 + ["dt"] * 2] + [
        ("td3bc", False, s) for s in (0, 1, 2) for _ in range(15)] + [
        ("dt", False, s) for s in (0, 1, 2) for _ in range(3)]  # fmt: skip
    for cell in cells:
        config, labels = cell.config, cell.labels
        files = [Path(s).name for s in config.data["source"]]
        expected = {"medium-replay": ["medium-replay.hdf5"],
                    "medium-expert": ["medium.hdf5", "expert.hdf5"]}[labels["dataset"]]  # fmt: skip
        assert files == expected and labels["env"] in config.data["source"][0]
        assert config.split["seed"] == config.idm["seed"] == labels["seed"]
        split = {k: config.split.get(k) for k in ("labelled_fraction", "quantile", "select")}
        variant = labels["variant"]
        assert (
            split
            == {
                "10%": {"labelled_fraction": 0.1, "quantile": 0.5, "select": None},
                "drop-uncertain": {"labelled_fraction": 0.1, "quantile": 0.5, "select": None},
                "all-actions IDM": {"labelled_fraction": 0.1, "quantile": 0.5, "select": None},
                "2%": {"labelled_fraction": 0.02, "quantile": 0.5, "select": None},
                "coverage": {"labelled_fraction": None, "quantile": 1.0, "select": "coverage"},
            }[variant]
        )
        if variant == "coverage":  # as many labelled steps as the same seed's 10% split
            table = episode_table(None, None, labels["env"], labels["dataset"])
            visible = choose_visible(table, 0.1, 0.5, seed=labels["seed"])
            assert config.split["labelled_steps"] == table.lengths[visible].sum()
        modes = ["full", "semi-supervised", "labelled-only"] if variant == "10%" else [
            "semi-supervised"]  # fmt: skip
        assert config.train["modes"] == modes
        assert config.train["drop_uncertain"] == (0.2 if variant == "drop-uncertain" else 0.0)
        assert config.idm.get("episodes") == ("all" if variant == "all-actions IDM" else None)
        steps = {"td3bc": 100_000, "dt": 5_000}[labels["algo"]]
        assert config.train["steps"] == steps and config.eval["eval_every"] == steps // 10
        assert config.train["precision"] == "bf16"
        if labels["algo"] == "dt":
            assert labels["dataset"] == "medium-replay"
            assert variant in ("10%", "2%", "all-actions IDM")
            assert config.train["overrides"] == {"warmup_steps": 500}
        else:
            assert config.train["compile"] is True


@pytest.mark.skipif(not CORPUS.exists(), reason="needs ../shared/corpus")
def test_a_cell_whose_agents_are_all_in_the_results_is_finished(tmp_path, monkeypatch):
    monkeypatch.setattr(ss_headline, "episode_table", episode_table)
    cell = ss_headline.cells(CORPUS, [0], 100, 10, 1, stores=tmp_path)[0]
    rows = [cell.labels | {"mode": mode, "grad_steps": 100, "normalized_score": 1.0}
            for mode in ("full", "semi-supervised", "labelled-only")]  # fmt: skip
    assert ss_headline.in_results(cell, rows)
    assert not ss_headline.in_results(cell, rows[:2])  # labelled-only never finished
    assert not ss_headline.in_results(cell, [r | {"grad_steps": 50} for r in rows])


def test_results_of_the_same_settings_with_fewer_variants_are_kept_and_others_refused():
    new = {"td3bc_steps": 10, "variants": {"10%": {"modes": ["full"]}, "bound": {"modes": []}}}
    assert ss_headline.other_settings(new, new) is None
    fewer = new | {"variants": {"10%": {"modes": ["full"]}}}
    assert ss_headline.other_settings(fewer, new) is None  # a variant added since: kept
    why = ss_headline.other_settings(fewer | {"td3bc_steps": 20}, new)
    assert why == "td3bc_steps: 20, now 10"
    changed = new | {"variants": {"10%": {"modes": ["semi-supervised"]}}}
    assert ss_headline.other_settings(changed, new) == "variant '10%' changed or gone"
    assert ss_headline.other_settings(None, new) == "none recorded"


def test_a_rerun_cell_replaces_its_rows_and_keeps_the_others():
    old = [{"seed": 0, "mode": "full", "score": 1.0}, {"seed": 1, "mode": "full", "score": 2.0}]
    new = [{"seed": 0, "mode": "full", "score": 3.0}, {"seed": 0, "mode": "semi", "score": 4.0}]
    merged = merge_rows(old, new, ("seed", "mode"))
    assert merged == [old[1], *new]  # one row per key, the rerun's


def test_missing_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(Exception, match="corpus files not found"):
        ss_headline.cells(tmp_path, [0], 10, 10, 1, stores=tmp_path)


def test_table_puts_modes_side_by_side_with_mean_std_and_seed_count():
    def row(mode, seed, score, steps=20_000):
        return {"env": "Hopper-v5", "dataset": "medium-replay", "algo": "td3bc", "mode": mode,
                "seed": seed, "grad_steps": steps, "normalized_score": score}  # fmt: skip

    rows = [row("full", 0, 10.0), row("full", 1, 20.0), row("semi-supervised", 0, 12.0),
            row("full", 0, 99.0, steps=5)]  # fmt: skip
    lines = headline_table({"rows": rows}).splitlines()
    assert (
        lines[3]
        == "| Hopper-v5 | medium-replay | td3bc | 20,000 | 15.0 ± 5.0 (2) | 12.0 ± 0.0 (1) | - |"
    )
    assert lines[2] == "| Hopper-v5 | medium-replay | td3bc | 5 | 99.0 ± 0.0 (1) | - | - |"


def test_idm_table_averages_relative_errors_per_dataset():
    from benchmarks.tables import idm_table

    def row(seed, error):
        return {"env": "Hopper-v5", "dataset": "medium-expert", "algo": "td3bc", "seed": seed,
                "hidden_relative_mse": error, "hidden_inside_relative_mse": error / 2,
                "hidden_outside_relative_mse": error * 2, "train_seconds": 10.0 * seed}  # fmt: skip

    line = idm_table([row(1, 0.1), row(2, 0.3)]).splitlines()[-1]
    assert line == "| Hopper-v5 | medium-expert | 2 | 0.200 | 0.100 | 0.400 | 15 |"


def test_variants_table_gives_semi_supervised_as_a_share_of_full():
    from benchmarks.tables import headline_variants_table

    def row(variant, mode, seed, score):
        return {"env": "Hopper-v5", "dataset": "medium-replay", "algo": "td3bc",
                "variant": variant, "mode": mode, "seed": seed, "grad_steps": 100_000,
                "normalized_score": score}  # fmt: skip

    rows = [row("10%", "full", 0, 10.0), row("10%", "full", 1, 30.0),
            row("10%", "semi-supervised", 0, 19.0),
            row("2%", "semi-supervised", 0, 10.0)]  # fmt: skip
    line = headline_variants_table({"rows": rows}).splitlines()[-1]
    assert line == ("| Hopper-v5 | medium-replay | td3bc | 100,000 | 20.0 ± 10.0 (2) | "
                    "19.0 ± 0.0 (1); 95% | - | 10.0 ± 0.0 (1); 50% | - | - | - |")  # fmt: skip


def test_variants_table_also_scores_each_agent_over_the_second_half_of_its_budget():
    from benchmarks.tables import headline_variants_table

    def curve(mode, seed, scores):
        return {"env": "Hopper-v5", "dataset": "medium-replay", "algo": "dt", "variant": "10%",
                "mode": mode, "seed": seed, "grad_steps": 400, "normalized_score": scores[-1],
                "steps": [100, 200, 300, 400], "scores": scores}  # fmt: skip

    curves = [curve("full", 0, [1.0, 9.0, 20.0, 10.0]), curve("full", 1, [0.0, 0.0, 10.0, 20.0]),
              curve("semi-supervised", 0, [50.0, 50.0, 12.0, 3.0])]  # fmt: skip
    rows = [{k: v for k, v in c.items() if k not in ("steps", "scores")} for c in curves]
    text = headline_variants_table({"rows": rows, "curves": curves})
    final, late = [line for line in text.splitlines() if line.startswith("| Hopper-v5")]
    # final: full 10 and 20, semi 3; after half the budget (steps 300, 400): full 15 and 15,
    # semi 7.5 (the step-200 evaluation is at half, not after it)
    assert final.split(" | ")[4:6] == ["15.0 ± 5.0 (2)", "3.0 ± 0.0 (1); 20%"]
    assert late.split(" | ")[4:6] == ["15.0 ± 0.0 (2)", "7.5 ± 0.0 (1); 50%"]


def test_curves_are_drawn_per_set_and_algorithm(tmp_path):
    curve = {"env": "Hopper-v5", "dataset": "medium-replay", "algo": "td3bc", "variant": "10%",
             "mode": "full", "seed": 0, "steps": [10, 20], "scores": [1.0, 2.0]}  # fmt: skip
    ss_headline.plot_curves([curve, curve | {"seed": 1}, curve | {"variant": "2%"}], tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["Hopper-v5-medium-replay-td3bc.png"]


def test_share_points_pair_each_semi_supervised_agent_with_its_idm_and_the_mean_full(tmp_path):
    labels = {"env": "Hopper-v5", "dataset": "medium-replay", "algo": "td3bc"}
    rows = [labels | {"variant": "10%", "mode": "full", "seed": 0, "normalized_score": 10.0},
            labels | {"variant": "10%", "mode": "full", "seed": 1, "normalized_score": 30.0},
            labels | {"variant": "2%", "mode": "semi-supervised", "seed": 1,
                      "normalized_score": 15.0},
            labels | {"variant": "10%", "mode": "semi-supervised", "seed": 0,
                      "normalized_score": 25.0},
            labels | {"algo": "dt", "variant": "10%", "mode": "semi-supervised", "seed": 0,
                      "normalized_score": 5.0}]  # fmt: skip
    idm = [
        labels | {"variant": "2%", "seed": 1, "hidden_relative_mse": 0.3},
        labels | {"variant": "10%", "seed": 0, "hidden_relative_mse": 0.1},
        labels | {"algo": "dt", "variant": "10%", "seed": 0, "hidden_relative_mse": 0.2},
    ]
    points = ss_headline.share_points(rows, idm)
    # shares of the mean full (20); the dt agent has no full agent to compare with
    assert [(p["variant"], p["error"], p["share"]) for p in points] == [
        ("2%", 0.3, 0.75), ("10%", 0.1, 1.25)]  # fmt: skip
    ss_headline.plot_share_vs_error(points, tmp_path / "share.png")
    assert (tmp_path / "share.png").stat().st_size > 0


def test_share_error_table_ranks_each_sets_agents_by_error_and_share():
    from benchmarks.tables import share_error_table

    labels = {"env": "Hopper-v5", "dataset": "medium-expert", "algo": "td3bc"}
    full = labels | {"variant": "10%", "mode": "full", "seed": 0, "normalized_score": 40.0}
    rows, idm = [full], []
    for seed, (error, score) in enumerate([(0.1, 40.0), (0.2, 30.0), (0.3, 20.0), (0.4, 24.0)]):
        rows.append(labels | {"variant": "2%", "mode": "semi-supervised", "seed": seed,
                              "normalized_score": score})  # fmt: skip
        idm.append(labels | {"variant": "2%", "seed": seed, "hidden_relative_mse": error})
    line = share_error_table(rows, idm, least=4).splitlines()[-1]
    # ranks of error 1 2 3 4 against share 4 3 1 2: rho = 1 - 6 * (9 + 1 + 4 + 4) / 60 = -0.8
    assert line == "| Hopper-v5 | medium-expert | td3bc | 4 | -0.80 | 0.100-0.400 | 50%-100% |"
    assert share_error_table(rows, idm, least=5).count("| Hopper-v5") == 0


@pytest.mark.skipif(not CORPUS.exists(), reason="needs ../shared/corpus")
def test_cells_can_be_chosen_by_name_patterns(tmp_path, monkeypatch):
    monkeypatch.setattr(ss_headline, "episode_table", episode_table)
    found = ss_headline.cells(CORPUS, [3], 100, 10, 1, stores=tmp_path)
    patterns = "Hopper-v5-medium-replay-td3bc-10pct-*, *-all-actions-IDM-seed3"
    chosen = ss_headline.chosen_cells(found, patterns)
    assert sorted(c.name for c in chosen) == sorted(
        ["Hopper-v5-medium-replay-td3bc-10pct-seed3"]
        + [f"{s}-{a}-all-actions-IDM-seed3" for s, a in
           [("Hopper-v5-medium-replay", "td3bc"), ("Hopper-v5-medium-replay", "dt"),
            ("Hopper-v5-medium-expert", "td3bc"), ("HalfCheetah-v5-medium-replay", "td3bc"),
            ("HalfCheetah-v5-medium-replay", "dt"), ("HalfCheetah-v5-medium-expert", "td3bc")]]
    )  # fmt: skip
    with pytest.raises(Exception, match="matches no cell"):
        ss_headline.chosen_cells(found, "Hopper-v6-*")
