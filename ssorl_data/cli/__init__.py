"""The `ssorl` command line: thin wrappers over documented Python functions."""
