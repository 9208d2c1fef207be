"""Root of the `ssorl` CLI.

Subcommands are imported only when invoked, so `ssorl --help` stays fast and a
command group never pays for torch or zarr imports it does not use.
"""

from __future__ import annotations

import importlib

import click

from ssorl_data import __version__

# name -> "module:attribute" of a click command or group; one line per command.
COMMANDS: dict[str, str] = {
    "data": "ssorl_data.cli.data:data",
    "doctor": "ssorl_data.cli.doctor:doctor",
    "idm": "ssorl_data.cli.idm:idm",
    "quickstart": "ssorl_data.cli.quickstart:quickstart",
    "train": "ssorl_train.cli:train",
    "eval": "ssorl_train.cli:evaluate",
    "relabel": "ssorl_data.cli.relabel:relabel",
    "run": "ssorl_data.cli.run:run",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ssorl")
def cli() -> None:
    """ssorl: semi-supervised offline RL with action-free trajectories.

    Store a trajectory corpus (`ssorl data`), learn an inverse dynamics model on
    its labelled part, relabel the rest with proxy actions, and train offline RL
    agents on the result.
    """
