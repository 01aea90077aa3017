"""README examples run as written (at CI size) and give masks a user would accept.

The ``stmae-segment`` and ``stmae-eval`` examples are read from README.md's code blocks and
run with their flags unchanged; only the output folder is moved into a temp folder, the
input is cut to its first frames, and ``stmae-eval`` gets ``--max-frames``. They read the
shared DAVIS data (``../shared/data/DAVIS2016`` as the README writes it) and skip without it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import davis_root

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 12


def readme_commands(program: str) -> list[list[str]]:
    """Every ``program ...`` command of README.md's bash blocks, continuation lines joined."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith(program + " ") and "weights/stmae_lite_davis240_v4.pth" in line:
                commands.append(shlex.split(line))
    return commands


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    module, function = {"stmae-segment": ("runtime.cli", "segment_main"), "stmae-eval": ("runtime.cli", "eval_main")}[argv[0]]
    code = f"import sys; from {module} import {function} as f; sys.exit(f(sys.argv[1:]))"
    # As a user runs them: the default backend (the suite pins torch elsewhere; see tests/conftest.py),
    # with the test session's export cache.
    env = {k: v for k, v in os.environ.items() if k != "STMAE_BACKEND"}
    return subprocess.run([sys.executable, "-c", code, *argv[1:]], capture_output=True, text=True, cwd=ROOT,
                          timeout=900, env=env)


def _replace(argv: list[str], flag: str, value: str) -> list[str]:
    out = list(argv)
    out[out.index(flag) + 1] = value
    return out


@pytest.fixture(scope="module")
def davis_data():
    if not (davis_root() / "JPEGImages" / "480p").is_dir():
        pytest.skip(f"the README examples read the shared DAVIS data, not found at {davis_root()}")
    if (ROOT.parent / "shared").resolve() != davis_root().parents[1].resolve():
        pytest.skip("the README examples use ../shared; STMAE_SHARED_DIR points elsewhere")


def test_segment_example_gives_good_masks_at_its_default_size(davis_data, tmp_path):
    from runtime.io.mask_io import read_mask

    # The section's first example: DAVIS bear at 480p with an overlay.
    argv = [c for c in readme_commands("stmae-segment") if "--overlay" in c and "JPEGImages/480p/bear" in " ".join(c)][0]
    source = ROOT / argv[argv.index("--input") + 1]
    cut = tmp_path / source.name
    cut.mkdir()
    for path in sorted(source.iterdir())[:FRAMES]:
        shutil.copy(path, cut / path.name)
    argv = _replace(_replace(_replace(argv, "--input", str(cut)), "--out", str(tmp_path / "out")),
                    "--overlay", str(tmp_path / "overlay.mp4"))
    done = _run(argv)
    assert done.returncode == 0, done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    assert re.match(rf"{FRAMES} frames, 1 object, backend onnxruntime \(cached fp32 export, (made now|reused)\), "
                    rf"size 240 \(auto: the checkpoint's own\), ", summary), summary
    truth_dir = ROOT / argv[argv.index("--mask") + 1]
    ious = []
    for path in sorted(cut.iterdir())[1:]:
        pred = read_mask(tmp_path / "out" / f"{path.stem}.png")[0] > 0
        truth = read_mask(truth_dir.parent / f"{path.stem}.png")[0] > 0
        ious.append((pred & truth).sum() / max((pred | truth).sum(), 1))
    print(f"README stmae-segment example, first {FRAMES} frames: mean IoU {np.mean(ious):.3f}")
    assert np.mean(ious) >= 0.6


def test_eval_example_defaults_equal_the_best_flags(davis_data, tmp_path):
    (argv,) = readme_commands("stmae-eval")
    assert "--resolution" not in argv and "--size" not in argv  # the example uses the defaults
    default = _run(_replace(argv, "--out", str(tmp_path / "a")) + ["--max-frames", "8", "--quiet"])
    best = _run(_replace(argv, "--out", str(tmp_path / "b")) + ["--resolution", "240p", "--size", "-1",
                                                                 "--max-frames", "8", "--quiet"])
    assert default.returncode == 0 and best.returncode == 0, default.stderr + best.stderr
    assert "resolution 240p, size 240 (auto: the checkpoint's own)" in default.stdout
    last = default.stdout.strip().splitlines()[-1]
    assert last.startswith("J&F ") and last == best.stdout.strip().splitlines()[-1], (last, best.stdout)


# Every command of README.md and docs/*.md parses with its console script's current flags.
# The commands are parsed in-process, not run: argparse's parse_args is stopped right after
# it succeeds, so a renamed or removed flag, or a misspelt one in the docs, fails here.

from tests.test_cli_help import SCRIPTS  # console script -> (module, function), as pyproject.toml lists them
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def page_commands(page: Path) -> list[list[str]]:
    """Every ``stmae-*`` command of a page's bash blocks, continuation lines joined, comments
    dropped, and shell variables the block sets (``VAR=value``) substituted."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S):
        variables: dict[str, str] = {}
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.split(" #", 1)[0].strip()
            if assignment := re.fullmatch(r"([A-Z_]+)=(\S+)", line):
                variables[assignment.group(1)] = assignment.group(2)
                continue
            for name, value in variables.items():
                line = line.replace(f"${name}", value)
            if line.split(" ", 1)[0] in SCRIPTS:
                commands.append(shlex.split(line))
    return commands


class _Parsed(BaseException):
    """Raised by the patched parse_args with the parsed namespace (a BaseException, so that
    no ``except Exception`` of a command body takes it)."""

    def __init__(self, namespace):
        super().__init__()
        self.namespace = namespace


def parse_only(argv: list[str], monkeypatch) -> object:
    """The namespace ``argv``'s console script parses it into, without running the command;
    fails with argparse's message when a flag is unknown or a value is refused."""
    import argparse
    import contextlib
    import importlib
    import io

    original = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    module, function = SCRIPTS[argv[0]]
    main = getattr(importlib.import_module(module), function)
    errors = io.StringIO()
    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
        try:
            with contextlib.redirect_stderr(errors):
                main(argv[1:])
        except _Parsed as parsed:
            return parsed.namespace
        except SystemExit as exc:
            pytest.fail(f"{shlex.join(argv)}: exit {exc.code}: {errors.getvalue().strip()}")
    pytest.fail(f"{shlex.join(argv)}: the command never parsed its arguments")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_of_a_page_parses(page, monkeypatch):
    for argv in page_commands(page):
        parse_only(argv, monkeypatch)


def test_a_wrong_flag_is_caught(monkeypatch):
    """parse_only fails on a flag the script does not have (the test above can fail)."""
    with pytest.raises(pytest.fail.Exception, match="unrecognized arguments: --no-such-flag"):
        parse_only(["stmae-segment", "--input", "x", "--no-such-flag"], monkeypatch)


def test_readme_shows_every_tool_and_writes_under_runs(monkeypatch):
    commands = page_commands(ROOT / "README.md")
    assert set(SCRIPTS) <= {argv[0] for argv in commands}, sorted({argv[0] for argv in commands})
    for argv in commands:
        for flag in ("--out", "--overlay", "--output"):
            if flag in argv:
                value = argv[argv.index(flag) + 1]
                assert value.startswith("runs/"), f"{shlex.join(argv)}: {flag} {value} is not under runs/"


def test_the_demo_folder_the_docs_name_is_the_demos_default(monkeypatch):
    default = parse_only(["stmae-demo"], monkeypatch).out
    # The demo writes under runs/, which .gitignore covers, like the README's examples.
    assert default.startswith("runs/"), default
    assert "/runs/" in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    for page in (ROOT / "README.md", ROOT / "docs" / "demo.md"):
        text = page.read_text(encoding="utf-8")
        assert f"`{default}/`" in text, f"{page.name} does not name {default}/"
        printed = re.findall(r"^(?:masks|overlay video|contact sheet|report):\s+(\S+)", text, flags=re.M)
        assert printed and all(p.startswith(f"{default}/") for p in printed), (page.name, printed)
