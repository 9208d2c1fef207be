"""Root of the `ssorl` command: the data-side groups of `ssorl_data.cli` and the
training-side commands of this package under one name.

It lives in the training package because it is the one place that sees both: the data
package never imports this one. Subcommands are imported only when invoked, so
`ssorl --help` stays fast and a command never pays for imports it does not use.
"""

from __future__ import annotations

import importlib

import click

from ssorl_data import __version__
from ssorl_data.cli.boundary import BoundaryGroup

# name -> "module:attribute" of a click command or group; one line per command.
COMMANDS: dict[str, str] = {
    "data": "ssorl_data.cli.data:data",
    "doctor": "ssorl_data.cli.doctor:doctor",
    "idm": "ssorl_data.cli.idm:idm",
    "relabel": "ssorl_data.cli.relabel:relabel",
    "train": "ssorl_train.cli.train:train",
    "eval": "ssorl_train.cli.train:evaluate",
    "run": "ssorl_train.cli.run:run",
    "quickstart": "ssorl_train.cli.quickstart:quickstart",
}


class LazyGroup(BoundaryGroup):
    """The root group: subcommands imported on first use, every error through one boundary."""

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
@click.option(
    "--debug",
    is_flag=True,
    help="Show the Python traceback of an error (also: SSORL_DEBUG=1).",
)
def cli(debug: bool) -> None:
    """ssorl: semi-supervised offline RL with action-free trajectories.

    Store a trajectory corpus (`ssorl data`), learn an inverse dynamics model on
    its labelled part, relabel the rest with proxy actions, and train offline RL
    agents on the result. A user error prints one line and exits with code 2.
    """
