"""Imports flow one way: `cccmr_model` (plain PyTorch) never imports flwr, and the hospital's ClientApp (`client/`)
never imports the ServerApp (`server/`); both apps speak the message format of `cccmr_model.wire`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in `path`, lazy ones inside functions included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def offending(package: str, forbidden: str) -> list[str]:
    files = sorted((REPO_ROOT / package).rglob("*.py"))
    assert files, f"no Python files under {package}/"
    return [
        f"{path.relative_to(REPO_ROOT)}:{line}: {module}"
        for path in files
        for line, module in imported_modules(path)
        if module == forbidden or module.startswith(forbidden + ".")
    ]


@pytest.mark.parametrize(("package", "forbidden"), [("cccmr_model", "flwr"), ("client", "server")])
def test_package_never_imports(package: str, forbidden: str) -> None:
    assert offending(package, forbidden) == []


def test_the_scan_finds_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("import flwr.app\nfrom server.strategy import X\n\ndef f():\n    from flwr import app\n")
    assert [module for _, module in imported_modules(source)] == ["flwr.app", "server.strategy", "flwr"]
