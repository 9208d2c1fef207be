"""The pipeline's stages (data, split, IDM, relabel, one agent per mode and seed) and the
order that chains them; each stage only composes public functions of ssorl_data and
ssorl_train."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ssorl_data import layout
from ssorl_train.pipeline.config import (
    ALL_SPLIT,
    LATER,
    SPLIT_NAME,
    PipelineConfig,
    sb3_spec,
    sources,
)
from ssorl_train.pipeline.runner import StageRunner, stage_hash


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
    `out/agents/<mode>-seed<seed>/`, the agents' training caches `out/cache/<mode>/` and
    `out/report/` (report.json, report.md, PNGs).
    Each stage's key hashes its config section and the tokens of the stages it reads.
    """
    out = Path(out)
    runner = StageRunner(out, echo)
    store, idm_dir = out / "store", out / "idm"
    data_key = runner.stage(
        "data",
        stage_hash(config.data, _source_version(config.data)),
        [store],
        lambda: _data(config.data, store, progress),
    )
    split_key = runner.stage(  # outputs inside the store are replaced by the stage itself
        "split",
        stage_hash(data_key, config.split),
        [store / layout.split_path(SPLIT_NAME)],
        lambda: _split(config.split, store),
        keep_outputs=True,
    )
    idm_key = runner.stage(
        "idm",
        stage_hash(split_key, config.idm),
        [idm_dir],
        lambda: _idm(config.idm, store, idm_dir, device or "cpu", progress),
    )
    relabel_name = config.relabel["name"]
    relabel_key = runner.stage(
        "relabel",
        stage_hash(idm_key, config.relabel),
        [store / layout.relabel_path(relabel_name)],
        lambda: _relabel(config.relabel, store, idm_dir, device or "cpu", progress),
        keep_outputs=True,
    )
    agents: dict[str, dict[str, Any]] = {}
    train, evaluation = config.train, config.eval
    for mode in train["modes"]:
        for seed in train["seeds"]:
            run, name = f"{mode}-seed{seed}", f"agent-{mode}-seed{seed}"
            run_dir = out / "agents" / run
            upstream = relabel_key if mode == "semi-supervised" else split_key
            key = stage_hash(upstream, train, evaluation, mode, seed)
            runner.keep_if_started_with(name, key, run_dir)  # an agent resumes its checkpoint
            runner.stage(
                name,
                key,
                [run_dir / "summary.json"],
                lambda m=mode, s=seed, d=run_dir: _agent(
                    train, evaluation, store, relabel_name, m, s, d, device, progress
                ),
                keep_outputs=True,
            )
            agents[run] = runner.result(name) | {"mode": mode, "seed": seed}
    from ssorl_train.report import write_report

    stages = [asdict(s) for s in runner.reports]
    report = write_report(out, config, store, relabel_name, agents, stages)
    echo(f"[report] written to {out / 'report'}")
    return report


def _source_version(section: dict[str, Any]) -> list[list[int] | None]:
    """Size and modification time of each imported file or folder (or of the collecting
    policy's file), so a changed source reruns (None for a Minari id, which Minari resolves)."""
    sb3 = sb3_spec(section)
    files = [sb3[1]] if sb3 else sources(section)
    versions = []
    for source in map(Path, files):
        info = source.stat() if source.exists() else None
        versions.append(info and [info.st_size, info.st_mtime_ns])
    return versions


def _data(section: dict[str, Any], store: Path, progress: bool) -> dict[str, Any]:
    """Import the sources in order, or collect from the env with the named policy."""
    from ssorl_data.store import TrajectoryStore

    if "source" in section:
        from ssorl_data.io.importing import import_dataset

        for i, source in enumerate(sources(section)):
            import_dataset(source, store, append=i > 0, progress=progress)
    else:
        import gymnasium as gym

        from ssorl_data.collect import POLICIES, collect

        seed, spec, sb3 = int(section["seed"]), section["policy"], sb3_spec(section)
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
            "n_steps": int(table.lengths.sum()),
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
            labelled_fraction=section.get("labelled_fraction"),  # absent with labelled_steps
            labelled_steps=section.get("labelled_steps"),
            select=section.get("select", "random"),
            quantile=float(section["quantile"]),
            seed=int(section["seed"]),
            overwrite=True,
        )
    return {"n_visible": int(split.visible.sum()), "n_episodes": int(split.visible.size)}


def _idm(
    section: dict[str, Any], store: Path, idm_dir: Path, device: str, progress: bool
) -> dict[str, Any]:
    """Train the IDM on the split's visible episodes (or, with `episodes = "all"`, on
    ALL_SPLIT: every recorded action) and score it on the actions the split hides."""
    from ssorl_data.idm.evaluate import evaluate_idm
    from ssorl_data.idm.training import IdmTrainConfig, train_idm
    from ssorl_data.store import TrajectoryStore

    values = dict(section)
    episodes = values.pop("episodes", LATER["idm"]["episodes"])
    values["hidden"] = tuple(values["hidden"])
    trained_on = SPLIT_NAME
    if episodes == "all":
        import numpy as np

        from ssorl_data.splits import make_split

        with TrajectoryStore.open(store, mode="a") as opened:
            labelled = np.flatnonzero(opened.episode_table().labelled)
            make_split(opened, ALL_SPLIT, episodes=labelled, overwrite=True)
        trained_on = ALL_SPLIT
    with TrajectoryStore.open(store) as opened:
        result = train_idm(
            opened, trained_on, idm_dir, IdmTrainConfig(**values), device=device, progress=progress
        )
        metrics = evaluate_idm(result.idm, opened, SPLIT_NAME)
    return {"seconds": result.seconds, "history": result.history, "metrics": metrics,
            "trained_on": trained_on}  # fmt: skip


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
    """Train and evaluate one agent, resuming its checkpoint when a killed run left one."""
    from ssorl_train import loop
    from ssorl_train.algos import make_config
    from ssorl_train.checkpoint import saved_step
    from ssorl_train.dataset import load_training_data

    algo = train["algo"]
    data = load_training_data(
        store,
        mode,
        None if mode == "full" else SPLIT_NAME,
        relabel_name if mode == "semi-supervised" else None,
        float(train["drop_uncertain"]) if mode == "semi-supervised" else 0.0,
        train.get("weight_beta") if mode == "semi-supervised" else None,
        cache=run_dir.parent.parent / "cache" / mode,  # out/cache/MODE, shared by the seeds
        progress=progress,
    )
    steps = int(train["steps"])
    config = loop.LoopConfig(
        steps=steps,
        seed=seed,
        eval_every=int(evaluation["eval_every"]),
        eval_episodes=int(evaluation["eval_episodes"]),
        checkpoint_every=max(steps // 4, 1),
        log_every=min(int(train["log_every"]), steps),
        precision=train.get("precision", "fp32"),
        compile=train.get("compile", False),
    )
    done = saved_step(run_dir)
    if done >= steps:  # finished but never stamped: nothing to resume, and no final eval saved
        shutil.rmtree(run_dir)
    summary = loop.train(
        data,
        algo,
        make_config(algo, train["overrides"]),
        config,
        run_dir,
        resume=0 < done < steps,
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
