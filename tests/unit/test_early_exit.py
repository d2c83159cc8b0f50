"""sys.exit() inside ``with Geode()``: status 0 is the job's end, any other a failure."""

from __future__ import annotations

import sys

import pytest

from geode_mpi import Geode
from geode_mpi.base.failure import ends_well


@pytest.mark.parametrize("code", [None, 0, False])
def test_sys_exit_0_closes_the_geode_as_the_end_of_the_block(
    code: object, caplog: pytest.LogCaptureFixture
) -> None:
    """It left the block without close(): no collective close on the other ranks' side, and
    the warning about messages never received was lost."""
    logging = caplog.at_level("WARNING", logger="geode_mpi")
    with logging, pytest.raises(SystemExit), Geode(2) as geode:
        geode.send("never received", dest="node1")
        sys.exit(code)
    assert geode.closed
    assert "the job ends with messages never received: node1: 1 message(s)" in caplog.text


@pytest.mark.parametrize("code", [1, 3, 256, "failed"])
def test_another_sys_exit_leaves_the_block_as_a_failure(
    code: object, caplog: pytest.LogCaptureFixture
) -> None:
    logging = caplog.at_level("WARNING", logger="geode_mpi")
    with logging, pytest.raises(SystemExit), Geode(2) as geode:
        geode.send("never received", dest="node1")
        sys.exit(code)
    assert "never received" not in caplog.text  # (nothing waited for: the job fails)


def test_ends_well_is_status_0_only() -> None:
    assert ends_well(SystemExit()) and ends_well(SystemExit(0)) and ends_well(SystemExit(None))
    assert not ends_well(SystemExit(1)) and not ends_well(SystemExit("0"))
    assert not ends_well(SystemExit(0.0)) and not ends_well(ValueError()) and not ends_well(None)
