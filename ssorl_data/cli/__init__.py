"""The data-side commands of `ssorl` (`data`, `doctor`, `idm`, `relabel`) and the error
boundary that every command shares; the root command lives in `ssorl_train.cli.main`.
Each command is a thin wrapper over a documented Python function."""
