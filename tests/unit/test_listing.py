"""Lists of nodes in warnings and errors: the first few, then how many more."""

from __future__ import annotations

from geode_mpi.base.listing import SHOWN, counted_nodes, some_names


def test_a_short_list_of_names_is_whole_and_a_long_one_says_how_many_more() -> None:
    assert some_names(["a", "b"]) == "a, b"
    assert some_names(f"n{k}" for k in range(SHOWN)).endswith(f"n{SHOWN - 1}")
    long = some_names(f"n{k}" for k in range(25))
    assert long == ", ".join(f"n{k}" for k in range(SHOWN)) + ", ... and 15 more"


def test_counts_keep_their_order_when_few_and_the_largest_first_when_many() -> None:
    assert counted_nodes({"b": 1, "a": 2}) == "b: 1; a: 2"
    many = {f"n{k}": 1 for k in range(12)} | {"big": 5}
    shown = counted_nodes(many, "messages")
    assert shown.startswith("big: 5; n0: 1; n1: 1")
    assert shown.endswith("n8: 1; ... and 3 more nodes, 17 messages in all")
    one_more = counted_nodes({f"n{k}": 2 for k in range(SHOWN + 1)}, each=lambda n, c: n)
    assert one_more.endswith(f"n{SHOWN - 1}; ... and 1 more node, {2 * (SHOWN + 1)} in all")
