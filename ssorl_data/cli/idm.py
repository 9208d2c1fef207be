"""`ssorl idm ...`: train and evaluate inverse dynamics models."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ssorl_data.cli.options import click_type, int_list, set_threads, threads_option
from ssorl_data.idm.model import DEFAULT_UNCERTAINTY, UNCERTAINTY_DEFINITIONS
from ssorl_data.idm.training import IDM_FIELDS, IdmTrainConfig

DEFAULTS = IdmTrainConfig()  # the options' defaults are the package's, never a copy


@click.group()
def idm() -> None:
    """Train and evaluate inverse dynamics models (IDMs) on a store's split."""


@idm.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--split", required=True, help="Split whose visible episodes train the IDM.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Checkpoint directory.")
@click.option("--k", type=click_type(IDM_FIELDS["k"]), default=DEFAULTS.k, show_default=True,
              help="Past states in the window (input: s_{t-k}..s_t, s_{t+1}).")  # fmt: skip
@click.option("--hidden", default=",".join(map(str, DEFAULTS.hidden)), show_default=True,
              callback=int_list(IDM_FIELDS["hidden"]), help="Hidden layer sizes.")  # fmt: skip
@click.option("--members", type=click_type(IDM_FIELDS["members"]), default=DEFAULTS.members,
              show_default=True)  # fmt: skip
@click.option("--dropout", type=click_type(IDM_FIELDS["dropout"]), default=DEFAULTS.dropout,
              show_default=True)  # fmt: skip
@click.option("--shared-trunk/--separate-members", default=DEFAULTS.shared_trunk,
              show_default=True,
              help="Share hidden layers across members (about M times cheaper).")  # fmt: skip
@click.option("--delta/--no-delta", default=DEFAULTS.delta, show_default=True,
              help="Also feed the network s_{t+1} - s_t, scaled to unit variance over the "
                   "labelled rows.")  # fmt: skip
@click.option("--lr", type=click_type(IDM_FIELDS["lr"]), default=DEFAULTS.lr, show_default=True)
@click.option("--batch-size", type=click_type(IDM_FIELDS["batch_size"]),
              default=DEFAULTS.batch_size, show_default=True)  # fmt: skip
@click.option("--nll-beta", type=click_type(IDM_FIELDS["nll_beta"]), default=DEFAULTS.nll_beta,
              show_default=True,
              help="beta-NLL: weight each action dimension's NLL by its variance^beta "
                   "(0: plain NLL; 1: the mean fits like squared error).")  # fmt: skip
@click.option("--max-steps", type=click_type(IDM_FIELDS["max_steps"]),
              default=DEFAULTS.max_steps, show_default=True,
              help="Gradient-step budget (early stopping may end sooner); self-training "
                   "runs up to as many again.")  # fmt: skip
@click.option("--eval-every", type=click_type(IDM_FIELDS["eval_every"]),
              default=DEFAULTS.eval_every, show_default=True)  # fmt: skip
@click.option("--patience", type=click_type(IDM_FIELDS["patience"]), default=DEFAULTS.patience,
              show_default=True,
              help="Evaluations without validation improvement before stopping.")  # fmt: skip
@click.option("--self-train-fraction", type=click_type(IDM_FIELDS["self_train_fraction"]),
              default=DEFAULTS.self_train_fraction, show_default=True,
              help="Self-training: after the supervised fit, also train on this fraction of "
                   "the most confident proxy labels of the other episodes (0: off).")  # fmt: skip
@click.option("--self-train-weight", type=click_type(IDM_FIELDS["self_train_weight"]),
              default=DEFAULTS.self_train_weight, show_default=True,
              help="Weight of the pseudo-labelled windows' loss against the labelled.")  # fmt: skip
@click.option("--self-train-steps", type=click_type(IDM_FIELDS["self_train_steps"]),
              default=DEFAULTS.self_train_steps, show_default=True,
              help="Steps of the other episodes to pseudo-label, a seeded sample (bounds "
                   "memory: their rows are held like the labelled ones).")  # fmt: skip
@click.option("--seed", type=click_type(IDM_FIELDS["seed"]), default=DEFAULTS.seed,
              show_default=True)  # fmt: skip
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cuda.")
@threads_option()
@click.option("--overwrite", is_flag=True,
              help="Replace an IDM already in OUT (relabel runs may point to it).")  # fmt: skip
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(store, split, out, k, hidden, members, dropout, shared_trunk, delta, lr, batch_size,
          nll_beta, max_steps, eval_every, patience, self_train_fraction, self_train_weight,
          self_train_steps, seed, device, threads, overwrite, quiet) -> None:  # fmt: skip
    """Train an IDM ensemble on the visible episodes of SPLIT in STORE; write it to OUT.

    Memory: the visible episodes' rows (float32: 4 bytes per observation value and
    action value) plus about 4 chunks, whatever the size of the rest of the store; the
    observation statistics over every row are streamed one chunk at a time. With
    self-training, also the rows of --self-train-steps steps of the other episodes.
    Python API: ssorl_data.idm.training.train_idm.
    """
    from ssorl_data.idm.training import train_idm
    from ssorl_data.store import TrajectoryStore

    config = IdmTrainConfig(
        k=k, hidden=hidden, members=members, dropout=dropout,
        shared_trunk=shared_trunk, delta=delta, lr=lr, batch_size=batch_size,
        nll_beta=nll_beta, max_steps=max_steps,
        eval_every=eval_every, patience=patience, self_train_fraction=self_train_fraction,
        self_train_weight=self_train_weight, self_train_steps=self_train_steps, seed=seed,
    )  # fmt: skip
    set_threads(threads)
    with TrajectoryStore.open(store) as opened:
        result = train_idm(
            opened, split, out, config, device=device, progress=not quiet, overwrite=overwrite
        )
    best = result.idm.provenance
    click.echo(
        f"trained {members}-member IDM in {result.seconds:.0f}s ({best['steps_run']} steps; best "
        f"val NLL {best['best_val_nll']:.4f} at step {best['best_step']}); saved to {out}"
    )
    if (report := best["self_training"]) is not None:
        verdict = "kept" if report["kept_weights"] else "not kept: no lower validation NLL"
        click.echo(
            f"self-training: {report['kept_steps']:,} of {report['candidate_steps']:,} "
            f"pseudo-labelled steps from {report['episodes']} episodes; its weights {verdict}"
        )


@idm.command("eval")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--idm", "idm_dir", required=True, type=click.Path(path_type=Path),
              help="Checkpoint directory.")  # fmt: skip
@click.option("--split", help="Split whose hidden episodes to score (default: the IDM's).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--uncertainty", type=click.Choice(UNCERTAINTY_DEFINITIONS),
              default=DEFAULT_UNCERTAINTY, show_default=True,
              help="Uncertainty definition: epistemic (members' disagreement) or total "
                   "(mixture variance), aggregated over action dims by mean or max.")  # fmt: skip
@click.option("--compare-uncertainty", is_flag=True,
              help="Also rank errors by every other definition (keys suffixed by "
                   "its name).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def eval_command(store, idm_dir, split, device, uncertainty, compare_uncertainty,
                 as_json) -> None:  # fmt: skip
    """NLL, action MSE and uncertainty of the IDM on held-out and hidden episodes of STORE.

    \b
    Groups: val (held-out labelled episodes), hidden (recorded actions the split
    hides), hidden_inside / hidden_outside (return inside / outside the visible
    episodes' range). *_uncertainty_auroc: how often a step among the group's worst
    10% of errors has higher uncertainty than one outside them (0.5: chance, 1:
    always); *_uncertainty_spearman: rank correlation of uncertainty with error
    (error: squared, averaged over action dims, in the [-1, 1] action scale). The
    val figures are the check available without hidden actions.
    Python API: ssorl_data.idm.evaluate.evaluate_idm.
    """
    from ssorl_data.idm.checkpoint import load_idm
    from ssorl_data.idm.evaluate import evaluate_idm
    from ssorl_data.store import TrajectoryStore

    model = load_idm(idm_dir, device)
    with TrajectoryStore.open(store) as opened:
        result = evaluate_idm(
            model, opened, split, uncertainty=uncertainty, compare_uncertainty=compare_uncertainty
        )
    if as_json:
        click.echo(json.dumps(result, indent=1))
        return
    for key, value in result.items():
        click.echo(f"{key:<40} {value:.6g}" if isinstance(value, float) else f"{key:<40} {value}")
