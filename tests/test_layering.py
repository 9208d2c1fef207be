"""The data package never depends on the training package: training builds on data."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.imports import imported_modules

ROOT = Path(__file__).resolve().parents[1]


def _training_imports(path: Path) -> list[str]:
    """`file:line name` for every import of ssorl_train in `path`, lazy ones included, and
    every string that names a ssorl_train module (as importlib would import it)."""
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return [
        f"{where}:{line} {name}"
        for line, name in imported_modules(path, strings_with_prefix="ssorl_train.")
        if name.split(".")[0] == "ssorl_train"
    ]


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
