"""`ssorl data ...`: import, info, export and verify trajectory stores."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ssorl_data.errors import SsorlError


@click.group()
def data() -> None:
    """Create, inspect, export and check trajectory stores."""


@data.command("import")
@click.argument("source")
@click.argument("store", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "d4rl", "npz", "minari", "lerobot"]),
    default="auto",
    show_default=True,
    help="auto: .hdf5/.h5 is D4RL layout, .npz is NPZ, a directory holding meta/info.json a "
    "LeRobot v3 dataset, anything else a Minari id or directory.",
)
@click.option("--append", is_flag=True, help="Add the episodes to an existing store.")
@click.option("--env-id", help="Gymnasium env id, when the source does not record one.")
@click.option(
    "--chunk-steps",
    type=click.IntRange(min=1),
    default=32768,
    show_default=True,
    help="Rows per Zarr chunk along time.",
)
@click.option(
    "--compression",
    type=click.Choice(["zstd", "lz4", "none"]),
    default="zstd",
    show_default=True,
    help="Blosc codec for every array.",
)
@click.option(
    "--no-terminals",
    is_flag=True,
    help="Accept a D4RL/NPZ file without 'terminals': no step is marked terminated and "
    "episodes end only at 'timeouts'. Recorded in the store's provenance. Without it such a "
    "file is refused. (A file without 'timeouts' imports as is: episodes end at 'terminals'.)",
)
@click.option(
    "--accept-float32-rounding",
    is_flag=True,
    help="Import a Minari dataset even where storing its float64 observations as float32 "
    "rounds a dimension by more than 1e-4 of its range (the store holds float32, what the "
    "kernels and networks read). The rounding is recorded in the store's provenance.",
)
@click.option(
    "--observation-key",
    "observation_keys",
    multiple=True,
    help="LeRobot: a feature that forms the observation; repeat it to concatenate several, "
    "in order (default: observation.state).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def import_command(
    source,
    store,
    fmt,
    append,
    env_id,
    chunk_steps,
    compression,
    no_terminals,
    accept_float32_rounding,
    observation_keys,
    quiet,
) -> None:
    """Import SOURCE (D4RL HDF5, NPZ, Minari or LeRobot v3 dataset) into the store at STORE.

    All episodes of SOURCE become visible together: an import that fails or is
    killed leaves the store as it was. Memory: the source's block being written (D4RL and
    NPZ files are read in blocks) plus less than one chunk per array, whatever the size
    of the store appended to. Python API: ssorl_data.io.importing.import_dataset.
    """
    from ssorl_data.io.importing import import_dataset

    result = import_dataset(
        source,
        store,
        fmt=fmt,
        append=append,
        env_id=env_id,
        chunk_steps=chunk_steps,
        compression=compression,
        progress=not quiet,
        no_terminals=no_terminals,
        accept_float32_rounding=accept_float32_rounding,
        observation_keys=observation_keys,
    )
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(
        f"imported {result.episodes_added} episodes ({result.steps_added} steps) into {store}"
    )


@data.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for machines).")
@click.option(
    "--plot",
    type=click.Path(path_type=Path),
    help="Write return histograms of labelled vs action-free episodes to this PNG.",
)
def info(store, as_json, plot) -> None:
    """Episodes, steps, labelled fraction, and return/length statistics of STORE.

    Each split and relabel run is shown "complete", or "stale (covers N of M
    episodes|steps)" once episodes were appended after it was made (training
    refuses stale ones; `ssorl data split --extend` and `ssorl relabel` extend them).
    Memory: the episode table (about 25 bytes an episode) and one chunk, whatever the
    store's size. Python API: ssorl_data.info.store_info / plot_returns.
    """
    from ssorl_data.info import plot_returns, store_info
    from ssorl_data.store import TrajectoryStore

    with TrajectoryStore.open(store) as opened:
        summary = store_info(opened)
        if plot:
            plot_returns(opened, plot)
    if as_json:
        click.echo(json.dumps(summary, indent=1))
        return
    click.echo(_info_table(summary))
    if plot:
        click.echo(f"plot written to {plot}")


def _fmt(stats: dict) -> str:
    if stats["mean"] is None:
        return "-"
    return f"{stats['mean']:.1f} ± {stats['std']:.1f}  [{stats['min']:.1f}, {stats['max']:.1f}]"


def _derived(s: dict, kind: str) -> str:
    """`name: complete; other: stale (covers 974 of 1,515 episodes)` for one kind."""
    entries = [f"{d['name']}: {d['description']}" for d in s["derived"] if d["kind"] == kind]
    return "; ".join(entries) or "-"


def _info_table(s: dict) -> str:
    rows = [
        ("store", s["path"]),
        ("env", s["env_id"] or "-"),
        ("episodes", f"{s['n_episodes']:,}"),
        ("steps", f"{s['n_steps']:,}"),
        ("labelled episodes", f"{s['labelled_episodes']:,} ({100 * s['labelled_fraction']:.1f}%)"),
        (
            "steps with actions",
            f"{s['recorded_action_steps']:,} ({100 * s['recorded_action_fraction']:.1f}%)",
        ),
        ("observation", f"{tuple(s['observation_shape'])} {s['observation_dtype']}"),
        ("action", f"{tuple(s['action_shape'])} float32"),
        ("return", _fmt(s["return"])),
        ("return, labelled", _fmt(s["return_labelled"])),
        ("return, action-free", _fmt(s["return_action_free"])),
        ("length", _fmt(s["length"])),
        ("splits", _derived(s, "split")),
        ("relabel runs", _derived(s, "relabel run")),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


@data.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.argument("destination")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["d4rl", "minari"]),
    required=True,
    help="d4rl: DESTINATION is an .hdf5 path. minari: DESTINATION is a dataset id.",
)
@click.option(
    "--minari-root",
    type=click.Path(path_type=Path),
    help="Directory of Minari datasets (default: MINARI_DATASETS_PATH or ~/.minari).",
)
@click.option(
    "--minari-format",
    type=click.Choice(["hdf5", "arrow"]),
    default="hdf5",
    show_default=True,
    help="Minari's data format for --format minari.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing HDF5 file.")
def export(store, destination, fmt, minari_root, minari_format, overwrite) -> None:
    """Export STORE to a D4RL-layout HDF5 file or a Minari dataset.

    Missing actions are written as NaN rows, which `ssorl data import` reads back
    as missing. A Minari export restores the observation space the import recorded
    (a Dict with its keys, float64 if the source was). Memory: about 4 chunks of every
    array (D4RL: written chunk by chunk into the HDF5 datasets; Minari: 131,072 steps of
    episodes at a time through Minari's own API), whatever the store's size.
    Python API: ssorl_data.io.d4rl_export / ssorl_data.io.minari_io.
    """
    from ssorl_data.store import TrajectoryStore

    with TrajectoryStore.open(store) as opened:
        if fmt == "d4rl":
            from ssorl_data.io.d4rl_export import export_d4rl_hdf5

            written = export_d4rl_hdf5(opened, destination, overwrite=overwrite)
        else:
            from ssorl_data.io.minari_io import export_minari

            written = export_minari(
                opened, destination, root=minari_root, data_format=minari_format
            )
    click.echo(f"exported {store} to {written}")


@data.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--quiet", is_flag=True, help="No progress bar.")
def verify(store, quiet) -> None:
    """Check every invariant of STORE; list each violation and exit 1 if there is any.

    \b
    A split or relabel run that covers fewer episodes or steps than the store
    (made before `ssorl data import --append`) is listed as "stale: ..." with the
    command that extends it. Stale is not corruption: it does not fail verify, but
    training refuses stale data. Derived data that claims more than the store has,
    or whose content no longer matches its recorded identity, is a violation.
    Memory: about 4 chunks of every array, whatever the store's size.
    Python API: ssorl_data.verify.verify_store.
    """
    from ssorl_data.store import TrajectoryStore
    from ssorl_data.verify import verify_store

    with TrajectoryStore.open(store) as opened:
        report = verify_store(opened, progress=not quiet)
    for line in report.stale:
        click.echo(f"stale: {line}")
    if report.ok:
        click.echo(f"ok: {report.n_episodes} episodes, {report.n_steps} steps, no violation")
        return
    for violation in report.violations:
        click.echo(f"violation: {violation}")
    click.echo(f"{len(report.violations)} violation(s) in {store}", err=True)
    sys.exit(1)


@data.command()
@click.argument("env_id")
@click.option(
    "--out", "store", type=click.Path(path_type=Path), required=True, help="Path of the new store."
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    required=True,
    help="Steps to collect; the episodes running at the end are truncated there.",
)
@click.option(
    "--policy",
    "policy_spec",
    default="random",
    show_default=True,
    help="random: uniform actions from the action space. sb3:PATH or sb3:ALGO:PATH: a "
    "stable-baselines3 model .zip (ALGO: sac, td3, ddpg, ppo or a2c; read from the weights "
    "when left out).",
)
@click.option(
    "--deterministic/--stochastic",
    default=True,
    show_default=True,
    help="sb3 policies: act with the mean action, or sample it (seeded by --seed).",
)
@click.option(
    "--envs",
    "n_envs",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Environments stepped together (gymnasium sync vector env).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds envs and policy.")
@click.option("--no-actions", is_flag=True, help="Record the episodes action-free.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def collect(
    env_id, store, steps, policy_spec, deterministic, n_envs, seed, no_actions, quiet
) -> None:
    """Roll out a policy in ENV_ID and write the episodes into a new store.

    \b
    --policy sb3:PATH loads the .zip that stable-baselines3's model.save() wrote,
    weights only: no code from the file runs (SB3's own load would unpickle it).
    Supported are MLP policies of SAC, TD3, DDPG, PPO and A2C trained on ENV_ID's
    spaces, without gSDE; it needs `pip install "ssorl[collect]"`. VecNormalize
    statistics are NOT applied: a policy trained behind VecNormalize sees raw
    observations here and acts badly. The store records the policy file and its
    sha256 in extra.collect.policy.

    Python API: ssorl_data.collect.collect, ssorl_data.sb3_policy.load_sb3_policy.
    """
    from ssorl_data.collect import collect as collect_episodes

    policy = None
    if policy_spec.startswith("sb3:"):
        import torch

        from ssorl_data.sb3_policy import load_sb3_policy, parse_sb3_spec

        try:
            algo, path = parse_sb3_spec(policy_spec)
            policy = load_sb3_policy(path, env_id, algo=algo, deterministic=deterministic)
        except SsorlError as error:
            raise click.BadParameter(str(error), param_hint="--policy") from None
        torch.manual_seed(seed)  # stochastic SB3 actions draw from torch's global RNG
    elif policy_spec != "random":
        raise click.BadParameter(
            f"Expected 'random', 'sb3:PATH' or 'sb3:ALGO:PATH'. Got {policy_spec!r} instead.",
            param_hint="--policy",
        )
    collect_episodes(
        env_id,
        store,
        steps,
        policy,
        n_envs=n_envs,
        seed=seed,
        record_actions=not no_actions,
        progress=not quiet,
        policy_description=policy.description if policy else None,
    )
    click.echo(f"collected {steps} steps of {env_id} into {store}")


@data.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Split name (letters, digits, '.', '_', '-').")
@click.option(
    "--labelled-fraction",
    type=click.FloatRange(0, 1),
    help="Fraction of ALL episodes whose actions stay visible.",
)
@click.option(
    "--quantile",
    type=click.FloatRange(0, 1, min_open=True),
    help="Draw labelled episodes only from the lowest-return QUANTILE fraction (omit: random).",
)
@click.option(
    "--labelled-steps",
    type=click.IntRange(min=1),
    help="Budget in steps instead: label whole episodes totalling at most N steps.",
)
@click.option(
    "--select",
    type=click.Choice(["random", "coverage", "farthest"]),
    default="random",
    show_default=True,
    help="How the budget is spent: random draws; coverage (k-means over per-episode "
    "observation summaries, the episode nearest each centre); or farthest (greedy "
    "k-center: the extremes first).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--episodes",
    "episodes_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Explicit visible episodes: a JSON list or a text file of indices.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing split of that name.")
@click.option(
    "--extend",
    is_flag=True,
    help="Extend the existing split NAME over the episodes appended since it was made, "
    "as not visible (their actions stay hidden); no other option goes with it.",
)
def split(
    store, name, labelled_fraction, labelled_steps, select, quantile, seed, episodes_file,
    overwrite, extend,
) -> None:  # fmt: skip
    """Mark which episodes of STORE keep visible actions (no recorded action is removed).

    \b
    The labelling budget is --labelled-fraction (of all episodes) or --labelled-steps;
    --select spends it at random or on covering the state space, over the episodes of
    the optional --quantile (the lowest returns), deterministically for --seed.

    \b
    A split covers the episodes the store had when it was made. After
    `ssorl data import ... --append` it is stale, and training refuses it: extend it
    with --extend (the appended episodes stay action-free, so the labelled fraction
    falls), or make it again over every episode with its options and --overwrite.
    Memory: the episode table (about 25 bytes an episode); no step is read.
    Python API: ssorl_data.splits.make_split / extend_split.
    """
    from ssorl_data.splits import extend_split, make_split, read_episode_list
    from ssorl_data.store import TrajectoryStore

    if extend:
        given = [labelled_fraction, labelled_steps, quantile, episodes_file, overwrite or None]
        if any(option is not None for option in given) or select != "random":
            raise click.UsageError(
                "--extend keeps the split's visible episodes: give it without "
                "--labelled-fraction, --labelled-steps, --select, --quantile, --episodes or "
                "--overwrite."
            )
        with TrajectoryStore.open(store, mode="a") as opened:
            covered = opened.read_split(name).attrs.get("n_episodes")
            made = extend_split(opened, name)
        click.echo(
            f"split {name!r}: covers {made.visible.size} episodes (was {covered}); "
            f"{int(made.visible.sum())} visible ({made.visible.mean():.1%})"
        )
        return
    with TrajectoryStore.open(store, mode="a") as opened:
        episodes = read_episode_list(episodes_file, opened.n_episodes) if episodes_file else None
        made = make_split(
            opened,
            name,
            labelled_fraction=labelled_fraction,
            quantile=quantile,
            seed=seed,
            episodes=episodes,
            overwrite=overwrite,
            labelled_steps=labelled_steps,
            select=select,
            progress=True,
        )
    click.echo(
        f"split {name!r}: {int(made.visible.sum())} of {made.visible.size} episodes visible "
        f"({made.attrs['method']}), {made.attrs['n_visible_steps']:,} steps"
    )


@data.command("drop-actions")
@click.argument("store", type=click.Path(exists=True, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option(
    "--episodes",
    "episodes_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Episode indices whose actions to drop: a JSON list or integers one per line.",
)
def drop_actions(store: Path, out: Path, episodes_file: Path) -> None:
    """Copy STORE to a new store OUT without the recorded actions of the listed episodes.

    The usual way to hide actions is a split (`ssorl data split`), which keeps them
    recorded so the fully labelled baseline stays possible; use this only when the
    actions must physically be absent. Memory: about 4 chunks of every array, whatever
    the store's size. Python API: ssorl_data.drop.drop_actions.
    """
    from ssorl_data.drop import drop_actions as run_drop
    from ssorl_data.splits import read_episode_list
    from ssorl_data.store import TrajectoryStore

    with TrajectoryStore.open(store) as opened:
        episodes = read_episode_list(episodes_file, opened.n_episodes)
    run_drop(store, out, episodes)
    click.echo(
        f"copied {store} to {out} without the actions of {len(set(episodes.tolist()))} episodes"
    )
