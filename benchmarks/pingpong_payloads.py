"""``pingpong.py --payloads``: the small round trip of each kind of payload, geode beside raw.

For each kind, four ping-pong loops run interleaved (the order rotating per repeat): raw
``comm.send``/``recv`` of the object itself and of a dict of a Message's fields holding it
(`baseline.message_fields`; for a Message subclass, its class name as the type and its
attributes beside the fields, what a hand-written message of that class carries), and geode's
``send`` of ``Message(x)`` and of the bare ``x`` (a Message subclass has no bare form:
"subclass" holds only its data, "attrs" two attributes, "script" is defined in the job
script). Every payload is made afresh per send on
both sides, for every method alike. Ratios are paired (taken within each repeat).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from baseline import message_fields
from reporting import Table
from timing import barrier_then_clock, paired_median, summarise

from geode_mpi import Message

if TYPE_CHECKING:
    from pingpong import Budget, Loop, Pair

RAW_OBJECT = "raw object"
RAW_FIELDS = "raw fields"
GEODE_MESSAGE = "geode Message(x)"
GEODE_BARE = "geode x"
MESSAGE_MAX_17 = 1.5  # issue 17: Message(x) within this multiple of the raw fields dict
ARRAY_MAX = 1.0  # issue 17: a small array no slower than raw pickle of it


class Tagged(Message):
    """A Message subclass ("subclass"): its class name travels with it."""


class Point(Message):
    """A subclass as users write one ("attrs"): two attributes set in ``__init__`` (they
    travel too, and the raw fields dict holds them: `raw_extras`)."""

    def __init__(self, data: Any = None, x: int = 1, label: str = "a") -> None:
        super().__init__(data)
        self.x = x
        self.label = label


# A subclass defined in the job script ("script"): its wire name is ``__main__``'s
Script = type("Script", (Message,), {"__module__": "__main__", "__qualname__": "Script"})
sys.modules["__main__"].Script = Script
CLASSES: dict[str, type[Message]] = {"subclass": Tagged, "attrs": Point, "script": Script}


_EIGHT_BYTES = np.zeros(1)
_ONE_KIB = np.arange(128.0)
# What each kind's message holds, made per send (an array: the same one, as pingpong.py's).
PAYLOADS: dict[str, Callable[[], Any]] = {
    "str": lambda: "hello world",
    "int": lambda: 7,
    "float": lambda: 2.5,
    "dict": lambda: {"x": 1, "y": 2.0, "name": "abc"},
    "tuple": lambda: (1, 2.0),
    "list": lambda: [1.0, 2.0],
    "array 8 B": lambda: _EIGHT_BYTES,
    "array 1 KiB": lambda: _ONE_KIB,
    "subclass": lambda: "hello world",  # (sent as Tagged(x))
    "attrs": lambda: "hello world",  # (sent as Point(x): x=1, label="a")
    "script": lambda: "hello world",  # (sent as Script(x))
}
ARRAYS = ("array 8 B", "array 1 KiB")


def kinds_option(value: str) -> list[str]:
    """``--payloads``' value: 'all', or kinds separated by commas.

    Raises:
        ValueError: a kind that is not one of `PAYLOADS`.
    """
    kinds = list(PAYLOADS) if value == "all" else [*filter(None, value.split(","))]
    for kind in kinds:
        if kind not in PAYLOADS:
            raise ValueError(f"--payloads: unknown kind {kind!r}, of {','.join(PAYLOADS)}")
    return kinds


# -- the loops (rank 0 sends first; rank 1 echoes a payload of its own) -------------------------


def raw_object(pair: Pair, make: Callable[[], Any], iters: int) -> tuple[float, Any]:
    comm, peer = pair.comm, pair.peer
    got: Any = None
    start = barrier_then_clock(comm, pair.wtime)
    if pair.rank == 0:
        for _ in range(iters):
            comm.send(make(), peer)
            got = comm.recv(source=peer)
    else:
        for _ in range(iters):
            got = comm.recv(source=peer)
            comm.send(make(), peer)
    return (pair.wtime() - start) / (2 * iters), got


def raw_extras(cls: type[Message], make: Callable[[], Any]) -> dict[str, Any]:
    """What a raw fields dict holds over `message_fields`'s for a message of ``cls``: its
    class name as the type, and the attributes its ``__init__`` sets (nothing for `Message`)."""
    if cls is Message:
        return {}
    attributes = {key: value for key, value in vars(cls(make())).items() if key != "data"}
    return {"type": cls.__name__, **attributes}


def raw_fields(
    pair: Pair, make: Callable[[], Any], iters: int, extras: dict[str, Any] | None = None
) -> tuple[float, Any]:
    """Raw ``send``/``recv`` of a dict of a Message's fields holding ``make()``, with
    ``extras`` (`raw_extras`: a subclass's type name and attributes) set over them."""
    comm, peer, node, peer_node = pair.comm, pair.peer, pair.node, pair.peer_node
    got: Any = None
    start = barrier_then_clock(comm, pair.wtime)
    if extras:  # (loops of their own: the plain kinds' stay as they were)
        if pair.rank == 0:
            for seq in range(iters):
                fields = message_fields(seq, node, peer_node, make())
                fields.update(extras)
                comm.send(fields, peer)
                got = comm.recv(source=peer)["data"]
        else:
            for seq in range(iters):
                got = comm.recv(source=peer)["data"]
                fields = message_fields(seq, node, peer_node, make())
                fields.update(extras)
                comm.send(fields, peer)
    elif pair.rank == 0:
        for seq in range(iters):
            comm.send(message_fields(seq, node, peer_node, make()), peer)
            got = comm.recv(source=peer)["data"]
    else:
        for seq in range(iters):
            got = comm.recv(source=peer)["data"]
            comm.send(message_fields(seq, node, peer_node, make()), peer)
    return (pair.wtime() - start) / (2 * iters), got


def geode_loop(pair: Pair, make: Callable[[], Any], iters: int) -> tuple[float, Any]:
    """``make`` gives what is sent: a Message, or the bare data."""
    geode, peer_node = pair.geode, pair.peer_node
    got: Any = None
    start = barrier_then_clock(pair.comm, pair.wtime)
    if pair.rank == 0:
        for _ in range(iters):
            geode.send(make(), dest=peer_node)
            got = geode.receive().data
    else:
        for _ in range(iters):
            got = geode.receive().data
            geode.send(make(), dest=peer_node)
    return (pair.wtime() - start) / (2 * iters), got


def loops(pair: Pair, kind: str) -> dict[str, Loop]:
    make = PAYLOADS[kind]
    cls = CLASSES.get(kind, Message)

    def wrap() -> Message:
        return cls(make())

    found: dict[str, Loop] = {
        RAW_OBJECT: partial(raw_object, pair, make),
        RAW_FIELDS: partial(raw_fields, pair, make, extras=raw_extras(cls, make)),
        GEODE_MESSAGE: partial(geode_loop, pair, wrap),
    }
    if kind not in CLASSES:
        found[GEODE_BARE] = partial(geode_loop, pair, make)
    return found


def check(pair: Pair, kind: str, name: str, got: Any) -> None:
    """Raise unless ``got`` is the payload the peer sent (so garbage is never timed)."""
    expected = PAYLOADS[kind]()
    if isinstance(expected, np.ndarray):
        fine = isinstance(got, np.ndarray) and np.array_equal(got, expected)
    else:
        fine = type(got) is type(expected) and got == expected
    if not fine:
        raise RuntimeError(f"rank {pair.rank}: {name} of {kind} received {got!r}")


def bench(
    pair: Pair, kinds: list[str], budget: Budget, repeats: int, measure: Callable[..., Any]
) -> dict[str, Any]:
    """Each kind's record: its methods' times and the paired ratios."""
    records: dict[str, Any] = {}
    for kind in kinds:
        rounds, times = measure(
            pair, loops(pair, kind), budget, budget.most, repeats, partial(check, pair, kind)
        )
        methods = summarise(rounds, times)
        ratios = {
            "Message/raw fields": paired_median(times[GEODE_MESSAGE], times[RAW_FIELDS]),
            "Message/raw object": paired_median(times[GEODE_MESSAGE], times[RAW_OBJECT]),
        }
        if GEODE_BARE in times:
            ratios["bare/raw object"] = paired_median(times[GEODE_BARE], times[RAW_OBJECT])
        records[kind] = {"methods": methods, "ratios": ratios}
    return records


# -- reporting -----------------------------------------------------------------------------------


def table(records: dict[str, Any]) -> list[str]:
    columns = (
        ("payload", 12),
        ("raw obj us", 11),
        ("fields us", 10),
        ("Msg(x) us", 10),
        ("x us", 8),
        ("Msg/fields", 11),
        ("Msg/obj", 8),
        ("x/obj", 7),
    )
    out = Table(columns)
    lines = out.head()
    for kind, record in records.items():
        methods, ratios = record["methods"], record["ratios"]
        bare = methods.get(GEODE_BARE)
        cells = [
            kind,
            f"{methods[RAW_OBJECT]['median_us']:.2f}",
            f"{methods[RAW_FIELDS]['median_us']:.2f}",
            f"{methods[GEODE_MESSAGE]['median_us']:.2f}",
            "-" if bare is None else f"{bare['median_us']:.2f}",
            f"{ratios['Message/raw fields']:.2f}",
            f"{ratios['Message/raw object']:.2f}",
            "-" if bare is None else f"{ratios['bare/raw object']:.2f}",
        ]
        lines.append(out.row(cells))
    lines.append(out.rule)
    lines.append(
        "one way, us (medians); ratios paired per repeat. fields: raw send/recv of a dict of a "
        "Message's fields holding x"
        " (a subclass's: its class name and attributes too);"
    )
    lines.append("  obj: raw send/recv of x itself; x: geode's send of the bare x (no Message)")
    return lines


def targets(records: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 17's bounds: Message(x) over the raw fields dict for every kind; a small array
    (bare, as pingpong.py's arrays) over raw pickle of it."""
    message = {kind: r["ratios"]["Message/raw fields"] for kind, r in records.items()}
    arrays = {kind: r["ratios"]["bare/raw object"] for kind, r in records.items() if kind in ARRAYS}
    found = [
        verdict(
            f"issue 17: Message(x) <= {MESSAGE_MAX_17}x raw send/recv of a fields dict holding x",
            message,
            MESSAGE_MAX_17,
        )
    ]
    if arrays:
        found.append(
            verdict(f"issue 17: small arrays <= {ARRAY_MAX:.1f}x raw pickle", arrays, ARRAY_MAX)
        )
    return found


def verdict(name: str, ratios: dict[str, float], bound: float) -> dict[str, Any]:
    worst = max(ratios, key=ratios.__getitem__)
    passed = all(ratio <= bound for ratio in ratios.values())
    return {
        "target": name,
        "result": "PASS" if passed else "FAIL",
        "worst": {"case": worst, "ratio": ratios[worst]},
        "ratios": ratios,
    }


def target_lines(found: list[dict[str, Any]]) -> list[str]:
    lines = ["targets:"]
    for item in found:
        worst = item["worst"]
        detail = ", ".join(f"{kind} {ratio:.2f}" for kind, ratio in item["ratios"].items())
        lines.append(f"  {item['result']}  {item['target']}")
        lines.append(f"        worst {worst['ratio']:.2f} at {worst['case']}; all: {detail}")
    return lines
