"""Memory per rank: a Geode over raw mpi4py, agreement by digest, open/close cycles (issue 15).

Each test launches tests/scripts/memory_probe.py, whose rank 0 prints the maxima over ranks.
Measured before the change (4 ranks): a Geode 36.6 MB over raw mpi4py (h5py loaded at import),
20,000 named nodes +29.0 MB of peak memory (the allgather of every rank's settings text). Then
(2026-12-04, second round): a Geode passing dicts 19.4 MB over raw mpi4py at 4 ranks, 14-15 of
it numpy, once OpenSSL, shutil and socket loaded only with a checkpoint (docs/scaling.md). Third
round, numpy imported on first use: 7.7 MB at 4 ranks, 8.4-11.5 at 64 (memory_compare.py).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from mpirun import clean_env, mpirun, python

pytestmark = pytest.mark.mpi

PROBE = "tests/scripts/memory_probe.py"
# as memory_probe.py checks under MPI
ON_DEMAND = ("numpy", "_hashlib", "hmac", "shutil", "socket", "concurrent.futures")
ON_DEMAND += ("dataclasses", "inspect", "ast", "logging", "traceback")  # never, for such a job


def probe(ranks: int, *args: str, **env: str) -> dict[str, Any]:
    result = mpirun(ranks, [PROBE, *args], timeout=180, env=clean_env(**env))
    assert result.returncode == 0, result.explain()
    parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


def test_a_geode_adds_little_memory_to_raw_mpi4py_and_loads_nothing_on_demand() -> None:
    """The package's modules and the standard library's they import make most of it (8.2 MB
    at 2 ranks, 19-24 while numpy loaded with the package); numpy (14-15 MB), h5py, OpenSSL
    (hashlib's: 3.5 MB), shutil, socket and concurrent.futures (1 MB) load only when a job
    uses arrays or checkpoints; dataclasses (with inspect, ast and dis: 1.1 MB) and logging
    (0.4 MB) never load for it."""
    raw = probe(2, "raw")["resident"]
    geode = probe(2, "geode")
    assert geode["loaded"] == [], geode
    assert geode["resident"] - raw < 12, (raw, geode)


def test_a_job_of_python_objects_loads_neither_numpy_nor_h5py_under_mpiexec() -> None:
    """numpy is 14-15 MB a rank: send, receive, request, run, a topic, a work queue and close()
    of Python objects never import it (tests/unit/test_lazy_imports.py: the embedded world)."""
    job = ["-m", "geode_mpi", "tests/scripts/python_objects.py"]
    result = mpirun(2, job, timeout=120, env=clean_env())
    assert result.returncode == 0, result.explain()
    assert result.stdout.split() == ["loaded:", "[]"] * 2, result.explain()


def test_the_embedded_world_loads_nothing_on_demand_either() -> None:
    code = (
        "import sys\nfrom geode_mpi import Geode\ngeode = Geode(2)\n"
        "geode.send({'a': [1, 2.5]}, 'node0', 'node1')\n"
        "geode.receive('node1', timeout=10)\ngeode.close()\n"
        "print(sorted(name for name in ON_DEMAND if name in sys.modules))"
    )
    watched = (
        *ON_DEMAND,
        "mpi4py.MPI",
        "h5py.h5",
    )  # h5py.h5: h5py ran (its name alone may be a lazy module)
    result = python(["-c", f"ON_DEMAND = {watched!r}\n{code}"], env=clean_env())
    assert result.returncode == 0, result.explain()
    assert result.stdout.strip().splitlines()[-1] == "[]", result.explain()


def test_twenty_thousand_named_nodes_agree_without_gathering_their_names() -> None:
    """Every rank's settings text (2.6 MB here) is compared by digest, never gathered."""
    assert probe(4, "nodes", "20000")["peak_growth"] < 18


def test_memory_stays_flat_over_open_close_cycles() -> None:
    """After the allocators' first growth, cycles add nothing (a leaked Geode, with its
    buffers, engine and queues, would); the hang watchdog's communicator is freed too."""
    cycles = probe(4, "cycles", "14", GEODE_HANG_TIMEOUT="60")["cycles"]
    assert cycles[-1] - cycles[6] < 1.0, cycles


def test_a_closed_geode_lets_go_of_its_receive_buffers() -> None:
    """A closed Geode's objects refer to each other and wait for the cyclic collector: its
    pooled receive buffer (4 MiB for each 2 MiB array) stayed until then, 2 MB more a cycle,
    before close() cleared the pool."""
    cycles = probe(4, "arrays", "10")["cycles"]
    assert cycles[-1] - cycles[2] < 2.0, cycles
