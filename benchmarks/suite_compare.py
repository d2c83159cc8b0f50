"""Several suite runs side by side, one column each (one run per MPI): targets, then ratios.

Run as ``python benchmarks/suite_compare.py LABEL=DIR [LABEL=DIR ...] [--rows REGEX]``, each DIR
a folder that ``benchmarks/suite.py --out DIR`` wrote (its suite.json). Prints markdown: when
and where each run was made, every target's result per run, and every ratio per run. The
ratios are each run's own (geode against raw mpi4py on that MPI, in the same run), so columns
compare how close geode gets to each MPI, not the MPIs' speeds. See benchmarks/README.md,
"Other MPIs".
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from suite_report import cell, load_note, machine, markdown_table, short, when

Suite = dict[str, Any]
Columns = list[tuple[str, Suite]]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Print several benchmarks/suite.py runs side by side (markdown), one column "
        "per run: LABEL=DIR, DIR holding the suite.json that suite.py --out DIR wrote.",
    )
    parser.add_argument("runs", nargs="+", metavar="LABEL=DIR", help="a column: its label, folder")
    parser.add_argument(
        "--rows",
        default=None,
        metavar="REGEX",
        help="keep only the ratio rows whose 'benchmark row: column' label matches (re.search)",
    )
    args = parser.parse_args(argv)
    for run in args.runs:
        label, _, folder = run.partition("=")
        if not label or not (Path(folder) / "suite.json").is_file():
            parser.error(f"expected LABEL=DIR with DIR/suite.json, got {run!r}")
    return args


def load(runs: Sequence[str]) -> Columns:
    columns = []
    for run in runs:
        label, _, folder = run.partition("=")
        suite = json.loads((Path(folder) / "suite.json").read_text())
        env = suite.get("environment") or {}
        if "mpi_library" in env:  # Open MPI's runs on: "Open MPI v5.0.11, package: ...\0"
            env["mpi_library"] = str(env["mpi_library"]).replace("\0", "").split(",")[0]
        columns.append((label, suite))
    return columns


def collect(columns: Columns, cells: Any) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Row labels in first-seen order, and each row's cell per column label."""
    order: list[str] = []
    found: dict[str, dict[str, str]] = {}
    for label, suite in columns:
        for run in suite.get("runs", []):
            for row, text in cells(run):
                if row not in found:
                    order.append(row)
                    found[row] = {}
                found[row][label] = text
    return order, found


def target_cells(run: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (f"{t['benchmark']}: {short(t['target'])}", f"{t['result']} ({short(t['measured'])})")
        for t in run.get("targets") or []
    ]


def ratio_cells(run: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for table in (run.get("ratios") or {}).values():
        for row, values in table["rows"].items():
            for column, value in values.items():
                if value is not None:
                    out.append((f"{run['name']} {row}: {column}", cell(value, table["unit"])))
    return out


def compare_markdown(columns: Columns, rows: str | None = None) -> str:
    labels = [label for label, _ in columns]
    lines = ["Runs:", ""]
    for label, suite in columns:
        lines.append(f"- {label}: {when(suite)}, {machine(suite, compact=True)}{load_note(suite)}")
    for title, cells, keep in (("Targets", target_cells, None), ("Ratios", ratio_cells, rows)):
        order, found = collect(columns, cells)
        order = [row for row in order if keep is None or re.search(keep, row)]
        table = [[row, *(found[row].get(label, "-") for label in labels)] for row in order]
        lines += ["", f"{title}:", "", *markdown_table(["", *labels], table)]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(compare_markdown(load(args.runs), args.rows), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
