"""Staleness of derived data: what a split or relabel run covers, against the store now.

A split covers the episodes the store had when it was made, a relabel run the
steps. `ssorl data import --append` adds more; from then on they are stale:
`info` and `verify` say "stale (covers N of M ...)", training refuses them, and
`ssorl data split --extend` / `ssorl relabel` extend them. What is derived from a
store outside it (IDMs, agents) records `store_identity` and `split_identity`, so
that what it was made from can be told later.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssorl_data import layout
from ssorl_data.errors import StaleDataError
from ssorl_data.store import Split, TrajectoryStore
from ssorl_data.store.splits import split_attrs, visible_sha256

__all__ = [
    "Coverage",
    "check_relabel_fresh",
    "check_split_fresh",
    "extend_command",
    "relabel_coverage",
    "relabel_identity",
    "split_coverage",
    "split_identity",
    "store_coverage",
    "store_identity",
]


@dataclass(frozen=True)
class Coverage:
    """What one split or relabel run covers of the store's committed episodes or steps."""

    kind: str  # "split" or "relabel run"
    name: str
    status: str  # the group's own status: complete, partial, writing
    covered: int | None  # episodes (split) or steps (relabel run) it covers; None: unknown
    total: int  # the store's committed episodes or steps
    unit: str  # "episodes" or "steps"
    note: str | None = None  # why `covered` is unknown or where it was taken from

    @property
    def stale(self) -> bool:
        """Covers fewer than the store has (made before an append)."""
        return self.covered is not None and self.covered < self.total

    def describe(self) -> str:
        """One phrase: "complete", "stale (covers 974 of 1,515 episodes)", "partial", ..."""
        if self.covered is None:
            return f"{self.status}, coverage unknown ({self.note})"
        if self.covered > self.total:
            return f"invalid (covers {self.covered:,} of {self.total:,} {self.unit})"
        if self.stale:
            stale = f"stale (covers {self.covered:,} of {self.total:,} {self.unit})"
            return stale if self.status == layout.STATUS_COMPLETE else f"{self.status}, {stale}"
        return self.status

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "status": self.status,
            "covered": self.covered,
            "total": self.total,
            "unit": self.unit,
            "stale": self.stale,
            "description": self.describe(),
            "note": self.note,
        }


def split_coverage(store: TrajectoryStore, name: str) -> Coverage:
    """The episodes split `name` covers: its `n_episodes` attribute, or else (splits of older
    stores) the length of its `visible` array, which was made over the episodes of then."""
    attrs, stored = split_attrs(store, name)
    status = str(attrs.get("status"))
    recorded = attrs.get("n_episodes")
    if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded >= 0:
        covered, note = recorded, None
    else:
        covered, note = stored, "n_episodes not recorded; taken from the length of visible"
    return Coverage("split", name, status, covered, store.n_episodes, "episodes", note)


def relabel_coverage(store: TrajectoryStore, name: str) -> Coverage:
    """The steps relabel run `name` covers: its `n_steps` attribute."""
    try:
        run = store.relabel_run(name)
    except (KeyError, TypeError, ValueError) as error:
        attrs_note = f"unreadable attributes: {error!r}"
        return Coverage("relabel run", name, "unknown", None, store.n_steps, "steps", attrs_note)
    return Coverage("relabel run", name, run.status, run.n_steps, store.n_steps, "steps")


def store_coverage(store: TrajectoryStore) -> list[Coverage]:
    """Coverage of every split, then every relabel run, of the store."""
    return [split_coverage(store, name) for name in store.list_splits()] + [
        relabel_coverage(store, name) for name in store.list_relabels()
    ]


def store_identity(store: TrajectoryStore) -> dict[str, Any]:
    """Which store, at which committed sizes: recorded by what is derived from it."""
    return {
        "path": str(Path(store.path).resolve()),
        "created_at": store.metadata.created_at,
        "n_episodes": store.n_episodes,
        "n_steps": store.n_steps,
    }


def split_identity(split: Split) -> dict[str, Any]:
    """Which split, with which visible episodes, over how many episodes (the sha256 is
    computed from the array for splits written before it was recorded)."""
    covered = split.attrs.get("n_episodes")
    return {
        "name": split.name,
        "n_episodes": covered if isinstance(covered, int) else None,
        "visible_sha256": split.attrs.get("visible_sha256") or visible_sha256(split.visible),
    }


def check_split_fresh(store: TrajectoryStore, split: Split, purpose: str) -> None:
    """Refuse a split that covers fewer episodes than the store, naming the commands that
    extend or remake it. `purpose` completes "... so {purpose} would ..."."""
    coverage = split_coverage(store, split.name)
    if not coverage.stale:
        return
    n, m = coverage.covered, coverage.total
    n_visible = int(split.visible.sum())
    raise StaleDataError(
        f"{store.path}/{layout.split_path(split.name)}: the split is stale: it covers {n:,} "
        f"of the store's {m:,} episodes (episodes {n:,} to {m - 1:,} were appended after it "
        f"was made), so {purpose} would treat every appended episode as action-free without "
        f"saying so. Extend it with `{extend_command(store, coverage)}` (the appended "
        f"episodes stay action-free: {n_visible:,} of {m:,} episodes "
        f"visible, {n_visible / m:.1%}), or make it again over every episode with "
        f"`{remake_split_command(store, split.name, split.attrs)}` (then train the IDM and "
        "relabel again)."
    )


def check_relabel_fresh(store: TrajectoryStore, name: str, split: Split | None = None) -> None:
    """Refuse a relabel run that covers fewer steps than the store, naming the command that
    extends it; and one whose IDM was trained on `split` of this store as it was before it
    was made again with other visible episodes (the IDM may have seen actions the split
    now hides). Runs and IDMs from before identities were recorded pass the second check."""
    coverage = relabel_coverage(store, name)
    where = f"{store.path}/{layout.relabel_path(name)}"
    if coverage.stale:
        raise StaleDataError(
            f"{where}: the relabel run is stale: it covers {coverage.covered:,} of the store's "
            f"{coverage.total:,} steps, so the appended steps have no proxy action. Extend it "
            f"with `{extend_command(store, coverage)}` (it computes only the new chunks), or "
            "relabel again with --overwrite."
        )
    trained_on = store.relabel_run(name).attrs.get("idm_provenance")
    if split is None or not isinstance(trained_on, dict):
        return
    idm_split, idm_store = trained_on.get("split_identity"), trained_on.get("store_identity")
    if not (isinstance(idm_split, dict) and isinstance(idm_store, dict)):
        return
    if (
        idm_store.get("path") != store_identity(store)["path"]
        or idm_split.get("name") != split.name
    ):
        return
    if idm_split.get("visible_sha256") != split_identity(split)["visible_sha256"]:
        raise StaleDataError(
            f"{where}: the run comes from an IDM trained on split {split.name!r} before the "
            "split was made again with other visible episodes, so its proxy actions may come "
            "from actions the split now hides. Train the IDM again (`ssorl idm train "
            f"{store.path} --split {split.name} --out DIR`) and relabel with --overwrite."
        )


def relabel_identity(store: TrajectoryStore, name: str) -> dict[str, Any]:
    """Which relabel run, made by which IDM from which split, over how many steps."""
    attrs = store.relabel_run(name).attrs
    trained_on = attrs.get("idm_provenance")
    return {
        "name": name,
        "n_steps": attrs.get("n_steps"),
        "idm_hash": attrs.get("idm_hash"),
        "idm_split": trained_on.get("split_identity") if isinstance(trained_on, dict) else None,
    }


def extend_command(store: TrajectoryStore, coverage: Coverage) -> str:
    """The command that extends a stale split or relabel run over the appended data."""
    if coverage.kind == "split":
        return f"ssorl data split {store.path} --name {coverage.name} --extend"
    idm = store.relabel_run(coverage.name).attrs.get("idm_checkpoint") or "IDM_DIR"
    return f"ssorl relabel {store.path} --idm {idm} --name {coverage.name}"


def remake_split_command(store: TrajectoryStore, name: str, attrs: dict[str, Any]) -> str:
    """The `ssorl data split` command that makes split `name` again with its protocol, over
    every episode of the store now."""
    method = attrs.get("method")
    if method in ("random", "return_quantile", "coverage"):
        budget = "labelled-steps" if "labelled_steps" in attrs else "labelled-fraction"
        options = f"--{budget} {attrs.get(budget.replace('-', '_'))} --seed {attrs.get('seed')}"
        if attrs.get("quantile") is not None:
            options += f" --quantile {attrs.get('quantile')}"
        if method == "coverage":
            options += " --select coverage"
    elif method == "episodes":
        options = "--episodes FILE"
    else:
        options = "--labelled-fraction F"
    return f"ssorl data split {store.path} --name {name} {options} --overwrite"
