"""The manual (docs/*.md) and README.md: every example runs, every link resolves, the README stays short.

The examples' convention (docs/development.md, "The manual"):

- a fenced ``bash`` block is a list of shell commands (a line ending in ``\\`` continues on the next), run in order
  by bash in a fresh folder holding ``sample_models/``, ``sample_images/`` and ``docs/examples/`` as in the
  repository, with ``occlude`` on the PATH being this checkout's command. Each must exit 0 unless its trailing
  comment starts with ``# exit N``; one that exits non-zero must say why on stderr (an ``error:`` line, or a
  failed check's ``fail:`` line), and none may print a traceback. A leading ``pip install ... &&`` is not run;
- the ``python`` blocks of a page run in order in one interpreter, in such a folder, as one session;
- a block preceded by ``<!-- skip-example: REASON -->`` is reported as skipped with that reason, and the block
  after README's ``<!-- test-command -->`` marker (the test suite itself) likewise.

Identical blocks (the README repeats the manual's quickstart and tour) run once, under their first place.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = [README, *sorted(DOCS.glob("*.md"))]

FENCE = re.compile(r"^(`{3,})\s*([^`\s]*)")
SKIP_MARKER = re.compile(r"^<!--\s*skip-example:\s*(.+?)\s*-->\s*$")
TEST_COMMAND_MARKER = "<!-- test-command -->"
EXPECTED_EXIT = re.compile(r"(?:^|\s)#\s*exit\s+(\d+)\b")
PIP_PREFIX = re.compile(r"^pip install\s[^&]*&&\s*")
RUN_LANGUAGES = ("bash", "python")


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository root
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    skip: Optional[str]

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def read_blocks(page: Path) -> List[Block]:
    """Every fenced block of a Markdown page, with the skip reason its marker gives."""
    blocks: List[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    rel = page.relative_to(ROOT).as_posix()
    i = 0
    previous = ""  # the last non-blank line before the current one
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            if lines[i].strip():
                previous = lines[i].strip()
            i += 1
            continue
        fence, language = opening.groups()
        body: List[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].startswith(fence):
            body.append(lines[j])
            j += 1
        assert j < len(lines), f"{rel}:{i + 1}: a fenced block that is never closed"
        skip = None
        marker = SKIP_MARKER.match(previous)
        if marker:
            skip = marker.group(1)
        elif previous == TEST_COMMAND_MARKER:
            skip = "the test command itself (CI runs it: .ci/run)"
        blocks.append(Block(rel, i + 1, language, "\n".join(body) + "\n", skip))
        previous = lines[j]
        i = j + 1
    return blocks


def shell_commands(block: Block) -> List[Tuple[str, int]]:
    """A bash block's commands, each with the exit code its trailing comment documents (default 0)."""
    commands: List[Tuple[str, int]] = []
    pending = ""
    for raw in block.text.splitlines():
        line = pending + raw
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1] + " "
            continue
        pending = ""
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("pip install"):
            rest = PIP_PREFIX.sub("", stripped)
            assert rest != stripped, (
                f"{block.where}: an example that only installs packages; write it in the prose or mark the block "
                "with <!-- skip-example: REASON -->"
            )
            stripped = rest
        expected = EXPECTED_EXIT.search(stripped)
        commands.append((stripped, int(expected.group(1)) if expected else 0))
    assert not pending, f"{block.where}: the last line continues (ends in a backslash)"
    return commands


def collect() -> Tuple[List[Block], List[Tuple[str, List[Block]]], List[Block]]:
    """(bash blocks to run, python sessions per page, skipped blocks); identical bash blocks once."""
    shell: List[Block] = []
    seen: Dict[str, Block] = {}
    sessions: List[Tuple[str, List[Block]]] = []
    skipped: List[Block] = []
    for page in PAGES:
        python: List[Block] = []
        for block in read_blocks(page):
            if block.language not in RUN_LANGUAGES:
                continue
            if block.skip is not None:
                skipped.append(block)
            elif block.language == "python":
                python.append(block)
            elif block.text not in seen:
                seen[block.text] = block
                shell.append(block)
        if python:
            sessions.append((page.relative_to(ROOT).as_posix(), python))
    return shell, sessions, skipped


SHELL_BLOCKS, PYTHON_SESSIONS, SKIPPED_BLOCKS = collect()


@pytest.fixture
def example_folder(tmp_path) -> Tuple[Path, Dict[str, str]]:
    """A fresh working folder laid out like the repository's root for the examples, and their environment:
    ``occlude`` is this checkout's command (the interpreter running the tests, with this checkout first)."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "sample_models").symlink_to(ROOT / "sample_models", target_is_directory=True)
    shutil.copytree(ROOT / "sample_images", work / "sample_images")  # examples never write into the repository
    shutil.copytree(DOCS / "examples", work / "docs" / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "occlude"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m occlude_cli "$@"\n')
    shim.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["COLUMNS"] = "120"
    return work, env


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.splitlines()[-lines:])


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=[b.where for b in SHELL_BLOCKS])
def test_shell_example(block: Block, example_folder):
    """Each command of the block exits as documented, says why when it fails, and never shows a traceback."""
    work, env = example_folder
    commands = shell_commands(block)
    assert commands, f"{block.where}: a bash block without a command"
    if any(re.search(r"\|\s*jq\b", command) for command, _ in commands) and shutil.which("jq") is None:
        pytest.skip("jq is not installed")
    for command, expected in commands:
        done = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=600)
        said = f"{block.where}: `{command}`\n--- stdout\n{_tail(done.stdout)}\n--- stderr\n{_tail(done.stderr)}"
        assert done.returncode == expected, f"exit {done.returncode}, the manual says {expected}\n{said}"
        assert "Traceback" not in done.stderr + done.stdout, said
        if expected != 0:
            assert re.search(r"^(error|fail):", done.stderr, re.M), f"no error: or fail: line on stderr\n{said}"


@pytest.mark.parametrize("session", PYTHON_SESSIONS, ids=[page for page, _ in PYTHON_SESSIONS])
def test_python_examples(session, example_folder):
    """A page's python blocks run in order as one session in a fresh interpreter; an exception names the page
    and line it comes from."""
    page, blocks = session
    work, env = example_folder
    parts = ["namespace = {'__name__': '__main__'}"]
    for block in blocks:
        source = "\n" * block.line + block.text  # so that a traceback's line numbers are the page's
        parts.append(f"exec(compile({source!r}, {block.page!r}, 'exec'), namespace)")
    done = subprocess.run(
        [sys.executable, "-c", "\n".join(parts)], cwd=work, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{page}'s python examples failed:\n{_tail(done.stderr, 40)}"


@pytest.mark.parametrize("block", SKIPPED_BLOCKS, ids=[b.where for b in SKIPPED_BLOCKS])
def test_skipped_example(block: Block):
    """Listed so that every example not run shows up in the test report with its reason."""
    pytest.skip(f"{block.where}: {block.skip}")


def test_examples_found():
    """The collection itself works: the manual has runnable examples of every command, and few are skipped."""
    commands = [command for block in SHELL_BLOCKS for command, _ in shell_commands(block)]
    for name in ("run", "summary", "info", "compare", "check", "report", "layers", "bias", "stability"):
        assert any(re.search(rf"\bocclude {name}\b", c) for c in commands), f"no example runs occlude {name}"
    assert PYTHON_SESSIONS, "no python examples found"
    examples = len(SHELL_BLOCKS) + sum(len(blocks) for _, blocks in PYTHON_SESSIONS) + len(SKIPPED_BLOCKS)
    assert len(SKIPPED_BLOCKS) <= examples // 4, [b.where for b in SKIPPED_BLOCKS]


def test_readme_is_short():
    """The README is what a newcomer reads first; the reference lives in the manual."""
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < 250, len(lines)
    assert TEST_COMMAND_MARKER in lines


def test_readme_test_command_builds_the_manual():
    """CI runs the README's test command: it must install the docs extra and build the manual, warnings as
    errors, so a broken link or docstring fails CI."""
    blocks = read_blocks(README)
    command = next(b for b in blocks if b.skip and "test command" in b.skip).text
    assert ".[" in command and "docs" in re.search(r"\.\[([^\]]*)\]", command).group(1).split(",")
    assert re.search(r"python -m sphinx -W --keep-going .*-b html docs docs/_build/html", command)


# ---- links: relative links between README.md and the manual's pages resolve, anchors included --------------------

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """The anchor GitHub and MyST (myst_heading_anchors) give a heading."""
    text = re.sub(r"`([^`]*)`", r"\1", heading.strip()).lower().replace(" ", "-")
    return "".join(ch for ch in text if ch in "-_" or unicodedata.category(ch)[0] in "LN")


def anchors(page: Path) -> set:
    found, fence = set(), False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fence = not fence
        elif not fence and re.match(r"^#{1,6} ", line):
            found.add(slug(line.lstrip("#")))
    return found


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_links_resolve(page: Path):
    problems = []
    text = page.read_text(encoding="utf-8")
    body = re.sub(r"^(`{3,}).*?^\1", "", text, flags=re.S | re.M)  # links in code blocks are not links
    for target in LINK.findall(body):
        if re.match(r"^[a-z]+:", target):
            continue  # http:, mailto:
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            problems.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            problems.append(f"{target}: no such heading in {file.relative_to(ROOT)}")
    assert not problems, problems


def test_slug_matches_github():
    assert (
        slug("`occlude check`: does the model look where it should?")
        == "occlude-check-does-the-model-look-where-it-should"
    )
    assert slug("Score: what is explained") == "score-what-is-explained"
    assert slug("How faithful is another method's map? Infidelity, sufficiency, completeness") == (
        "how-faithful-is-another-methods-map-infidelity-sufficiency-completeness"
    )
