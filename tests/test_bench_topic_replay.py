"""benchmarks/topic_replay.py's smoke test: one process, its table and its JSON rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_replay_counts_one_member_tuple_per_topic(tmp_path: Path) -> None:
    out = tmp_path / "replay.json"
    script = ROOT / "benchmarks" / "topic_replay.py"
    command = [sys.executable, str(script), "--ranks", "4", "40", "--repeat", "1"]
    result = subprocess.run(
        [*command, "--json", str(out)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    header = "ranks held MiB peak MiB entries CPU s"
    assert result.stdout.splitlines()[0].split() == header.split()
    rows = json.loads(out.read_text())
    assert [row["ranks"] for row in rows] == [4, 40]
    # rank 0 sends on its node's stream to the 39 others: one tuple (before: 40 x 39)
    assert [row["member_entries_per_topic"] for row in rows] == [3, 39]
    assert all(row["held_mib"] > 0 and row["seconds"] >= 0 for row in rows)
