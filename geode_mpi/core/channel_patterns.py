"""The pattern subscriptions of a Geode's channels: subscribe and unsubscribe (checked and
agreed), the nodes a pattern adds to a topic, and what a restart saves and makes again."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from geode_mpi.base.listing import some_names
from geode_mpi.core.subscriptions import Pattern, Subscription

if TYPE_CHECKING:
    from geode_mpi.core.checkpointing import Checkpointer
    from geode_mpi.core.runtime import Runtime
    from geode_mpi.core.topics import Topic


class Subscribing:
    """The pattern subscriptions of `Channels` (core/channels.py), which inherits them: every
    rank holds the same ones (each was agreed), so a topic created later gets the same
    subscribers everywhere."""

    if TYPE_CHECKING:  # declared only: `Channels.__init__` sets them
        _geode: Runtime
        topics: dict[str, Topic]
        checkpointer: Checkpointer | None
        patterns: dict[Pattern, Subscription]
        _pattern_calls: list[tuple[str, Pattern, list[int]]]

    def _since_restart(self, topic: Topic) -> None:
        """Restarted: saved ``topic`` was just made again with its subscribers at the
        checkpoint; the pattern calls made since the restart that match it change them now,
        as they changed the topics that existed (their net effect: a node that subscribed
        and then unsubscribed again never joins, so no retained message reaches it)."""
        calls = [
            (call, members)
            for call, wanted, members in self._pattern_calls
            if wanted.matches(topic.name)
        ]
        checkpointer = self.checkpointer
        if checkpointer is None or not checkpointer.topics:
            self._pattern_calls = []  # (every saved topic is made again)
        if not calls:
            return
        current = set(self._pattern_subscribers(topic.name, ()))
        left = {index for call, members in calls if call == "unsubscribe" for index in members}
        topic.remove(index for index in left if index not in current | topic.named)
        joined = [index for call, members in calls if call == "subscribe" for index in members]
        topic.add([index for index in joined if index in current])

    def _note_call(self, call: str, wanted: Pattern, members: list[int]) -> None:
        """Keep a pattern call for the saved topics not made again yet (`_since_restart`)."""
        checkpointer = self.checkpointer
        if checkpointer is not None and checkpointer.topics:
            self._pattern_calls.append((call, wanted, members))

    def saved_patterns(self) -> list[tuple[str, bool, list[int]]]:
        """The pattern subscriptions, as a checkpoint saves them."""
        return [(p.text, p.prefix, list(s.members)) for p, s in self.patterns.items()]

    def restore_patterns(self, saved: Iterable[tuple[str, bool, list[int]]]) -> None:
        """Restarted: the pattern subscriptions at the checkpoint, before the job makes its
        topics again (each then gets their nodes; subscribing them again changes nothing)."""
        for text, prefix, members in saved:
            wanted = Pattern(text, prefix)
            subscription = self.patterns.get(wanted)
            if subscription is None:
                subscription = self.patterns[wanted] = Subscription(
                    self._geode, wanted, self.topics
                )
            known = subscription.members
            known += [i for i in members if i not in known]

    def subscribe(
        self, nodes: str | int | Iterable[str | int], pattern: str | None, prefix: str | None
    ) -> Subscription:
        """`Geode.subscribe`: check, agree, join the matching topics, keep the pattern."""
        wanted, members = self._pattern_call("subscribe", nodes, pattern, prefix)
        subscription = self.patterns.get(wanted)
        if subscription is None:
            subscription = self.patterns[wanted] = Subscription(self._geode, wanted, self.topics)
        subscription.members += [index for index in members if index not in subscription.members]
        self._note_call("subscribe", wanted, members)
        for topic in self.topics.values():
            if wanted.matches(topic.name):
                topic.add(members)
        return subscription

    def unsubscribe(
        self, nodes: str | int | Iterable[str | int], pattern: str | None, prefix: str | None
    ) -> None:
        """`Geode.unsubscribe`: the nodes leave the pattern, and each topic it matches unless
        they subscribed to that topic by name or through another pattern that matches it."""
        wanted, members = self._pattern_call("unsubscribe", nodes, pattern, prefix)
        subscription = self.patterns[wanted]
        subscription.members = [index for index in subscription.members if index not in members]
        if not subscription.members:
            del self.patterns[wanted]
        self._note_call("unsubscribe", wanted, members)
        for topic in self.topics.values():
            if wanted.matches(topic.name):
                kept = set(topic.named) | set(self._pattern_subscribers(topic.name, ()))
                topic.remove(index for index in members if index not in kept)

    def _pattern_call(
        self,
        call: str,
        nodes: str | int | Iterable[str | int],
        pattern: str | None,
        prefix: str | None,
    ) -> tuple[Pattern, list[int]]:
        """Check a (un)subscribe's arguments, then agree on them with every rank."""
        geode = self._geode
        if geode.sealed:
            raise geode.closed_error(call)
        wanted = Pattern.of(pattern, prefix)
        members = geode.placement.one_or_more(nodes, "nodes", "subscriber")
        if not members or len(set(members)) != len(members):
            raise ValueError(f"{call}({wanted}) needs distinct nodes, got {nodes!r}")
        if call == "unsubscribe":
            had = self.patterns.get(wanted)
            strangers = [i for i in members if had is None or i not in had.members]
            if strangers:
                names = some_names(geode.names[index] for index in strangers)
                known = ", ".join(str(s.pattern) for s in self.patterns.values()) or "none"
                raise ValueError(
                    f"{names} did not subscribe to {wanted} (pattern subscriptions: {known})"
                )
        value = repr((call, str(wanted), members)).encode()
        # (one name: compared in call order)
        geode.agree(value, "pattern subscriptions", f"{call}({wanted})")
        return wanted, members

    def _pattern_subscribers(self, name: str, already: Iterable[int]) -> list[int]:
        """The nodes whose patterns match topic ``name``, beyond ``already``, in the order
        they subscribed (the same on every rank)."""
        seen = set(already)
        found = []
        for wanted, subscription in self.patterns.items():
            if wanted.matches(name):
                for index in subscription.members:
                    if index not in seen:
                        seen.add(index)
                        found.append(index)
        return found
