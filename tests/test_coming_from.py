"""docs/coming-from.md: every block runs as the page says, and prints the same sum.

The page's blocks for other libraries are fenced ```python no-run runner=NAME, so that
tests/test_docs.py (which runs every block as a geode_mpi job) leaves them to this file; each
NAME is a way to run a block, below. The geode_mpi blocks without ``no-run`` run here too (in
one process and under mpiexec -n 4), for their output; tests/test_docs.py runs them as well.
Every launch has a timeout and kills its process group when it runs out.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest
from mpirun import Result, clean_env, mpirun, python
from test_docs import Block, fenced_blocks

PAGE = Path(__file__).resolve().parent.parent / "docs" / "coming-from.md"
BLOCKS = [block for block in fenced_blocks(PAGE) if block.info[:1] == ("python",)]
ANSWER = "85344"  # sum(x * x for x in range(64))
# Ray's usage statistics would try to reach a server at the end of each run: none is reachable.
QUIET_RAY = {"RAY_USAGE_STATS_ENABLED": "0"}

Runner = Callable[[str], list[Result]]


def geode_both_worlds(script: str) -> list[Result]:
    return [
        python([script], timeout=60),
        mpirun(4, ["-m", "geode_mpi", script], timeout=60),
    ]


RUNNERS: dict[str, Runner] = {
    "mpi4py": lambda script: [mpirun(4, [script], timeout=60)],
    "mpi4py.futures": lambda script: [mpirun(4, ["-m", "mpi4py.futures", script], timeout=60)],
    "multiprocessing": lambda script: [python([script], timeout=60)],
    "dask": lambda script: [python([script], timeout=180)],
    "ray": lambda script: [python([script], timeout=300, env=clean_env(**QUIET_RAY))],
    "geode-executor": geode_both_worlds,
    "geode": geode_both_worlds,  # the blocks tests/test_docs.py runs too
}
NEEDS = {"dask": "distributed", "ray": "ray"}  # the module each peer's block imports


def runner_of(block: Block) -> str:
    """The block's ``runner=NAME``; "geode" for a block tests/test_docs.py runs."""
    named = [word.removeprefix("runner=") for word in block.info if word.startswith("runner=")]
    if "no-run" not in block.info:
        assert not named, f"{block.where}: runner= on a block test_docs.py runs"
        return "geode"
    assert len(named) == 1, f"{block.where}: a no-run block needs one runner=NAME, got {named}"
    return named[0]


def test_every_block_of_the_page_is_run() -> None:
    runners = [runner_of(block) for block in BLOCKS]
    assert set(runners) <= set(RUNNERS), f"unknown runners: {set(runners) - set(RUNNERS)}"
    assert set(runners) == set(RUNNERS), f"runners without a block: {set(RUNNERS) - set(runners)}"
    assert runners.count("geode") == 2  # the work queue and the pattern subscription


CASES = [
    pytest.param(
        block,
        id=f"{runner_of(block)}@{block.line}",
        marks=[
            pytest.mark.mpi,
            *([pytest.mark.slow] if runner_of(block) in NEEDS else []),
        ],
    )
    for block in BLOCKS
]


@pytest.mark.parametrize("block", CASES)
def test_block_prints_the_sum(block: Block, tmp_path: Path) -> None:
    runner = runner_of(block)
    module = NEEDS.get(runner)
    if module is not None:
        # Never skipped: the test extra installs Dask and Ray.
        assert importlib.util.find_spec(module) is not None, (
            f"{runner} is not installed: pip install -e '.[test]'"
        )
    script = tmp_path / "squares.py"
    script.write_text(block.code, encoding="utf-8")
    for result in RUNNERS[runner](str(script)):
        assert result.returncode == 0 and not result.timed_out, (
            f"{block.where} ({runner}): {result.explain()}"
        )
        want = "280.5" if "geode.subscribe" in block.code else ANSWER  # the one other block
        assert result.stdout.split() == [want], f"{block.where}: {result.explain()}"
