"""Every JSON file the product writes, made invalid and made well-formed but wrong: the
command that reads it refuses it by name (exit 2, no traceback), `ssorl data verify` reports
it, or (files that are only a cache or a record) the rerun redoes the work and finishes equal
to the uninterrupted run. Damaged chunks: tests/data/test_integrity.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.checks import same_run
from tests.faults.conftest import TRAIN, Reference, copy
from tests.faults.harness import ok, refused, ssorl, tally

INVALID = "{ not json"


def _wrong_store_value(relative: str, document: dict) -> None:
    """A well-formed zarr.json that lies: sizes, identities or the node's kind."""
    attrs = document.setdefault("attributes", {})
    if document["node_type"] == "array":
        document["shape"][0] //= 2  # smaller than what the store committed
    elif relative == "zarr.json":
        attrs["n_episodes"] = -1
    elif relative.startswith("splits/") and relative.count("/") == 2:
        attrs["visible_sha256"] = "0" * 64  # not the visible episodes it holds
    elif relative.startswith("relabels/") and relative.count("/") == 2:
        attrs["n_steps"] += 7  # more steps than the store has
    else:
        document["node_type"] = "array"  # a group's file that says it is an array


# Groups that only hold other nodes (no attributes): zarr opens the nodes under them by path,
# so training reads none of these files; verify is what must report them.
CONTAINERS = {f"{group}/zarr.json" for group in ("episodes", "steps", "splits", "relabels")}


def _store_files(ref: Reference) -> list[str]:
    return sorted(str(p.relative_to(ref.relabelled)) for p in ref.relabelled.rglob("zarr.json"))


@pytest.mark.parametrize("kind", ["invalid", "wrong"])
def test_every_zarr_json_of_a_store_damaged_is_reported_by_verify(kind, ref, tmp_path) -> None:
    for i, relative in enumerate(_store_files(ref)):
        store = copy(ref.relabelled, tmp_path / str(i))
        file = store / relative
        if kind == "invalid":
            file.write_text(INVALID)
        else:
            document = json.loads(file.read_text())
            _wrong_store_value(relative, document)
            file.write_text(json.dumps(document))
        what = f"store {relative.rsplit('/', 1)[0] if '/' in relative else '.'}/zarr.json ({kind})"
        tally["store zarr.json"]["tried"] += 1
        ran = ssorl(["data", "verify", store, "--quiet"])  # ssorl() fails on a traceback
        assert ran.exit_code in (1, 2), (what, ran.output)
        node = file.parent.relative_to(store)  # named, or its group and its own name
        text = ran.output
        assert str(node) in text or (str(node.parent) in text and node.name in text), (what, text)
        if relative not in CONTAINERS:  # training reads this file's content: it must refuse
            ran = ssorl(["train", store, "--out", tmp_path / f"run{i}", *TRAIN, "--steps", "2"])
            assert ran.exit_code == 2 and "Error: " in ran.output, (what, ran.output)
        tally["store zarr.json"]["survived"] += 1


IDM_DAMAGE: dict[str, tuple[str, Callable[[dict | list], object]]] = {
    "config.json": ("obs_std", lambda d: d | {"obs_std": [0.0] * len(d["obs_std"])}),
    "provenance.json": ("expected a JSON object", lambda d: [d]),
}


@pytest.mark.parametrize("name", list(IDM_DAMAGE))
def test_a_damaged_idm_file_is_refused_by_relabel_naming_it(name, ref, tmp_path) -> None:
    needle, wrong = IDM_DAMAGE[name]
    for kind in ("invalid", "wrong"):
        idm = copy(ref.idm, tmp_path / f"idm-{kind}")
        file = idm / name
        text = INVALID if kind == "invalid" else json.dumps(wrong(json.loads(file.read_text())))
        file.write_text(text)
        tally[f"IDM {name}"]["tried"] += 1
        store = copy(ref.split, tmp_path / f"store-{kind}")
        refused(["relabel", store, "--idm", idm, "--name", "r", "--quiet"], str(file),
                "unreadable JSON" if kind == "invalid" else needle)  # fmt: skip
        tally[f"IDM {name}"]["survived"] += 1


def _finished_run(ref: Reference, to: Path) -> Path:
    return copy(ref.run, to)


def test_a_damaged_checkpoint_json_falls_back_to_the_previous_pair_or_is_refused(
    ref, tmp_path
) -> None:
    args = lambda run: ["train", ref.relabelled, "--out", run, *TRAIN, "--resume"]  # noqa: E731
    for kind, damage in (("invalid", lambda d: INVALID), ("wrong", lambda d: json.dumps(
            d | {"checkpoint_id": "0" * 32}))):  # fmt: skip
        run = _finished_run(ref, tmp_path / kind)
        file = run / "checkpoint.json"
        file.write_text(damage(json.loads(file.read_text())))
        tally["train checkpoint.json"]["tried"] += 1
        ok(args(run))  # the kept step-150 pair resumes, and the rerun ends bit-identical
        same_run(run, ref.run)
        prev = run / "checkpoint.prev.json"
        for each in (run / "checkpoint.json", prev):
            each.write_text(damage(json.loads(prev.read_text())))
        refused(args(run), str(run / "checkpoint.json"), "--overwrite")  # both damaged
        refused(["eval", run, "--episodes", "1"], str(run / "checkpoint.json"))
        tally["train checkpoint.json"]["survived"] += 1


@pytest.mark.parametrize("name", ["summary.json", "config.json"])
def test_a_damaged_run_record_is_not_trusted_by_resume_or_eval(name, ref, tmp_path) -> None:
    """summary.json and config.json record a run; no command reads config.json, and a resume
    of the finished run that finds summary.json damaged redoes the final evaluation and
    writes it again."""
    want = json.loads((ref.run / "summary.json").read_text())
    for kind, text in (("invalid", INVALID), ("wrong", json.dumps(["not", "a", "record"]))):
        run = _finished_run(ref, tmp_path / kind)
        (run / name).write_text(text)
        tally[f"train {name}"]["tried"] += 1
        ok(["train", ref.relabelled, "--out", run, *TRAIN, "--resume"])
        summary = json.loads((run / "summary.json").read_text())
        assert summary["final_eval"] == want["final_eval"] and summary["steps"] == want["steps"]
        same_run(run, ref.run)
        assert '"returns": [' in ok(["eval", run, "--episodes", "1", "--json"])
        tally[f"train {name}"]["survived"] += 1


@pytest.mark.slow
def test_a_damaged_pipeline_stamp_reruns_its_stage_to_the_same_result(sweep_ref, tmp_path):
    """A stamp only says a stage is done: one that is unreadable or not a stamp counts as
    absent, so `ssorl run` redoes that stage (and those after it) and ends equal."""
    config, summary = sweep_ref
    done = tmp_path / "done"
    ok(["run", config, "--sweep", "--out", done, "--quiet"])
    cell = sorted((done / "cells").iterdir())[0].name
    for stamp in sorted((done / "cells" / cell / "stamps").glob("*.json")):
        for kind, text in (("invalid", INVALID), ("wrong", json.dumps({"hash": 0}))):
            out = copy(done, tmp_path / f"{stamp.stem}-{kind}")
            (out / "cells" / cell / "stamps" / stamp.name).write_text(text)
            tally["pipeline stamps/*.json"]["tried"] += 1
            ok(["run", config, "--sweep", "--out", out, "--quiet"])
            assert json.loads((out / "sweep.json").read_text()) == summary, stamp.name
            tally["pipeline stamps/*.json"]["survived"] += 1
