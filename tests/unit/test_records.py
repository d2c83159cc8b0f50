"""The public value classes behave as the dataclasses they were (geode_mpi.base.record).

QueueConfig and DeadLetter frozen and hashable, NodeStats and RunSummary mutable and
unhashable; all compared and shown field by field, in order, and pickled alike.
"""

from __future__ import annotations

import pickle

import pytest

from geode_mpi import DeadLetter, NodeStats, QueueConfig, RunSummary


def test_a_queue_config_is_compared_hashed_and_shown_by_its_fields() -> None:
    config = QueueConfig(capacity=8, policy="raise")
    assert config == QueueConfig(8, "raise") != QueueConfig(8)
    assert config != (8, "raise", "auto", 3, 0.01, None, True)
    assert {config: 1}[QueueConfig(capacity=8, policy="raise")] == 1
    assert repr(config) == (
        "QueueConfig(capacity=8, policy='raise', ack='auto', max_attempts=3, "
        "retry_delay=0.01, window=None, persistent=True, dead_letter_expired=False, "
        "max_dead_letters=1000)"
    )
    assert pickle.loads(pickle.dumps(config)) == config


def test_a_frozen_record_refuses_changes() -> None:
    config = QueueConfig()
    with pytest.raises(AttributeError, match="cannot assign to field 'capacity'"):
        config.capacity = 3  # type: ignore[misc]
    with pytest.raises(AttributeError, match="cannot delete field 'policy'"):
        del config.policy  # type: ignore[misc]
    letter = DeadLetter("node0", None, "ValueError: x", None, 3, "node1", 7)
    with pytest.raises(AttributeError):
        letter.seq = 8  # type: ignore[misc]
    assert hash(letter) == hash(DeadLetter("node0", None, "ValueError: x", None, 3, "node1", 7))


def test_the_settings_are_still_checked() -> None:
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        QueueConfig(capacity=0)
    with pytest.raises(TypeError, match="window must be an int or None, got 'x'"):
        QueueConfig(window="x")  # type: ignore[arg-type]


def test_counters_change_and_are_not_hashable() -> None:
    stats = NodeStats("node0")
    stats.sent += 2
    assert stats == NodeStats("node0", sent=2) != NodeStats("node1", sent=2)
    assert stats.as_dict()["sent"] == 2 and list(stats.as_dict())[:2] == ["node", "sent"]
    assert repr(RunSummary(processed=1, reason="quiescent")) == (
        "RunSummary(processed=1, failed=0, replies=0, dead_letters=0, reason='quiescent', "
        "seconds=0.0)"
    )
    with pytest.raises(TypeError, match="unhashable"):
        hash(stats)
    with pytest.raises(AttributeError):
        stats.other = 1  # type: ignore[attr-defined]  # slots, as dataclass(slots=True) had
    assert pickle.loads(pickle.dumps(stats)) == stats


def test_records_match_positional_patterns_in_field_order() -> None:
    match QueueConfig(16, "drop_oldest"):
        case QueueConfig(capacity, "drop_oldest"):
            assert capacity == 16
        case _:
            pytest.fail("no match")
