"""Every ```python block in README.md and docs/*.md is a program that runs in both worlds.

Each block runs alone, in a fresh ``python`` process, in an empty directory, without any MPI
launcher variables, so it sees what a newcomer typing ``python example.py`` sees: one process
hosting the nodes node0..node3. Then the same block runs unchanged under
``mpiexec -n 4 python -m geode_mpi example.py`` (the same nodes, one per rank), and at 2 ranks
when it names no node beyond node1. A block fenced as ```python no-run is a fragment and is
skipped; one fenced as ```python embedded-only (the README's original first example, written
for one process) runs only in the embedded world.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from mpirun import mpirun

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
TIMEOUT = 60
# Set by MPI launchers (and our own override): a block must never believe it is an MPI rank.
LAUNCH_PREFIXES = ("PMI_", "PMIX_", "OMPI_", "MPI_LOCAL", "HYDI_", "HYDRA_", "GEODE_TRANSPORT")
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*?)\s*$")
LINK = re.compile(r"\]\((?P<target>[^)#\s]*)(?:#(?P<anchor>[^)\s]*))?\)")
HEADING = re.compile(r"^#{1,6}\s+(?P<title>.+?)\s*#*\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it starts, its info string words, its text."""

    page: Path
    line: int
    info: tuple[str, ...]
    code: str
    closed: bool

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def fenced_blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, in order (CommonMark fence rules, simplified)."""
    blocks = []
    lines = page.read_text(encoding="utf-8").splitlines()
    k = 0
    while k < len(lines):
        opening = FENCE.match(lines[k])
        if opening is None:
            k += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        body = []
        j = k + 1
        while j < len(lines):
            closing = FENCE.match(lines[j])
            if (
                closing is not None
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"]
            ):
                break
            body.append(lines[j][indent:] if lines[j][:indent].isspace() else lines[j])
            j += 1
        info = tuple(opening["info"].split())
        blocks.append(Block(page, k + 1, info, "\n".join(body) + "\n", j < len(lines)))
        k = j + 1
    return blocks


def runnable(blocks: list[Block]) -> list[Block]:
    return [b for b in blocks if b.info[:1] == ("python",) and "no-run" not in b.info]


BLOCKS = [block for page in PAGES if page.exists() for block in fenced_blocks(page)]
EXAMPLES = runnable(BLOCKS)
BEYOND_NODE1 = re.compile(r"\bnode(?:[2-9]|[1-9]\d+)\b")


def runs_at(block: Block, ranks: int) -> bool:
    """Whether the block runs under mpiexec at ``ranks`` ranks (both worlds have node0..node3
    at 4; at 2 only blocks that name no node beyond node1)."""
    if "embedded-only" in block.info:
        return False
    return ranks == 4 or BEYOND_NODE1.search(block.code) is None


MPI_CASES = [
    pytest.param(block, ranks, id=f"{block.where}@{ranks}")
    for ranks in (4, 2)
    for block in EXAMPLES
    if runs_at(block, ranks)
]


def embedded_env() -> dict[str, str]:
    """This environment minus launcher variables, importing geode_mpi from this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCH_PREFIXES)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _text(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


@pytest.mark.parametrize("block", EXAMPLES, ids=[block.where for block in EXAMPLES])
def test_example_runs(block: Block, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(block.code, encoding="utf-8")
    try:
        result = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=embedded_env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"{block.where}: still running after {TIMEOUT} s\n"
            f"--- stdout ---\n{_text(exc.stdout)}\n--- stderr ---\n{_text(exc.stderr)}"
        )
    assert result.returncode == 0, (
        f"{block.where} exited with status {result.returncode}\n--- code ---\n{block.code}"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )


@pytest.mark.mpi
@pytest.mark.parametrize(("block", "ranks"), MPI_CASES)
def test_example_runs_unchanged_under_mpi(block: Block, ranks: int, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(block.code, encoding="utf-8")
    result = mpirun(ranks, ["-m", "geode_mpi", str(script)], timeout=TIMEOUT, cwd=tmp_path)
    assert result.returncode == 0 and not result.timed_out, (
        f"{block.where} at {ranks} ranks: {result.explain()}\n--- code ---\n{block.code}"
    )


def test_only_the_original_first_example_is_embedded_only() -> None:
    only = [block for block in EXAMPLES if "embedded-only" in block.info]
    assert [block.page.name for block in only] == ["README.md"]
    assert only[0] is EXAMPLES[0] and 'geode.receive("node2")' in only[0].code


def test_every_docs_page_has_a_runnable_example() -> None:
    pages = {page for page in PAGES if page.parent.name == "docs"}
    assert pages, "no docs/*.md pages found"
    without = pages - {block.page for block in EXAMPLES}
    assert not without, f"pages without a runnable example: {sorted(p.name for p in without)}"


def test_fences_are_closed_and_labelled() -> None:
    unclosed = [block.where for block in BLOCKS if not block.closed]
    assert unclosed == [], f"code blocks never closed: {unclosed}"
    unlabelled = [block.where for block in BLOCKS if not block.info]
    assert unlabelled == [], f"code blocks without a language (python, bash, text): {unlabelled}"


def prose(page: Path) -> list[str]:
    """The lines of a page outside its fenced code blocks."""
    inside = {
        number
        for block in fenced_blocks(page)
        for number in range(block.line, block.line + block.code.count("\n") + 2)
    }
    lines = page.read_text(encoding="utf-8").splitlines()
    return [line for number, line in enumerate(lines, 1) if number not in inside]


def anchors(page: Path) -> set[str]:
    """The anchors GitHub makes for a page's headings: lowercase, punctuation dropped, dashes."""
    titles = [m["title"] for line in prose(page) if (m := HEADING.match(line))]
    return {re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-") for title in titles}


def test_links_between_docs_pages_resolve() -> None:
    broken = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        for line in prose(page):
            for link in LINK.finditer(line):
                target, anchor = link["target"], link["anchor"]
                if "://" in target or target.startswith("mailto:"):
                    continue
                linked = page.parent / target if target else page
                if not linked.exists():
                    broken.append(f"{page.relative_to(ROOT)} -> {target}")
                elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                    broken.append(f"{page.relative_to(ROOT)} -> {target}#{anchor}")
    assert broken == []
