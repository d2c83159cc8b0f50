"""Lint, format and strict typing are part of the test suite; so is the README's promise to CI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def tool(name: str) -> str:
    found = Path(sys.executable).parent / name
    if found.exists():
        return str(found)
    which = shutil.which(name)
    if which is None:
        pytest.fail(f"{name} is not installed: install the test extra (pip install -e '.[test]')")
    return which


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "geode_mpi", "tests", "benchmarks", "jobs"],
        ["ruff", "format", "--check", "geode_mpi", "tests", "benchmarks", "jobs"],
        ["mypy"],
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict"],
)
def test_code_quality(command: list[str]) -> None:
    result = subprocess.run(
        [tool(command[0]), *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_runs_the_readme_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    for command in ("./dev python jobs/hello.py", "./dev test"):
        assert command in readme and command in ci
    dev = (ROOT / "dev").read_text()
    assert "pip install -e '.[test]'" in readme and "pip install -e '.[test]'" in dev


def test_changes_is_one_list_under_its_headings() -> None:
    """CHANGES.md: headings are `# Changes`, `## version` and `### part`, every other
    non-blank line an entry (`- `) or its continuation (indented two spaces): a merge or a
    script that inserts text in the wrong place shows here (once, an entry inserted before
    every character grew the file to 628,860 lines)."""
    lines = (ROOT / "CHANGES.md").read_text().splitlines()
    assert lines[0] == "# Changes"
    bad = [
        (number, line)
        for number, line in enumerate(lines[1:], 2)
        if line and not line.startswith(("## ", "### ", "- ", "  "))
    ]
    assert not bad, f"CHANGES.md lines out of shape (first 5): {bad[:5]}"
