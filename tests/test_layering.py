"""The data package never depends on the training package: training builds on data."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _training_imports(path: Path) -> list[str]:
    """`file:line name` for every import of ssorl_train in `path`, lazy ones included, and
    every string that names a ssorl_train module (as importlib would import it)."""
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value] if node.value.startswith("ssorl_train.") else []
        found += [
            f"{where}:{node.lineno} {name}"
            for name in names
            if name == "ssorl_train" or name.startswith("ssorl_train.")
        ]
    return found


def test_the_data_package_never_imports_the_training_package() -> None:
    violations = [v for path in sorted((ROOT / "ssorl_data").rglob("*.py")) for v in
                  _training_imports(path)]  # fmt: skip
    assert violations == [], "ssorl_data must not import ssorl_train:\n" + "\n".join(violations)


@pytest.mark.parametrize(
    "source",
    [
        "import ssorl_train.loop\n",
        "def f():\n    from ssorl_train.pipeline import run_pipeline\n",
        "COMMANDS = {'train': 'ssorl_train.cli.train:train'}\n",
    ],
)
def test_the_layering_check_sees_every_kind_of_import(tmp_path, source) -> None:
    path = tmp_path / "probe.py"
    path.write_text(source)
    assert _training_imports(path), f"missed: {source!r}"


def test_every_package_folder_says_what_it_is() -> None:
    for init in sorted([*(ROOT / "ssorl_data").rglob("__init__.py"),
                        *(ROOT / "ssorl_train").rglob("__init__.py")]):  # fmt: skip
        docstring = ast.get_docstring(ast.parse(init.read_text()))
        assert docstring, f"{init.relative_to(ROOT)} has no docstring saying what the folder is"
