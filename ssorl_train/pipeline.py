"""The whole pipeline in one call: data, split, IDM, relabel, agents, report.

Each stage writes its output under one run directory and a stamp
`stamps/<stage>.json` holding a hash of its config section and of the stamps
of the stages it reads. A stage whose stamp matches is skipped, so a killed or
edited run redoes only what changed. Stages only compose the public functions
of ssorl_data and ssorl_train; nothing here re-implements them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ssorl_data import layout
from ssorl_data.names import check_name
from ssorl_train.errors import PipelineConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the 3.10 backport of the same module
    import tomli as tomllib

MODES = ("full", "semi-supervised", "labelled-only")
SPLIT_NAME = "pipeline"  # the split the pipeline writes into its store
SCHEMA = """\
Keys left out take the defaults shown.
[data]      source = "PATH" or ["PATH", ...] (D4RL HDF5 / NPZ / Minari, imported in order
            into one store, e.g. medium + expert; relative to the config)
            or env_id = "Hopper-v5", steps = 20000, policy = "random" | "hopper-balance" |
            "sb3:PATH" (a stable-baselines3 .zip, weights only), seed = 0 (collected;
            "hopper-balance" mixes random and noisy balancing episodes)
[split]     labelled_fraction = 0.1, quantile = 0.5 (labelled episodes drawn from the lowest
            quantile of returns; 1.0: a random split), seed = 0
[idm]       any IdmTrainConfig field (defaults: `ssorl idm train --help`): max_steps (the
            budget), hidden = [1024, 1024], members, k, lr, batch_size, eval_every, ...
[relabel]   name = "idm" (relabels/NAME in the store), batch_size = 8192
[train]     algo = "td3bc" | "iql" | "cql" | "dt", modes = ["full", "semi-supervised",
            "labelled-only"], steps = 10000, seeds = [0], overrides = {alpha = 2.5},
            drop_uncertain = 0.0, log_every = 1000
[eval]      episodes = 10, every = 0 (steps between evaluations; 0: at the end only)
"""

DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {"steps": 20_000, "policy": "random", "seed": 0},  # plus source or env_id
    "split": {"labelled_fraction": 0.1, "quantile": 0.5, "seed": 0},
    "idm": {"hidden": (1024, 1024)},  # plus any other IdmTrainConfig field
    "relabel": {"name": "idm", "batch_size": 8192},
    "train": {
        "algo": "td3bc",
        "modes": list(MODES),
        "steps": 10_000,
        "seeds": [0],
        "overrides": {},
        "drop_uncertain": 0.0,
        "log_every": 1000,
    },
    "eval": {"episodes": 10, "every": 0},
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

        unknown = set(raw) - set(DEFAULTS)
        if unknown:
            raise PipelineConfigError(
                f"{where}: unknown section(s) {sorted(unknown)!r}. Expected sections:\n{SCHEMA}"
            )
        sections = {}
        for name, defaults in DEFAULTS.items():
            given = dict(raw.get(name, {}))
            known = set(defaults) | {
                "data": {"source", "env_id"},
                "idm": set(IdmTrainConfig.__dataclass_fields__),
            }.get(name, set())
            _keys(where, name, given, known)
            sections[name] = defaults | given
        data = sections["data"]
        if ("source" in data) == ("env_id" in data):
            raise PipelineConfigError(
                f"{where}: [data] needs exactly one of `source` (a file to import) or `env_id` "
                f"(an env to collect from). Got {sorted(raw.get('data', {}))!r}."
            )
        if "source" in data:
            data["source"] = _sources(data)  # one spelling, so both hash the same
            if not data["source"] or not all(isinstance(s, str) for s in data["source"]):
                raise PipelineConfigError(
                    f"{where}: [data] source must be a path or a non-empty list of paths. "
                    f"Got {raw['data']['source']!r}."
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
        check_name(sections["relabel"]["name"], "relabel run")
        bad_modes = set(sections["train"]["modes"]) - set(MODES)
        if bad_modes:
            raise PipelineConfigError(
                f"{where}: [train] modes must be among {list(MODES)!r}. Got {sorted(bad_modes)!r}."
            )
        make_config(sections["train"]["algo"], sections["train"]["overrides"])
        idm = sections["idm"] | {"hidden": tuple(sections["idm"]["hidden"])}
        sections["idm"] = asdict(IdmTrainConfig(**idm))
        return cls(**sections)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
            str((path.parent / s).resolve()) if isinstance(s, str) else s for s in _sources(data)
        ]
    sb3 = _sb3_spec(data)
    if sb3:  # a policy file, also taken from the config's folder
        algo, policy = sb3
        data["policy"] = ":".join(["sb3", *([algo] if algo else []), str(path.parent / policy)])
    return raw | {"data": data}


def _sb3_spec(section: dict[str, Any]) -> tuple[str | None, str] | None:
    """(algorithm or None, path) of a `policy = "sb3:[ALGO:]PATH"`; None for other policies."""
    if not str(section.get("policy")).startswith("sb3:"):
        return None
    from ssorl_data.sb3_policy import parse_sb3_spec  # imports torch: only when needed

    return parse_sb3_spec(section["policy"])


def _sources(section: dict[str, Any]) -> list[Any]:
    """`[data] source` as a list: one path, or several imported in order into one store."""
    source = section.get("source", [])
    return source if isinstance(source, list) else [source]


def _keys(where: str, section: str, values: dict[str, Any], known: set[str]) -> None:
    unknown = set(values) - known
    if unknown:
        raise PipelineConfigError(
            f"{where}: unknown key(s) {sorted(unknown)!r} in [{section}]. Known: {sorted(known)!r}."
        )


# ---------------------------------------------------------------- collection policies
def _hopper_balance(action_space: Any, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """PD control of Hopper's joints towards standing, mixed with uniform random actions in
    a share that grows from 0 (the first env) to 1 (the last env).

    Episodes range from falling at once to standing for long, so returns vary
    widely: a cheap stand-in for the mixed-quality data of real corpora.
    """
    rng = np.random.default_rng(seed)
    low, high = action_space.low, action_space.high

    def act(obs: np.ndarray) -> np.ndarray:
        n = obs.shape[0]
        pd = -2.0 * obs[:, 2:5] - 0.3 * obs[:, 8:11]  # joint angles and velocities
        noise_scale = np.linspace(0.0, 1.0, n)[:, None]
        noise = rng.uniform(low, high, pd.shape)
        actions = (1 - noise_scale) * pd + noise_scale * noise
        return np.clip(actions, low, high).astype(np.float32)

    return act


def _random(action_space: Any, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    from ssorl_data.collect import random_policy

    return random_policy(action_space, seed)


POLICIES = {"random": _random, "hopper-balance": _hopper_balance}


# ---------------------------------------------------------------------------- stages
@dataclass
class StageReport:
    name: str
    status: str  # "ran" or "skipped"
    seconds: float
    result: dict[str, Any]


def _hash(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Stamps:
    """Stamps under `out/stamps`: a stage is up to date when its stamp holds the same hash."""

    def __init__(self, out: Path) -> None:
        self.dir = out / "stamps"
        self.dir.mkdir(parents=True, exist_ok=True)

    def read(self, stage: str) -> dict[str, Any] | None:
        path = self.dir / f"{stage}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def write(self, stage: str, key: str, result: dict[str, Any]) -> int:
        """Stamp a finished stage; `ran_at` makes the stages after it rerun when it reruns."""
        path = self.dir / f"{stage}.json"
        tmp = path.with_suffix(".tmp")
        ran_at = time.time_ns()
        stamp = {"hash": key, "ran_at": ran_at, "result": result}
        tmp.write_text(json.dumps(stamp, indent=1, default=str))
        tmp.replace(path)  # atomic: a killed run never leaves a stamp without its output
        return ran_at

    def clear(self, stage: str) -> None:
        (self.dir / f"{stage}.json").unlink(missing_ok=True)


def run_pipeline(
    config: PipelineConfig,
    out: str | Path,
    *,
    device: str | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every stage of `config` into `out`, skipping up-to-date ones; returns the report.

    Writes `out/store` (with split `pipeline` and the relabel run), `out/idm`,
    `out/agents/<mode>-seed<seed>/` and `out/report/` (report.json, report.md, PNGs).
    """
    out = Path(out)
    stamps = _Stamps(out)
    stages: list[StageReport] = []

    def stage(
        name: str,
        key: str,
        outputs: list[Path],
        work: Callable[[], dict[str, Any]],
        keep_outputs: bool = False,
    ) -> str:
        """Run `work` unless the stamp matches `key`; returns a token that changes per run."""
        stamp = stamps.read(name)
        if stamp and stamp["hash"] == key and all(p.exists() for p in outputs):
            stages.append(StageReport(name, "skipped", 0.0, stamp["result"]))
            echo(f"[{name}] skipped (up to date)")
            return f"{key}@{stamp['ran_at']}"
        stamps.clear(name)
        if not keep_outputs:  # else the work resumes or replaces its outputs itself
            for path in outputs:
                _remove(path)
        echo(f"[{name}] running")
        tick = time.perf_counter()
        result = work()
        ran_at = stamps.write(name, key, result)
        stages.append(StageReport(name, "ran", time.perf_counter() - tick, result))
        return f"{key}@{ran_at}"

    store = out / "store"
    data_key = stage(
        "data",
        _hash(config.data, _source_version(config.data)),
        [store],
        lambda: _data(config.data, store, progress),
    )
    split_key = stage(  # outputs inside the store are replaced by the stage itself
        "split",
        _hash(data_key, config.split),
        [store / layout.split_path(SPLIT_NAME)],
        lambda: _split(config.split, store),
        keep_outputs=True,
    )
    idm_dir = out / "idm"
    idm_key = stage(
        "idm",
        _hash(split_key, config.idm),
        [idm_dir],
        lambda: _idm(config.idm, store, idm_dir, device or "cpu", progress),
    )
    relabel_name = config.relabel["name"]
    relabel_key = stage(
        "relabel",
        _hash(idm_key, config.relabel),
        [store / layout.relabel_path(relabel_name)],
        lambda: _relabel(config.relabel, store, idm_dir, device or "cpu", progress),
        keep_outputs=True,
    )
    agents: dict[str, dict[str, Any]] = {}
    train, evaluation = config.train, config.eval
    for mode in train["modes"]:
        for seed in train["seeds"]:
            run = f"{mode}-seed{seed}"
            run_dir = out / "agents" / run
            upstream = relabel_key if mode == "semi-supervised" else split_key
            key = _hash(upstream, train, evaluation, mode, seed)
            _clear_stale_agent(stamps, f"agent-{run}", key, run_dir)
            stage(
                f"agent-{run}",
                key,
                [run_dir / "summary.json"],
                lambda m=mode, s=seed, d=run_dir: _agent(
                    train, evaluation, store, relabel_name, m, s, d, device, progress
                ),
                keep_outputs=True,
            )
            agents[run] = stamps.read(f"agent-{run}")["result"] | {"mode": mode, "seed": seed}
    from ssorl_train.report import write_report

    report = write_report(out, config, store, relabel_name, agents, [asdict(s) for s in stages])
    echo(f"[report] written to {out / 'report'}")
    return report


def _source_version(section: dict[str, Any]) -> list[list[int] | None]:
    """Size and modification time of each imported file or folder (or of the collecting
    policy's file), so a changed source reruns (None for a Minari id, which Minari resolves)."""
    sb3 = _sb3_spec(section)
    files = [sb3[1]] if sb3 else _sources(section)
    versions = []
    for source in map(Path, files):
        info = source.stat() if source.exists() else None
        versions.append(info and [info.st_size, info.st_mtime_ns])
    return versions


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _clear_stale_agent(stamps: _Stamps, name: str, key: str, run_dir: Path) -> None:
    """Keep an agent's run directory only while it was started with this key, so it may resume."""
    started = stamps.dir / f"{name}.started"
    if run_dir.exists() and (not started.exists() or started.read_text() != key):
        shutil.rmtree(run_dir)
        stamps.clear(name)
    started.write_text(key)


def _data(section: dict[str, Any], store: Path, progress: bool) -> dict[str, Any]:
    from ssorl_data.store import TrajectoryStore

    if "source" in section:
        from ssorl_data.io.importing import import_dataset

        for i, source in enumerate(_sources(section)):
            import_dataset(source, store, append=i > 0, progress=progress)
    else:
        import gymnasium as gym

        from ssorl_data.collect import collect

        seed, spec, sb3 = int(section["seed"]), section["policy"], _sb3_spec(section)
        if sb3:
            from ssorl_data.sb3_policy import load_sb3_policy

            policy = load_sb3_policy(sb3[1], section["env_id"], algo=sb3[0])
            description = policy.description
        else:
            env = gym.make(section["env_id"])
            policy, description = POLICIES[spec](env.action_space, seed), {"spec": spec}
            env.close()
        collect(
            section["env_id"],
            store,
            int(section["steps"]),
            policy,
            seed=seed,
            progress=progress,
            policy_description=description,
        )
    with TrajectoryStore.open(store) as opened:
        table = opened.episode_table()
        return {
            "n_episodes": table.n_episodes,
            "n_steps": int(table.length.sum()),
            "mean_return": float(table.returns.mean()),
            "env_id": opened.env_id,
        }


def _split(section: dict[str, Any], store: Path) -> dict[str, Any]:
    from ssorl_data.splits import make_split
    from ssorl_data.store import TrajectoryStore

    with TrajectoryStore.open(store, mode="a") as opened:
        split = make_split(
            opened,
            SPLIT_NAME,
            labelled_fraction=float(section["labelled_fraction"]),
            quantile=float(section["quantile"]),
            seed=int(section["seed"]),
            overwrite=True,
        )
    return {"n_visible": int(split.visible.sum()), "n_episodes": int(split.visible.size)}


def _idm(
    section: dict[str, Any], store: Path, idm_dir: Path, device: str, progress: bool
) -> dict[str, Any]:
    from ssorl_data.idm.evaluate import evaluate_idm
    from ssorl_data.idm.training import IdmTrainConfig, train_idm
    from ssorl_data.store import TrajectoryStore

    values = section | {"hidden": tuple(section["hidden"])}
    with TrajectoryStore.open(store) as opened:
        result = train_idm(
            opened, SPLIT_NAME, idm_dir, IdmTrainConfig(**values), device=device, progress=progress
        )
        metrics = evaluate_idm(result.idm, opened, SPLIT_NAME)
    return {"seconds": result.seconds, "history": result.history, "metrics": metrics}


def _relabel(
    section: dict[str, Any], store: Path, idm_dir: Path, device: str, progress: bool
) -> dict[str, Any]:
    """Resume a partial run of this IDM; replace a run made by another IDM or already complete."""
    from ssorl_data.errors import RelabelExistsError
    from ssorl_data.relabel import relabel

    def attempt(overwrite: bool):
        return relabel(
            store,
            idm_dir,
            section["name"],
            split=SPLIT_NAME,
            overwrite=overwrite,
            batch_size=int(section["batch_size"]),
            device=device,
            progress=progress,
        )

    try:
        result = attempt(overwrite=False)
    except RelabelExistsError:
        result = attempt(overwrite=True)
    return {"seconds": result.seconds, "metrics": result.metrics}


def _agent(
    train: dict[str, Any],
    evaluation: dict[str, Any],
    store: Path,
    relabel_name: str,
    mode: str,
    seed: int,
    run_dir: Path,
    device: str | None,
    progress: bool,
) -> dict[str, Any]:
    from ssorl_train import loop
    from ssorl_train.algos import make_config
    from ssorl_train.dataset import load_training_data

    algo = train["algo"]
    data = load_training_data(
        store,
        mode,
        None if mode == "full" else SPLIT_NAME,
        relabel_name if mode == "semi-supervised" else None,
        float(train["drop_uncertain"]) if mode == "semi-supervised" else 0.0,
    )
    steps = int(train["steps"])
    config = loop.LoopConfig(
        steps=steps,
        seed=seed,
        eval_every=int(evaluation["every"]),
        eval_episodes=int(evaluation["episodes"]),
        checkpoint_every=max(steps // 4, 1),
        log_every=min(int(train["log_every"]), steps),
    )
    checkpoint = run_dir / "checkpoint.json"
    done = json.loads(checkpoint.read_text())["meta"]["step"] if checkpoint.exists() else 0
    if done >= steps:  # finished but never stamped: nothing to resume, and no final eval saved
        shutil.rmtree(run_dir)
    resume = 0 < done < steps
    summary = loop.train(
        data,
        algo,
        make_config(algo, train["overrides"]),
        config,
        run_dir,
        resume=resume,
        device=device,
        progress=progress,
    )
    final = summary["final_eval"] or {}
    return {
        "steps": summary["steps"],
        "steps_this_process": summary["steps_this_process"],  # fewer when it resumed
        "mean_return": final.get("mean_return"),
        "normalized_score": final.get("normalized_score"),
        "n_recorded": summary["data"].get("n_recorded"),
        "n_proxy": summary["data"].get("n_proxy"),
    }
