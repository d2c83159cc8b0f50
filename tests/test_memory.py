"""Memory per rank: a Geode over raw mpi4py, agreement by digest, open/close cycles (issue 15).

Each test launches tests/scripts/memory_probe.py, whose rank 0 prints the maxima over ranks.
Measured before the change (4 ranks): a Geode 36.6 MB over raw mpi4py (h5py loaded at import),
20,000 named nodes +29.0 MB of peak memory (the allgather of every rank's settings text).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from mpirun import clean_env, mpirun

pytestmark = pytest.mark.mpi

PROBE = "tests/scripts/memory_probe.py"


def probe(ranks: int, *args: str, **env: str) -> dict[str, Any]:
    result = mpirun(ranks, [PROBE, *args], timeout=180, env=clean_env(**env))
    assert result.returncode == 0, result.explain()
    parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


def test_a_geode_adds_little_memory_to_raw_mpi4py_and_loads_no_h5py() -> None:
    """numpy (about 14 MB), the package's modules and hashlib's OpenSSL make most of it."""
    raw = probe(2, "raw")["resident"]
    geode = probe(2, "geode")
    assert geode["h5py"] is False  # loaded only by a checkpoint or a restart
    assert geode["resident"] - raw < 30, (raw, geode)


def test_twenty_thousand_named_nodes_agree_without_gathering_their_names() -> None:
    """Every rank's settings text (2.6 MB here) is compared by digest, never gathered."""
    assert probe(4, "nodes", "20000")["peak_growth"] < 18


def test_memory_stays_flat_over_open_close_cycles() -> None:
    """After the allocators' first growth, cycles add nothing (a leaked Geode, with its
    buffers, engine and queues, would); the hang watchdog's communicator is freed too."""
    cycles = probe(4, "cycles", "14", GEODE_HANG_TIMEOUT="60")["cycles"]
    assert cycles[-1] - cycles[6] < 1.0, cycles
