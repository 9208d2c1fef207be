"""`python -m ssorl_train` runs the `ssorl` command."""

from ssorl_train.cli.main import cli

cli()
