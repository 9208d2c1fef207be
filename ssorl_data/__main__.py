"""`python -m ssorl_data` runs the `ssorl` CLI."""

from ssorl_data.cli.main import cli

cli()
