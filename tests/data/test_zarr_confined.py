"""Only the store package imports zarr: everything else reads and writes through it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.imports import imported_modules

ROOT = Path(__file__).resolve().parents[2]
STORE = ROOT / "ssorl_data" / "store"


def _zarr_imports(path: Path) -> list[str]:
    """`file:line module` for every import of zarr in `path`, lazy ones included."""
    return [
        f"{path.name}:{line} {name}"
        for line, name in imported_modules(path)
        if name.split(".")[0] == "zarr"
    ]


def test_no_module_outside_the_store_package_imports_zarr() -> None:
    sources = [p for pkg in ("ssorl_data", "ssorl_train") for p in (ROOT / pkg).rglob("*.py")]
    outside = [p for p in sorted(sources) if not p.is_relative_to(STORE)]
    violations = [v for path in outside for v in _zarr_imports(path)]
    assert violations == [], "only ssorl_data/store may import zarr:\n" + "\n".join(violations)
    assert any(_zarr_imports(p) for p in STORE.glob("*.py")), "the check found no zarr at all"


@pytest.mark.parametrize(
    "source",
    ["import zarr\n", "def f():\n    from zarr.codecs import BloscCodec\n", "import zarr.api\n"],
)
def test_the_zarr_check_sees_every_kind_of_import(tmp_path, source) -> None:
    path = tmp_path / "probe.py"
    path.write_text(source)
    assert _zarr_imports(path)
