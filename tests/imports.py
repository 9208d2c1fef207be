"""What a source file imports, read from its syntax tree: the layering tests' one parser."""

from __future__ import annotations

import ast
from pathlib import Path


def imported_modules(path: Path, strings_with_prefix: str | None = None) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in `path`, lazy ones inside functions included;
    with `strings_with_prefix`, also every string constant that starts with it (a module
    named for importlib)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif (
            strings_with_prefix
            and isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.startswith(strings_with_prefix)
        ):
            found.append((node.lineno, node.value))
    return found
