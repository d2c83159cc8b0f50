"""Layer 7, the runner: ``python -m geode_mpi job.py`` on every rank."""

from geode_mpi.runner.cli import main
from geode_mpi.runner.run import run

__all__ = ["main", "run"]
