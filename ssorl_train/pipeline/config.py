"""The pipeline's config: its schema text, defaults, TOML reading and validation.

Validation fills in every default, so a key left out hashes the same as the same
value written down (the stage runner's stamps hash these sections), and fails on
unknown or renamed keys before any stage runs.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ssorl_data.errors import InvalidArgumentError
from ssorl_data.expect import Expect, check_values
from ssorl_data.names import check_name
from ssorl_train.errors import PipelineConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the 3.10 backport of the same module
    import tomli as tomllib

SPLIT_NAME = "pipeline"  # the split the pipeline writes into its store
# With [idm] episodes = "all", the IDM trains on this split of every episode with recorded
# actions, the ones SPLIT_NAME hides included (an upper bound; see IDM_EPISODES).
ALL_SPLIT = "pipeline-all"
# [idm] episodes: which episodes' actions the IDM learns from. "visible": the split's, as a
# user without the hidden actions has; "all": every recorded action, the hidden ones too, an
# upper bound for what a better IDM could give (evaluation only: a real corpus has no hidden
# actions to read).
IDM_EPISODES = ("visible", "all")
# The agents train, and the report's rows come, in this order: the fully labelled
# reference, the semi-supervised agent, then the labelled-only baseline it should beat.
DEFAULT_MODES = ("full", "semi-supervised", "labelled-only")
SCHEMA = """\
Keys left out take the defaults shown.
[data]      source = "PATH" or ["PATH", ...] (D4RL HDF5 / NPZ / Minari, imported in order
            into one store, e.g. medium + expert; relative to the config)
            or env_id = "Hopper-v5", steps = 20000, policy = "random" | "hopper-balance" |
            "sb3:PATH" (a stable-baselines3 .zip, weights only), seed = 0 (collected;
            "hopper-balance" mixes random and noisy balancing episodes)
[split]     labelled_fraction = 0.1, quantile = 0.5 (labelled episodes drawn from the lowest
            quantile of returns; 1.0: a random split), seed = 0; labelled_steps = N instead
            of the fraction (a budget in steps); select = "random" | "coverage" | "farthest"
            (how the budget is spent on the pool: `ssorl data split --select`)
[idm]       any IdmTrainConfig field (defaults: `ssorl idm train --help`): max_steps (the
            budget), hidden, members, k, delta, nll_beta, lr, batch_size, eval_every, ...;
            episodes = "visible" | "all" (the IDM learns from the split's visible
            episodes, or, as an upper bound for evaluation, from every recorded action,
            the hidden ones included)
[relabel]   name = "idm" (relabels/NAME in the store), batch_size = 8192
[train]     algo = "td3bc" | "iql" | "cql" | "dt", modes = ["full", "semi-supervised",
            "labelled-only"], steps = 10000, seeds = [0], overrides = {alpha = 2.5},
            drop_uncertain = 0.0, weight_beta = B (semi-supervised: proxy steps drawn with
            weight exp(-B u / median u); absent: uniform), log_every = 1000,
            precision = "fp32" | "bf16", compile = false (`ssorl train --precision/--compile`)
[eval]      eval_episodes = 10, eval_every = 0 (steps between evaluations; 0: at the end only)
"""

DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {"steps": 20_000, "policy": "random", "seed": 0},  # plus source or env_id
    "split": {"labelled_fraction": 0.1, "quantile": 0.5, "seed": 0},
    "idm": {},  # any IdmTrainConfig field; the rest are its defaults
    "relabel": {"name": "idm", "batch_size": 8192},
    "train": {
        "algo": "td3bc",
        "modes": list(DEFAULT_MODES),
        "steps": 10_000,
        "seeds": [0],
        "overrides": {},
        "drop_uncertain": 0.0,
        "log_every": 1000,
    },  # plus the LATER keys
    "eval": {"eval_episodes": 10, "eval_every": 0},  # the names of LoopConfig and `ssorl train`
}
# keys added after pipelines were first stamped, per section, with their defaults (None: no
# default, absent means off): kept only where given and not the default, so a config that
# leaves them out keeps its stamps' hashes (its agents are not retrained) and one that
# writes the default down hashes the same. [split] labelled_steps, given, replaces
# labelled_fraction as the budget; [train] weight_beta absent means no weights.
LATER: dict[str, dict[str, Any]] = {
    "split": {"select": "random", "labelled_steps": None},
    "idm": {"episodes": "visible"},
    "train": {"precision": "fp32", "compile": False, "weight_beta": None},
}
# the type (and range) of every key but [idm]'s (IdmTrainConfig's own, see `key_types`);
# keys that are fields of LoopConfig or of the dataset view take their limits from there
TYPES: dict[str, dict[str, Expect]] = {
    "data": {
        "source": Expect(str, one_or_many=True),
        "env_id": Expect(str),
        "steps": Expect(int, min=1),
        "policy": Expect(str),
        "seed": Expect(int, min=0),
    },
    "split": {
        "labelled_fraction": Expect(float, min=0, max=1),
        "quantile": Expect(float, min=0, max=1, min_open=True),
        "seed": Expect(int, min=0),
        "labelled_steps": Expect(int, min=1),
        "select": Expect(str),
    },
    "relabel": {"name": Expect(str), "batch_size": Expect(int, min=1)},
    "train": {"algo": Expect(str), "modes": Expect(str, many=True), "overrides": Expect(dict),
              "seeds": Expect(int, min=0, many=True), "precision": Expect(str),
              "compile": Expect(bool)},
    "eval": {},
}  # fmt: skip


def key_types() -> dict[str, dict[str, Expect]]:
    """TYPES completed with the tables of the configs the sections feed (they import torch,
    so only when validating): [idm] IdmTrainConfig's fields, [train] steps, log_every,
    drop_uncertain and weight_beta, [eval] eval_every and eval_episodes."""
    from ssorl_data.idm.training import IDM_FIELDS
    from ssorl_train.dataset import VIEW_ARGS
    from ssorl_train.loop import LOOP_FIELDS

    loop = {key: LOOP_FIELDS[key] for key in ("steps", "log_every")}
    return TYPES | {
        "idm": IDM_FIELDS | {"episodes": Expect(str)},
        "train": TYPES["train"] | loop | VIEW_ARGS,
        "eval": {key: LOOP_FIELDS[key] for key in ("eval_every", "eval_episodes")},
    }


def check_types(where: str, section: str, values: dict[str, Any], types: dict[str, Expect]) -> None:
    """PipelineConfigError naming the section, key, expected type and the value got."""
    try:
        check_values(f"{where}: [{section}]", values, types)
    except InvalidArgumentError as error:
        raise PipelineConfigError(str(error)) from None


# (section, old key) -> new key: a config that still uses an old key fails with the new name
RENAMED_KEYS: dict[tuple[str, str], str] = {
    ("eval", "every"): "eval_every",
    ("eval", "episodes"): "eval_episodes",
}


@dataclass(frozen=True)
class PipelineConfig:
    """A parsed, validated pipeline config; each field is one TOML section."""

    data: dict[str, Any]
    split: dict[str, Any]
    idm: dict[str, Any]
    relabel: dict[str, Any]
    train: dict[str, Any]
    eval: dict[str, Any]

    @classmethod
    def from_toml(cls, path: str | Path) -> PipelineConfig:
        """Read and validate a TOML config; relative data paths are taken from its folder."""
        raw = read_toml(path)
        if "sweep" in raw:
            raise PipelineConfigError(
                f"{path}: has a [sweep] section: run it with `ssorl run --sweep` "
                "(ssorl_train.sweep.SweepConfig), or remove the section."
            )
        return cls.from_dict(raw, where=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "config") -> PipelineConfig:
        """Validate sections and keys and fill in defaults, so typos fail before any work and
        a default left out hashes the same as one written down."""
        from ssorl_data.idm.training import IdmTrainConfig
        from ssorl_train.algos import make_config
        from ssorl_train.dataset import MODES  # these import torch: only when validating

        unknown = set(raw) - set(DEFAULTS)
        if unknown:
            raise PipelineConfigError(
                f"{where}: unknown section(s) {sorted(unknown)!r}. Expected sections:\n{SCHEMA}"
            )
        sections = {}
        types = key_types()
        for name, defaults in DEFAULTS.items():
            given = dict(raw.get(name, {}))
            known = set(defaults) | {
                "data": {"source", "env_id"},
                "split": set(LATER["split"]),
                "train": set(LATER["train"]),
                "idm": set(IdmTrainConfig.__dataclass_fields__) | set(LATER["idm"]),
            }.get(name, set())
            check_keys(where, name, given, known)
            check_types(where, name, given, types[name])
            sections[name] = defaults | given
        _check_data(where, sections["data"], raw.get("data", {}))
        _check_split(where, sections["split"], raw.get("split", {}))
        if sections["idm"].get("episodes", LATER["idm"]["episodes"]) not in IDM_EPISODES:
            raise PipelineConfigError(
                f"{where}: [idm] episodes must be one of {list(IDM_EPISODES)!r}. "
                f"Got {sections['idm']['episodes']!r}."
            )
        check_name(sections["relabel"]["name"], "relabel run")
        bad_modes = set(sections["train"]["modes"]) - set(MODES)
        if bad_modes:
            raise PipelineConfigError(
                f"{where}: [train] modes must be among {list(DEFAULT_MODES)!r}. "
                f"Got {sorted(bad_modes)!r}."
            )
        make_config(sections["train"]["algo"], sections["train"]["overrides"], parse_strings=False)
        _check_precision(where, sections["train"])
        for name, later in LATER.items():
            for key, default in later.items():
                if key in sections[name] and sections[name][key] == default:
                    del sections[name][key]
        idm = dict(sections["idm"])
        pipeline_keys = {key: idm.pop(key) for key in LATER["idm"] if key in idm}
        if "hidden" in idm:
            idm["hidden"] = tuple(idm["hidden"])
        sections["idm"] = asdict(IdmTrainConfig(**idm)) | pipeline_keys
        return cls(**sections)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_precision(where: str, train: dict[str, Any]) -> None:
    """A precision the trainers know."""
    from ssorl_train.common import PRECISIONS

    if train.get("precision", LATER["train"]["precision"]) not in PRECISIONS:
        raise PipelineConfigError(
            f"{where}: [train] precision must be one of {list(PRECISIONS)!r}. "
            f"Got {train['precision']!r}."
        )


def _check_split(where: str, split: dict[str, Any], given: dict[str, Any]) -> None:
    """One budget (labelled_steps drops the default fraction) and a known selection."""
    from ssorl_data.episode_selection import SELECTIONS

    if "labelled_steps" in split:
        if "labelled_fraction" in given:
            raise PipelineConfigError(
                f"{where}: [split] has both labelled_fraction and labelled_steps: give one "
                "labelling budget, a fraction of the episodes or a number of steps."
            )
        del split["labelled_fraction"]
    if split.get("select", LATER["split"]["select"]) not in SELECTIONS:
        raise PipelineConfigError(
            f"{where}: [split] select must be one of {list(SELECTIONS)!r}. Got {split['select']!r}."
        )


def read_toml(path: str | Path) -> dict[str, Any]:
    """A config file's sections, with `[data] source` paths taken from the config's folder."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise PipelineConfigError(f"{path}: cannot read the config: {error}.") from None
    data = dict(raw.get("data", {}))
    if "source" in data:
        data["source"] = [
            str((path.parent / s).resolve()) if isinstance(s, str) else s for s in sources(data)
        ]
    sb3 = sb3_spec(data)
    if sb3:  # a policy file, also taken from the config's folder
        algo, policy = sb3
        data["policy"] = ":".join(["sb3", *([algo] if algo else []), str(path.parent / policy)])
    return raw | {"data": data}


def check_keys(where: str, section: str, values: dict[str, Any], known: set[str]) -> None:
    """Fail on a renamed key (naming the new one), then on any other unknown key."""
    for key in values:
        new = RENAMED_KEYS.get((section, key))
        if new is not None:
            raise PipelineConfigError(
                f"{where}: [{section}] {key} was renamed to {new}: write `{new} = "
                f"{values[key]!r}` in [{section}]."
            )
    unknown = set(values) - known
    if unknown:
        raise PipelineConfigError(
            f"{where}: unknown key(s) {sorted(unknown)!r} in [{section}]. Known: {sorted(known)!r}."
        )


def sb3_spec(section: dict[str, Any]) -> tuple[str | None, str] | None:
    """(algorithm or None, path) of a `policy = "sb3:[ALGO:]PATH"`; None for other policies."""
    if not str(section.get("policy")).startswith("sb3:"):
        return None
    from ssorl_data.sb3_policy import parse_sb3_spec  # imports torch: only when needed

    return parse_sb3_spec(section["policy"])


def sources(section: dict[str, Any]) -> list[Any]:
    """`[data] source` as a list: one path, or several imported in order into one store."""
    source = section.get("source", [])
    return source if isinstance(source, list) else [source]


def _check_data(where: str, data: dict[str, Any], given: dict[str, Any]) -> None:
    """Exactly one of source and env_id; a known collection policy for the env."""
    from ssorl_data.collect import POLICIES

    if ("source" in data) == ("env_id" in data):
        raise PipelineConfigError(
            f"{where}: [data] needs exactly one of `source` (a file to import) or `env_id` "
            f"(an env to collect from). Got {sorted(given)!r}."
        )
    if "source" in data:
        data["source"] = sources(data)  # one spelling, so both hash the same
        if not data["source"] or not all(isinstance(s, str) for s in data["source"]):
            raise PipelineConfigError(
                f"{where}: [data] source must be a path or a non-empty list of paths. "
                f"Got {given['source']!r}."
            )
    if data["policy"] not in POLICIES and not str(data["policy"]).startswith("sb3:"):
        raise PipelineConfigError(
            f"{where}: [data] policy must be one of {sorted(POLICIES)!r} or 'sb3:PATH'. "
            f"Got {data['policy']!r}."
        )
    if data["policy"] == "hopper-balance" and not str(data.get("env_id")).startswith("Hopper"):
        raise PipelineConfigError(
            f"{where}: [data] policy 'hopper-balance' controls Hopper only. Got env_id "
            f"{data.get('env_id')!r}: use policy = 'random' or a Hopper env."
        )
