"""The headline experiment's cells and its README table (the runs themselves take hours)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import ss_headline
from benchmarks.tables import headline_table

CORPUS = Path(__file__).parents[3] / "shared" / "corpus"


@pytest.mark.skipif(not CORPUS.exists(), reason="needs ../shared/corpus")
def test_cells_cover_the_protocol_seed_by_seed():
    cells = ss_headline.cells(
        CORPUS, [0, 1, 2], td3bc_steps=20_000, dt_steps=1_000, eval_episodes=10
    )
    assert len(cells) == 3 * (4 + 2)  # seeds x (td3bc on 4 sets + dt on 2 medium-replay sets)
    assert [c.labels["seed"] for c in cells] == [0] * 6 + [1] * 6 + [2] * 6
    assert len({c.name for c in cells}) == len(cells)
    for cell in cells:
        config, labels = cell.config, cell.labels
        files = [Path(s).name for s in config.data["source"]]
        expected = {"medium-replay": ["medium-replay.hdf5"],
                    "medium-expert": ["medium.hdf5", "expert.hdf5"]}[labels["dataset"]]  # fmt: skip
        assert files == expected and labels["env"] in config.data["source"][0]
        assert (config.split["labelled_fraction"], config.split["quantile"]) == (0.1, 0.5)
        assert config.split["seed"] == config.idm["seed"] == labels["seed"]
        assert config.train["modes"] == ["full", "semi-supervised", "labelled-only"]
        steps = {"td3bc": 20_000, "dt": 1_000}[labels["algo"]]
        assert config.train["steps"] == steps
        if labels["algo"] == "dt":
            assert labels["dataset"] == "medium-replay"
            assert config.train["overrides"] == {"warmup_steps": 100}


def test_missing_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(Exception, match="corpus files not found"):
        ss_headline.cells(tmp_path, [0], 10, 10, 1)


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
