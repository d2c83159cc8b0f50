"""Dead letters: a node keeps the newest max_dead_letters (all counted, the first one let go
said in a warning), dead_letters(clear=True) takes them, and a kept error pins no frame."""

from __future__ import annotations

import gc
import logging
import weakref
from pathlib import Path

import numpy as np
import pytest

from geode_mpi import Geode, Message, QueueConfig


class Big(np.ndarray):  # (a plain ndarray cannot be weakly referenced)
    pass


class Refused(Exception):
    def __init__(self, reason: str, code: int) -> None:
        super().__init__(reason, code)
        self.code = code
        self.seen = "by the handler"


def fail_all(geode: Geode, count: int) -> None:
    @geode.on(Message)
    def handler(msg: Message) -> None:
        raise Refused(f"bad input {msg.data}", msg.data)

    for k in range(count):
        geode.send(k, "node0", "node1")
    geode.run("node1", count=count)


def test_only_the_newest_are_kept_all_are_counted_and_one_warning_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    geode = Geode(queue=QueueConfig(max_attempts=1, max_dead_letters=3))
    with caplog.at_level(logging.WARNING, "geode_mpi"):
        fail_all(geode, 7)
    kept = geode.dead_letters("node1")
    assert [letter.message.data for letter in kept if letter.message] == [4, 5, 6]
    assert geode.stats("node1").dead_letters == 7
    dropped = [r.getMessage() for r in caplog.records if "only the newest" in r.getMessage()]
    assert dropped == [
        "node1: more than 3 dead letters: only the newest 3 are kept in dead_letters('node1') "
        "from now on (each one still counts in stats().dead_letters); keep more with "
        "QueueConfig(max_dead_letters=...), or take them as they come with "
        "dead_letters('node1', clear=True)"
    ]
    geode.close()


def test_a_thousand_are_kept_by_default_and_none_is_no_limit() -> None:
    assert QueueConfig().max_dead_letters == 1000
    geode = Geode(queue=QueueConfig(max_attempts=1, max_dead_letters=None))
    fail_all(geode, 1005)
    assert len(geode.dead_letters("node1")) == 1005
    geode.close()


def test_clear_takes_them_out() -> None:
    geode = Geode(queue=QueueConfig(max_attempts=1))
    fail_all(geode, 3)
    taken = geode.dead_letters("node1", clear=True)
    assert [letter.seq for letter in taken] == [0, 1, 2]
    assert geode.dead_letters("node1") == []
    assert geode.stats("node1").dead_letters == 3
    with pytest.raises(TypeError, match="clear must be a bool"):
        geode.dead_letters("node1", clear=1)  # type: ignore[arg-type]
    geode.close()


@pytest.mark.parametrize(
    ("value", "error"), [(-1, ValueError), (2.0, TypeError), (True, TypeError)]
)
def test_a_bad_max_dead_letters_is_refused(value: object, error: type) -> None:
    with pytest.raises(error, match="max_dead_letters"):
        QueueConfig(max_dead_letters=value)  # type: ignore[arg-type]


def test_the_kept_error_has_its_type_args_attributes_and_message() -> None:
    geode = Geode(queue=QueueConfig(max_attempts=1))
    fail_all(geode, 1)
    (letter,) = geode.dead_letters("node1")
    error = letter.exception
    assert type(error) is Refused and error.args == ("bad input 0", 0)
    assert (error.code, error.seen, str(error)) == (0, "by the handler", "('bad input 0', 0)")
    assert letter.error == "Refused: ('bad input 0', 0)"
    assert error.__traceback__ is None
    geode.close()


def caller_of_run(geode: Geode) -> weakref.ref[Big]:
    big = np.ones(1000).view(Big)  # the caller's locals: in the frames the error went through
    fail_all(geode, 1)
    return weakref.ref(big)


def caller_that_nacks(geode: Geode) -> weakref.ref[Big]:
    big = np.ones(1000).view(Big)
    geode.send(1, "node0", "node1")
    msg = geode.receive("node1", timeout=10)
    try:
        raise ValueError(f"cannot use {msg.data}") from KeyError("cause")
    except ValueError as exc:
        msg.nack(exc)
    return weakref.ref(big)


@pytest.mark.parametrize("caller", [caller_of_run, caller_that_nacks])
def test_a_dead_letter_does_not_keep_its_callers_locals_alive(
    caller: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (pytest keeps every log record, and run()'s warning has the error in its args)
    monkeypatch.setattr(logging.getLogger("geode_mpi"), "disabled", True)
    ack = "explicit" if caller is caller_that_nacks else "auto"
    geode = Geode(queue=QueueConfig(max_attempts=1, ack=ack))
    big = caller(geode)  # type: ignore[operator]
    gc.collect()
    assert big() is None
    (letter,) = geode.dead_letters("node1")
    assert letter.exception is not None
    if caller is caller_that_nacks:  # its cause is kept too, also without frames
        assert str(letter.exception) == "cannot use 1"
        assert repr(letter.exception.__cause__) == "KeyError('cause')"
    geode.close()


def test_a_dead_letter_says_where_its_handler_raised_as_text() -> None:
    """The kept copy has no traceback (it would pin the frames): the dead letter keeps
    where the handler raised as text instead, for the job to print."""
    geode = Geode(queue=QueueConfig(max_attempts=1))
    fail_all(geode, 1)
    (letter,) = geode.dead_letters("node1")
    assert letter.exception is not None and letter.exception.__traceback__ is None
    assert letter.traceback.startswith("Traceback (most recent call last):")
    assert "in handler" in letter.traceback  # (fail_all's handler's frame)
    assert letter.traceback.rstrip().endswith("Refused: ('bad input 0', 0)")
    geode.close()


def test_inspect_counts_every_dead_letter_and_says_how_many_are_kept(tmp_path: Path) -> None:
    from geode_mpi.runner.inspect import inspect_lines

    geode = Geode(queue=QueueConfig(max_attempts=1, max_dead_letters=3), checkpoint_dir=tmp_path)
    fail_all(geode, 7)
    geode.checkpoint()
    geode.close()
    (line,) = [line for line in inspect_lines(tmp_path) if line.strip().startswith("node1:")]
    assert line.endswith("dead letters 7 (3 kept)"), line
