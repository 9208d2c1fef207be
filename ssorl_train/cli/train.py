"""`ssorl train` and `ssorl eval`: thin wrappers over `ssorl_train.loop.train` and
`ssorl_train.evaluate.evaluate_checkpoint`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ssorl_data.cli.boundary import renamed_option
from ssorl_data.cli.options import click_type, set_threads, threads_option
from ssorl_train.common import PRECISIONS
from ssorl_train.dataset import MODES, VIEW_ARGS
from ssorl_train.evaluate import EVAL_ARGS
from ssorl_train.loop import LOOP_FIELDS


@click.command(context_settings={"show_default": True})
@click.argument("store", type=click.Path(exists=True))
@click.option(
    "--algo",
    type=click.Choice(["td3bc", "iql", "cql", "dt"]),
    required=True,
    help="Algorithm: TD3+BC, IQL, CQL or Decision Transformer.",
)
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default="full",
    help="full: every recorded action; labelled-only: recorded actions of the "
    "split's visible episodes; semi-supervised: those plus proxy actions elsewhere.",
)
@click.option("--split", default=None, help="Split naming the episodes whose actions are visible.")
@click.option("--relabel", default=None, help="Relabel run whose proxy actions fill the rest.")
@click.option(
    "--drop-uncertain",
    type=click_type(VIEW_ARGS["drop_uncertain"]),
    default=0.0,
    help="Drop this fraction of proxy steps, the most uncertain first.",
)
@click.option(
    "--weight-beta",
    type=click_type(VIEW_ARGS["weight_beta"]),
    default=None,
    help="Sample proxy steps with weight exp(-beta * u / median u).",
)
@click.option(
    "--steps", type=click_type(LOOP_FIELDS["steps"]), required=True, help="Gradient steps in all."
)
@click.option("--out", "out_dir", type=click.Path(), required=True, help="Run directory.")
@click.option(
    "--cache",
    type=click.Path(file_okay=False),
    default=None,
    help="Training cache directory: the view decompressed once into memory-mapped files, "
    "reused while the store, split and relabel run are unchanged (default: OUT/cache).",
)
@click.option(
    "--no-cache", is_flag=True, help="Read the view into RAM instead (no training cache)."
)
@click.option(
    "--eval-every",
    type=click_type(LOOP_FIELDS["eval_every"]),
    default=10_000,
    help="Steps between evaluations; 0: end.",
)
@click.option(
    "--eval-episodes",
    type=click_type(LOOP_FIELDS["eval_episodes"]),
    default=10,
    help="Episodes per evaluation.",
)
@click.option(
    "--checkpoint-every",
    type=click_type(LOOP_FIELDS["checkpoint_every"]),
    default=10_000,
    help="Steps between checkpoints; 0: end only.",
)
@click.option(
    "--log-every",
    type=click_type(LOOP_FIELDS["log_every"]),
    default=1_000,
    help="Steps averaged per log row.",
)
@click.option("--env-id", default=None, help="Env to evaluate in (default: the data's).")
@renamed_option("--env", "--env-id")
@click.option("--resume", is_flag=True, help="Continue the checkpoint in --out exactly.")
@click.option(
    "--overwrite", is_flag=True, help="Replace a finished or partial run in --out (not resumed)."
)
@click.option(
    "--seed",
    type=click_type(LOOP_FIELDS["seed"]),
    default=0,
    help="Seed of networks, batches and eval envs.",
)
@click.option("--device", default=None, help="torch device (default: cuda if present, else cpu).")
@click.option(
    "--precision",
    type=click.Choice(list(PRECISIONS)),
    default="fp32",
    help="bf16: forward passes in bfloat16 under autocast (weights, optimizer, losses and "
    "targets stay fp32). A run resumes only in its own precision.",
)
@click.option(
    "--compile",
    "compile_steps",
    is_flag=True,
    help="torch.compile each update step (compiles during the first steps, then faster; "
    "needs a C++ compiler on CPU).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override an algorithm config field, e.g. --set alpha=2.5 (repeatable).",
)
@threads_option()
@click.option("--quiet", is_flag=True, help="No progress bar.")
@renamed_option("--no-progress", "--quiet", is_flag=True)
def train(
    store: str,
    algo: str,
    mode: str,
    split: str | None,
    relabel: str | None,
    drop_uncertain: float,
    weight_beta: float | None,
    steps: int,
    out_dir: str,
    cache: str | None,
    no_cache: bool,
    eval_every: int,
    eval_episodes: int,
    checkpoint_every: int,
    log_every: int,
    env_id: str | None,
    resume: bool,
    overwrite: bool,
    seed: int,
    device: str | None,
    precision: str,
    compile_steps: bool,
    overrides: tuple[str, ...],
    threads: int | None,
    quiet: bool,
) -> None:
    """Train an offline RL agent on STORE and write logs, checkpoints and a summary to --out.

    Defaults are the published D4RL hyperparameters of each algorithm. The run directory
    gets log.csv, eval.csv, TensorBoard events (tb/), checkpoint.{safetensors,json} and
    summary.json; `--resume` continues a killed run bit for bit. Import a D4RL or
    Minari dataset into a store first with `ssorl data import`. Training samples from a
    training cache (OUT/cache unless --cache DIR): the view is written there once, a few
    chunks at a time, and memory-mapped, so a store larger than RAM trains (the page
    cache holds the hot rows; the disk needs the decompressed view's size).
    Python API: ssorl_train.dataset.load_training_data and ssorl_train.loop.train.
    """
    from ssorl_train import loop
    from ssorl_train.algos import make_config
    from ssorl_train.dataset import load_training_data

    set_threads(threads)
    pairs = dict(_split_override(item) for item in overrides)
    config = make_config(algo, pairs)
    loop_config = loop.LoopConfig(
        steps=steps,
        seed=seed,
        eval_every=eval_every,
        eval_episodes=eval_episodes,
        checkpoint_every=checkpoint_every,
        log_every=log_every,
        env_id=env_id,
        precision=precision,
        compile=compile_steps,
    )
    if no_cache and cache:
        raise click.BadParameter("pass --cache DIR or --no-cache, not both.", param_hint="--cache")
    cache_dir = None if no_cache else Path(cache or Path(out_dir) / "cache")
    data = load_training_data(
        store, mode, split, relabel, drop_uncertain, weight_beta, cache_dir, not quiet
    )
    summary = loop.train(
        data,
        algo,
        config,
        loop_config,
        out_dir,
        resume=resume,
        overwrite=overwrite,
        device=device,
        progress=not quiet,
    )
    click.echo(json.dumps(summary, indent=1))


def _split_override(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep:
        raise click.BadParameter(f"Expected KEY=VALUE. Got {item!r}.", param_hint="--set")
    return key.strip().replace("-", "_"), value.strip()


@click.command(context_settings={"show_default": True})
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--env-id", default=None, help="Env id (default: the training data's).")
@renamed_option("--env", "--env-id")
@click.option(
    "--episodes",
    type=click_type(EVAL_ARGS["episodes"]),
    default=10,
    help="Episodes, run in parallel envs.",
)
@click.option(
    "--seed", type=click_type(EVAL_ARGS["seed"]), default=0, help="Episode i is seeded seed + i."
)
@click.option("--device", default=None, help="torch device (default: cuda if present, else cpu).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def evaluate(
    checkpoint: str, env_id: str | None, episodes: int, seed: int, device: str | None, as_json: bool
) -> None:
    """Evaluate CHECKPOINT (a run directory or checkpoint file): returns and normalised score."""
    from ssorl_train.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(checkpoint, env_id, episodes, seed, device)
    if as_json:
        click.echo(json.dumps(result.to_dict()))
        return
    score = "n/a" if result.normalized_score is None else f"{result.normalized_score:.1f}"
    click.echo(
        f"{result.env_id}: return {result.mean_return:.1f} +- {result.std_return:.1f} "
        f"over {len(result.returns)} episodes, normalised score {score}"
    )
