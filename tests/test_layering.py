"""The package layering: stmae imports none of export/runtime/train/demo; nothing imports
train or demo; runtime does not import export (it only reads export manifests); demo sits
on top (it uses export and runtime)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "stmae": {"export", "runtime", "train", "demo"},
    "runtime": {"export", "train", "demo"},
    "export": {"train", "demo"},
    "train": {"demo"},
    "demo": {"train"},
}


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_layering(package):
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = imported_top_levels(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not offenders, "\n".join(offenders)


def test_checker_sees_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nfrom train.loop import x\nif True:\n    import runtime.session\n")
    assert imported_top_levels(probe) == {"os", "train", "runtime"}


def test_demo_lives_above_export_and_runtime():
    """The demo is its own package that uses export and runtime (not a part of export)."""
    assert not (ROOT / "export" / "demo").exists()
    used = set().union(*(imported_top_levels(p) for p in (ROOT / "demo").rglob("*.py")))
    assert {"export", "runtime"} <= used
