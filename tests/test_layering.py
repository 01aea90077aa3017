"""The package layering: stmae imports none of export/runtime/train/demo; nothing imports
train or demo; runtime does not import export (it only reads export manifests); demo sits
on top (it uses export and runtime)."""

from __future__ import annotations

import ast
import sys
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
    probe.write_text("import os\nfrom train.loop import x\nif True:\n    import runtime.engine.session\n")
    assert imported_top_levels(probe) == {"os", "train", "runtime"}


def test_demo_lives_above_export_and_runtime():
    """The demo is its own package that uses export and runtime (not a part of export)."""
    assert not (ROOT / "export" / "demo").exists()
    used = set().union(*(imported_top_levels(p) for p in (ROOT / "demo").rglob("*.py")))
    assert {"export", "runtime"} <= used


PACKAGES = ("stmae", "runtime", "export", "train", "demo")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_edges() -> dict[str, set[str]]:
    """{module: modules of ours it imports}, counting every import statement in the file
    (module level or inside a function), resolved to a module file where there is one."""
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                candidates = [f"{module}.{alias.name}" for alias in node.names] + [module]
            else:
                continue
            for candidate in candidates:
                if candidate in files:
                    targets.add(candidate)
                    break
        edges[name] = targets - {name}
    return edges


def test_no_module_imports_a_module_that_imports_it():
    """Two modules that import each other (even lazily, inside a function) are one module
    cut in two: what both need belongs in a third."""
    edges = import_edges()
    circles = sorted({tuple(sorted((a, b))) for a, targets in edges.items() for b in targets if a in edges.get(b, ())})
    assert not circles, f"modules that import each other: {circles}"


def test_circle_check_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "runtime"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .b import g\n")
    (pkg / "b.py").write_text("from runtime.a import f\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    edges = import_edges()
    assert edges["runtime.a"] == {"runtime.b"} and edges["runtime.b"] == {"runtime.a"}
