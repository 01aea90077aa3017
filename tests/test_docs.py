"""The user docs hold together: README.md fits on a page and speaks to users, every link and
file path README.md and docs/*.md name exists, every section a console script's --help
points to exists, and what --help says about mask value 255 is what the code does."""

from __future__ import annotations

import contextlib
import importlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]
from tests.test_cli_help import SCRIPTS  # console script -> (module, function), as pyproject.toml lists them
HELP_ARGV = {script: [["--help"]] for script in SCRIPTS}
HELP_ARGV["stmae-train"] += [["export-weights", "--help"], ["average-weights", "--help"]]
HELP_ARGV["stmae-serve"] += [["client", "--help"]]
# The tool pages the README and the docs index must link to.
TOOL_PAGES = ["segment", "eval", "export", "bench", "train", "live", "demo", "corpus",
              "design", "benchmarks", "reliability"]
# Words of a lab notebook, not of a user manual.
HISTORY = [r"\bissues? #?\d+", r"\bused to\b", r"\bearlier runs?\b", r"\bprevious session\b",
           r"\b(this|first|second|third|earlier|previous) session\b", r"\bnot yet rerun\b",
           r"\bno GPU number exists\b", r"\brule weights\b", r"\bthe contract\b", r"\bcontract's\b",
           r"\bwas \d+ and \d+\b", r"\bwere \d+ and \d+\b", r"\bnow (the )?default\b"]
# First path components that name something in the repository.
REPO_ROOTS = ("stmae", "runtime", "export", "train", "demo", "tests", "benchmarks", "weights", "docs", ".ci")
PATH_RE = re.compile(r"(?<![\w./<$-])((?:%s)/[\w./-]*)" % "|".join(re.escape(r) for r in REPO_ROOTS))
LINK_RE = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def slug(heading: str) -> str:
    """GitHub's anchor for a markdown heading."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    in_code = False
    for line in _text(path).splitlines():
        if line.startswith("```"):
            in_code = not in_code
        match = None if in_code else re.match(r"#{1,6}\s+(.*)", line)
        if match:
            base = slug(match.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def headings(path: Path) -> set[str]:
    in_code, out = False, set()
    for line in _text(path).splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (match := re.match(r"#{1,6}\s+(.*)", line)):
            out.add(match.group(1).strip())
    return out


def run_help(script: str, argv: list[str]) -> str:
    module, function = SCRIPTS[script]
    main = getattr(importlib.import_module(module), function)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0, (script, argv, exit_info.value.code)
    return " ".join(out.getvalue().split())  # argparse wraps lines; compare whitespace-free


def all_help() -> dict[str, str]:
    return {f"{s} {' '.join(a)}": run_help(s, a) for s, argvs in HELP_ARGV.items() for a in argvs}


# (a) ---------------------------------------------------------------------------------------

def test_readme_fits_on_a_page():
    lines = _text(ROOT / "README.md").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; the reference belongs in docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_pages_speak_to_users_not_of_the_work_history(page):
    text = _text(page)
    found = [m.group(0) for pattern in HISTORY for m in re.finditer(pattern, text, flags=re.I)]
    assert not found, f"{page.relative_to(ROOT)} reads like a lab notebook: {found}"


def test_readme_links_every_tool_page():
    readme = _text(ROOT / "README.md")
    missing = [name for name in TOOL_PAGES if f"docs/{name}.md" not in readme]
    assert not missing, f"README.md does not link docs/{{{','.join(missing)}}}.md"


def test_readme_keeps_the_ci_commands():
    """.ci/run installs and tests exactly as the README says."""
    ci = _text(ROOT / ".ci" / "run")
    readme = _text(ROOT / "README.md")
    install = ('python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[dev]" && '
               "pip install --no-deps vos-benchmark==0.1.0")
    assert install in readme and "python -m pytest -q\n" in readme
    assert 'pip install -e ".[dev]" && python -m pip install --no-deps vos-benchmark==0.1.0' in ci
    assert ci.rstrip().endswith("python -m pytest -q")


# (b) ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_of_a_page_exists(page):
    broken = []
    for target in LINK_RE.findall(_text(page)):
        if re.match(r"[a-z]+:", target):  # http(s):, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no section #{anchor} in {dest.relative_to(ROOT)})")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_repository_path_a_page_names_exists(page):
    missing = []
    for raw in PATH_RE.findall(_text(page)):
        path = raw.split("::", 1)[0].rstrip(".,:;")
        if not (ROOT / path).exists():
            missing.append(path)
    assert not missing, f"{page.relative_to(ROOT)} names paths that do not exist: {sorted(set(missing))}"


def test_the_path_checks_would_catch_a_stale_path(tmp_path):
    """The checks above see both kinds of mention (guards against a regex that finds nothing)."""
    text = "see `runtime/mask_io.py` and [docs](docs/nowhere.md), [x](eval.md#no-such-part)"
    assert PATH_RE.findall(text) == ["runtime/mask_io.py", "docs/nowhere.md"]
    assert LINK_RE.findall(text) == ["docs/nowhere.md", "eval.md#no-such-part"]
    assert not (ROOT / "runtime/mask_io.py").exists()
    assert "no-such-part" not in anchors(ROOT / "docs" / "eval.md")
    assert slug("The readout: fp16/bf16 keys") == "the-readout-fp16bf16-keys"


# (c) ---------------------------------------------------------------------------------------

def test_every_section_a_help_text_names_exists():
    readme_headings = headings(ROOT / "README.md")
    wrong = []
    for name, text in all_help().items():
        for page, anchor in re.findall(r"\b(docs/[\w-]+\.md)(?:#([\w-]+))?", text):
            if not (ROOT / page).is_file():
                wrong.append(f"{name}: {page} does not exist")
            elif anchor and anchor not in anchors(ROOT / page):
                wrong.append(f"{name}: {page} has no section #{anchor}")
        for section in re.findall(r"README[^'\"]{0,20}['\"]([^'\"]+)['\"]", text):
            if section not in readme_headings:
                wrong.append(f"{name}: README.md has no section {section!r}")
        if "README" in text and not re.search(r"README[^'\"]{0,20}['\"]", text):
            wrong.append(f"{name}: names README.md without saying which section")
    assert not wrong, wrong


def test_the_corpus_options_point_to_the_corpus_page():
    for script in ("stmae-segment", "stmae-eval"):
        assert "docs/corpus.md" in run_help(script, ["--help"]), script


# (d) ---------------------------------------------------------------------------------------

def _palette_png(path: Path, labels: np.ndarray) -> None:
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    img.save(path)


def test_help_says_what_the_code_does_with_mask_value_255(tmp_path):
    from runtime.io.mask_io import read_mask, without_void
    from runtime.segment_video import labels_present

    # A palette mask: object 1 and a band of 255.
    labels = np.zeros((16, 16), np.uint8)
    labels[2:8, 2:8] = 1
    labels[10:14, :] = 255
    _palette_png(tmp_path / "void.png", labels)
    read, _ = read_mask(tmp_path / "void.png")
    assert 255 in read  # read as it is ...
    tracked = without_void(read)
    assert 255 not in tracked and (tracked[10:14] == 0).all()  # ... and tracked as background
    assert labels_present(read) == [1]  # never an object
    # A greyscale mask holding only 0 and 255 (DAVIS 2016): one object, label 1.
    binary = np.where(labels == 1, 255, 0).astype(np.uint8)
    Image.fromarray(binary, mode="L").save(tmp_path / "binary.png")
    assert sorted(np.unique(read_mask(tmp_path / "binary.png")[0])) == [0, 1]

    texts = {name: text for name, text in all_help().items() if "255" in text}
    assert "stmae-segment --help" in texts  # --mask says what a label is
    for name, text in texts.items():
        assert not re.search(r"1\s*\.\.\s*255\s*=?\s*objects?", text), f"{name} calls 255 an object"
        assert re.search(r"255 = void", text), f"{name} mentions 255 without saying it is void"
        assert "0/255" in text, f"{name} does not say a greyscale 0/255 mask is one object"
    for page in (ROOT / "README.md", ROOT / "docs" / "segment.md"):
        text = " ".join(_text(page).split())
        assert re.search(r"255 (is|=) \**void", text), f"{page.name} does not say 255 is void"
