"""The `ssorl` command's root and its training-side commands (`train`, `eval`, `run`,
`quickstart`); the data-side groups live in `ssorl_data.cli`. Each command is a thin
wrapper over a documented Python function."""
