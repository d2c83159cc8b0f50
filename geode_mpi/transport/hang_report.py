"""The text of a hang report (--hang-timeout): every rank's answer, merged line by line.

Each rank answers the census with its lines (what it waits for, where, what it holds). Printed
one rank after another, a report grew with the ranks times their lines: at 2,000 ranks, 10,000
lines. Merged, a line that several ranks said alike is printed once, naming them as ranges
(``[ranks 2-1999 of 2000]   in job.py:12 ...``); a rank's own node's name in its lines reads
"its node" there, so that ranks alike but for their node merge too. Past `MOST_LINES` lines,
the lines that only one rank said are counted instead (the first line of every rank, its
state, is always printed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from geode_mpi.base.listing import ranks_named
from geode_mpi.transport.stillness import Section

MOST_LINES = 100  # lines of a merged report (besides each rank's first line)
ITS_NODE = "its node"
_MARK = "\x00"  # a rank's own node's name, in a line's merging key
_IN = "\x01"  # between the section a line is in and the line, in its merging key


class RankPart(NamedTuple):
    """One rank's answer to the census: how long it has been stuck (0 while it runs), its
    label, its report's lines (unlabelled), its own node (None: none to name), and what it
    holds in each open Geode (`stillness.sections`), after the lines."""

    stuck: float
    label: str
    lines: list[str]
    node: str | None
    sections: Sequence[Section] = ()

    def text(self) -> list[str]:
        """The lines, then each section's."""
        return [*self.lines, *(line for section in self.sections for line in section.text())]


def merged(parts: Mapping[int, RankPart], size: int) -> list[str]:
    """The report's lines: each line said alike by several ranks once, labelled with their
    ranks; in the order of their places in the reports of the ranks that said them first
    (a rank's state, where it waits, ...), then of those ranks."""
    said: dict[str, list[int]] = {}  # merging key -> the ranks that said it
    first: dict[str, str] = {}  # merging key -> the line as the first of them said it
    place: dict[str, int] = {}  # merging key -> its place in the report of that first rank
    heads = set()  # the keys of a rank's first line
    for rank in sorted(parts):
        part = parts[rank]
        for number, (key, line) in enumerate(_keyed(part)):
            said.setdefault(key, []).append(rank)
            first.setdefault(key, line)
            place.setdefault(key, number)
            if number == 0:
                heads.add(key)
    out: list[str] = []
    left_out: list[int] = []  # the ranks of the lines counted instead of printed
    lines_left_out = shown = 0
    for key in sorted(said, key=place.__getitem__):  # (stable: the ranks' order on a tie)
        ranks = said[key]
        if len(ranks) == 1:
            line = f"{parts[ranks[0]].label} {first[key]}"
        else:
            said_as = key.rpartition(_IN)[2].replace(_MARK, ITS_NODE)
            line = f"[{ranks_named(ranks)} of {size}] {said_as}"
        if key in heads or shown < MOST_LINES:
            out.append(line)
            shown += key not in heads
        else:
            lines_left_out += 1
            left_out += ranks
    if lines_left_out:
        out.append(
            f"... and {lines_left_out} more line(s), of {ranks_named(left_out)} (a report "
            f"prints {MOST_LINES} lines besides each rank's state)"
        )
    return out


def _keyed(part: RankPart) -> list[tuple[str, str]]:
    """The lines of ``part`` (`RankPart.text`), each after its merging key: a line of a
    Geode's section is keyed under the section's heading (lines alike in two Geodes'
    sections are two lines)."""
    node = part.node
    keyed = [(_key(line, node), line) for line in part.lines]
    for section in part.sections:
        heading = section.heading
        if heading:
            keyed.append((_key(heading, node), heading))
        keyed += [(_key(line, node, heading), line) for line in section.lines]
    return keyed


def _key(line: str, node: str | None, section: str = "") -> str:
    """``line`` with its rank's own node's name marked (a whole name: node1 in node10 is not),
    after the heading of the section it is in, if any."""
    if node:
        line = re.sub(rf"(?<!\w){re.escape(node)}(?!\w)", _MARK, line)
    return f"{section}{_IN}{line}" if section else line
