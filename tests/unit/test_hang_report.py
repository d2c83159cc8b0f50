"""The text of a hang report and of the parts a failing job leaves, at many ranks: bounded.

A scale review found them growing as P^2: each rank's state named every peer that had not
acknowledged its messages (12 P^2 bytes: 49 MB on rank 0 at 2,000 ranks), and every rank's
lines were printed one rank after another, alike or not."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

from geode_mpi.base.listing import rank_ranges, ranks_named
from geode_mpi.base.shards import FILES_PER_DIR
from geode_mpi.core.observe import parts_beyond
from geode_mpi.core.observe_hang import rank_state
from geode_mpi.tracing import merge_parts, part_path, parts_dir, write_part
from geode_mpi.transport.hang_report import MOST_LINES, RankPart, merged
from geode_mpi.transport.stillness import sections


def test_ranks_are_written_as_ranges_and_a_long_list_is_cut() -> None:
    assert rank_ranges([7, 0, 1, 2, 3, 5, 8, 1999, 9, 3]) == "0-3,5,7-9,1999"
    assert rank_ranges(range(2000)) == "0-1999"
    assert rank_ranges(range(0, 2000, 2), limit=3) == "0,2,4,... and 997 more"
    assert ranks_named([4]) == "rank 4" and ranks_named([0, 1, 2]) == "ranks 0-2"


def _stats(count: int) -> SimpleNamespace:
    return SimpleNamespace(received=count, sent=count)


def test_a_rank_waiting_on_every_peer_names_the_first_few() -> None:
    """Rank 0 of 2,000 with one message unacknowledged by each peer: a line of 2,000 names
    (some 24 KB) before; now the first four and a count."""
    size = 2000
    names = [f"node{rank}" for rank in range(size)]
    engine = SimpleNamespace(
        stats={0: _stats(size - 1)},
        inboxes={0: []},
        unacked_by_dest=lambda index: dict.fromkeys(range(1, size), 1),
    )
    transport = SimpleNamespace(pending_summary=lambda: "nothing in flight")
    geode = SimpleNamespace(
        engine=engine, names=names, sealed=False, closed=False, transport=transport
    )
    lines = rank_state(geode)  # type: ignore[arg-type]
    assert lines[0] == (
        "node0: 0 message(s) queued, 1999 received, 1999 sent, not yet acknowledged by "
        "node1 (1); node2 (1); node3 (1); node4 (1); ... and 1995 more nodes, 1999 messages "
        "in all"
    ), lines[0]


def _part(rank: int, size: int, stuck: float = 61.0) -> RankPart:
    node = f"node{rank}"
    lines = [
        f"waiting {stuck:.0f} s with nothing arriving or leaving",
        "  in job.py:12 in <module>: geode.receive(source=left)",
        f"  waiting for a message at {node} (0 other message(s) queued there)",
        f"  {node}: 0 message(s) queued, 5 received, 5 sent",
        "  transport: nothing in flight",
    ]
    return RankPart(stuck, f"[rank {rank}/{size} {node}]", lines, node)


def test_a_report_of_2000_ranks_alike_is_a_few_lines() -> None:
    """2,000 ranks waiting alike (each on its own node): 10,000 lines before, one rank's
    lines now, each naming the ranks that said it."""
    size = 2000
    parts = {rank: _part(rank, size) for rank in range(size)}
    parts[1] = _part(1, size)._replace(
        stuck=0.0, lines=["running (in geode_mpi calls, not waiting)", "  node1: busy"]
    )
    text = merged(parts, size)
    assert text == [
        "[ranks 0,2-1999 of 2000] waiting 61 s with nothing arriving or leaving",
        "[rank 1/2000 node1] running (in geode_mpi calls, not waiting)",
        "[ranks 0,2-1999 of 2000]   in job.py:12 in <module>: geode.receive(source=left)",
        "[rank 1/2000 node1]   node1: busy",
        "[ranks 0,2-1999 of 2000]   waiting for a message at its node (0 other message(s) "
        "queued there)",
        "[ranks 0,2-1999 of 2000]   its node: 0 message(s) queued, 5 received, 5 sent",
        "[ranks 0,2-1999 of 2000]   transport: nothing in flight",
    ], text


def test_a_report_of_ranks_each_its_own_prints_every_state_and_counts_the_rest() -> None:
    """Every rank's counts differ: each rank's state line stays (a running rank is never
    left out), the other lines stop at MOST_LINES, and the rest are counted."""
    size = 2000
    parts = {}
    for rank in range(size):
        part = _part(rank, size, stuck=60 + rank % 3)
        parts[rank] = part._replace(lines=[*part.lines[:3], f"  node{rank}: {rank} received"])
    text = merged(parts, size)
    assert text[:3] == [
        "[ranks 0,3,6,9,12,15,18,21,24,27,... and 657 more of 2000] waiting 60 s with nothing "
        "arriving or leaving",
        "[ranks 1,4,7,10,13,16,19,22,25,28,... and 657 more of 2000] waiting 61 s with nothing "
        "arriving or leaving",
        "[ranks 2,5,8,11,14,17,20,23,26,29,... and 656 more of 2000] waiting 62 s with nothing "
        "arriving or leaving",
    ], text[:3]
    assert len(text) == 3 + MOST_LINES + 1, len(text)
    assert text[-1] == (
        "... and 1902 more line(s), of ranks 98-1999 (a report prints 100 lines besides each "
        "rank's state)"
    ), text[-1]
    assert len("\n".join(text)) < 12_000  # 2,000 x 4 lines of some 60 bytes before: 480 KB


def test_a_node_named_inside_another_node_s_name_stays_itself() -> None:
    part = RankPart(5.0, "[rank 1/20 node1]", ["waiting 5 s", "  node1: sent to node10"], "node1")
    other = RankPart(5.0, "[rank 2/20 node2]", ["waiting 5 s", "  node2: sent to node10"], "node2")
    assert merged({1: part, 2: other}, 20)[1] == "[ranks 1-2 of 20]   its node: sent to node10"


def test_parts_of_more_ranks_than_a_directory_holds_go_in_sub_directories(tmp_path: Path) -> None:
    trace = tmp_path / "trace.json"
    ranks = FILES_PER_DIR + 44
    assert part_path(trace, 3, 4) == str(tmp_path / "trace.rank3.json")
    assert part_path(trace, 299, ranks) == str(
        tmp_path / "trace.parts" / "ranks-0001" / "trace.rank299.json"
    )
    written = [write_part(trace, rank, [{"ph": "i", "pid": rank}], ranks) for rank in range(ranks)]
    assert sorted(os.listdir(tmp_path)) == ["trace.parts"]
    assert sorted(os.listdir(parts_dir(trace))) == ["ranks-0000", "ranks-0001"]
    assert len(os.listdir(tmp_path / "trace.parts" / "ranks-0000")) == FILES_PER_DIR
    merge_parts(trace, written)
    assert sorted(os.listdir(tmp_path)) == ["trace.json"]  # the parts and their directories gone
    assert len(json.loads(trace.read_text())["traceEvents"]) == ranks


def test_the_parts_of_ranks_beyond_a_job_are_found_in_sub_directories(tmp_path: Path) -> None:
    stats = tmp_path / "stats.json"
    ranks = FILES_PER_DIR + 2
    for rank in (0, 5, FILES_PER_DIR + 1):
        path = Path(part_path(stats, rank, ranks))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    Path(part_path(stats, 7)).write_text("{}")
    assert parts_beyond(str(stats), 4) == sorted(
        [
            part_path(stats, 7),
            part_path(stats, 5, ranks),
            part_path(stats, FILES_PER_DIR + 1, ranks),
        ]
    )


def test_lines_alike_in_two_open_geodes_stay_under_each() -> None:
    """A rank with two Geodes open says "nothing in flight" of each: merged by text alone, the
    second Geode's section was left empty (its lines printed once, under the first). Each
    rank's sections as its watchdog makes them (`stillness.sections`), the node named in them
    merged as "its node" within each."""

    def geode(node: str) -> SimpleNamespace:
        return SimpleNamespace(describe=lambda: [f"{node}: 0 queued", "transport: idle"])

    parts = {
        rank: RankPart(
            61.0,
            f"[rank {rank}/2]",
            ["waiting 61 s with nothing arriving or leaving"],
            f"node{rank}",
            sections([geode(f"node{rank}"), geode("node9")], "  "),
        )
        for rank in (0, 1)
    }
    assert merged(parts, 2) == [
        "[ranks 0-1 of 2] waiting 61 s with nothing arriving or leaving",
        "[ranks 0-1 of 2]   Geode 1 of 2 open:",
        "[ranks 0-1 of 2]   its node: 0 queued",
        "[ranks 0-1 of 2]   transport: idle",
        "[ranks 0-1 of 2]   Geode 2 of 2 open:",
        "[ranks 0-1 of 2]   node9: 0 queued",
        "[ranks 0-1 of 2]   transport: idle",
    ]
    alone = parts[0]._replace(sections=sections([geode("node0")], "  "))
    assert alone.text() == [
        "waiting 61 s with nothing arriving or leaving",
        "  node0: 0 queued",
        "  transport: idle",
    ]
    assert merged({0: alone}, 1)[1:] == [
        "[rank 0/2]   node0: 0 queued",
        "[rank 0/2]   transport: idle",
    ]
