"""How a node's receive queue behaves: capacity, what happens when full, acks and retries."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from geode_mpi.base.record import Frozen, fill
from geode_mpi.errors import whole

POLICIES = ("block", "raise", "drop_oldest")
ACK_MODES = ("auto", "explicit")
MAX_RETRY_DELAY = 1.0  # seconds: the back-off between attempts doubles up to this


class QueueConfig(Frozen):
    """The settings of one node's receive queue.

    Every rank must use the same settings (senders enforce the capacity), so they are given
    when the Geode is created.

    Args:
        capacity: the most messages the queue holds; None (the default) for no limit.
        policy: what a full queue does to a sender: ``"block"`` (wait for room: credit-based
            flow control, so neither the queue nor MPI's buffers grow), ``"raise"`` (`QueueFull`
            at once, nothing sent), or ``"drop_oldest"`` (accept, and drop the oldest queued
            message, counted in stats; for telemetry-like data).
        ack: ``"auto"``: a message counts as processed when it is received; ``"explicit"``:
            only when the receiver calls ``msg.ack()`` (``msg.nack()`` retries it).
        max_attempts: deliveries a failing message gets before it goes to the dead letters.
        retry_delay: seconds before the first retry; doubled each time, up to 1 s.
        window: with ``block`` or ``raise``, how many messages each sending node may have in
            this queue; default ``capacity // number of nodes``, which keeps the queue within
            ``capacity`` however many nodes send (a capacity below the number of nodes needs
            an explicit window: the queue then holds up to window x nodes).
        persistent: the queue's messages are part of every checkpoint (the default). False:
            in memory only, for transient data: a restart finds it empty, and what it held
            counts as dropped (its senders get their acks, nothing waits for it).
        dead_letter_expired: a message whose ttl ran out before it was taken goes to the
            dead letters (with ``expired`` True) instead of only being counted in ``expired``.
        max_dead_letters: how many of this node's dead letters `Geode.dead_letters` keeps: the
            newest ones (default 1000; None for no limit, 0 for none). Every dead letter still
            counts in ``stats().dead_letters``, and the first one no longer kept is said in a
            warning on the ``geode_mpi`` logger.
    """

    capacity: int | None
    policy: str
    ack: str
    max_attempts: int
    retry_delay: float
    window: int | None
    persistent: bool
    dead_letter_expired: bool
    max_dead_letters: int | None
    __match_args__ = (
        "capacity",
        "policy",
        "ack",
        "max_attempts",
        "retry_delay",
        "window",
        "persistent",
        "dead_letter_expired",
        "max_dead_letters",
    )

    def __init__(
        self,
        capacity: int | None = None,
        policy: str = "block",
        ack: str = "auto",
        max_attempts: int = 3,
        retry_delay: float = 0.01,
        window: int | None = None,
        persistent: bool = True,
        dead_letter_expired: bool = False,
        max_dead_letters: int | None = 1000,
    ) -> None:
        fill(
            self,
            capacity,
            policy,
            ack,
            max_attempts,
            retry_delay,
            window,
            persistent,
            dead_letter_expired,
            max_dead_letters,
        )
        self._check()

    def _check(self) -> None:
        # numpy integers are counts too: kept as ints (the settings are compared by repr)
        for field in ("capacity", "max_attempts", "window", "max_dead_letters"):
            value = getattr(self, field)
            counted = whole(value)
            if counted is not None and value.__class__ is not int:
                object.__setattr__(self, field, counted)
        if self.capacity is not None and (
            isinstance(self.capacity, bool) or not isinstance(self.capacity, int)
        ):
            raise TypeError(f"capacity must be an int or None, got {self.capacity!r}")
        if self.capacity is not None and self.capacity < 1:
            raise ValueError(f"capacity must be >= 1 (or None for no limit), got {self.capacity}")
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if self.ack not in ACK_MODES:
            raise ValueError(f"ack must be one of {', '.join(ACK_MODES)}, got {self.ack!r}")
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError(f"max_attempts must be an int, got {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if not (isinstance(self.retry_delay, int | float) and math.isfinite(self.retry_delay)):
            raise TypeError(f"retry_delay must be a finite number, got {self.retry_delay!r}")
        if self.retry_delay < 0:
            raise ValueError(f"retry_delay must be >= 0, got {self.retry_delay}")
        if self.window is not None:
            if isinstance(self.window, bool) or not isinstance(self.window, int):
                raise TypeError(f"window must be an int or None, got {self.window!r}")
            if self.window < 1:
                raise ValueError(f"window must be >= 1, got {self.window}")
        if not isinstance(self.persistent, bool):
            raise TypeError(f"persistent must be a bool, got {self.persistent!r}")
        if not isinstance(self.dead_letter_expired, bool):
            raise TypeError(f"dead_letter_expired must be a bool, got {self.dead_letter_expired!r}")
        kept = self.max_dead_letters
        if kept is not None and (isinstance(kept, bool) or not isinstance(kept, int)):
            raise TypeError(f"max_dead_letters must be an int or None, got {kept!r}")
        if kept is not None and kept < 0:
            raise ValueError(f"max_dead_letters must be >= 0 (or None for no limit), got {kept}")

    def credits(self, nodes: int) -> int | None:
        """Messages one sending node may have queued here at once; None for no limit."""
        if self.policy == "drop_oldest" or (self.capacity is None and self.window is None):
            return None
        if self.window is not None:
            return self.window
        return max(1, self.capacity // max(1, nodes))  # type: ignore[operator]

    def delay(self, attempts: int) -> float:
        """Seconds to wait before delivering again a message that failed ``attempts`` times."""
        # (2.0 ** 1023 is the largest power of two a float holds; any delay reaches the cap
        # long before: an int power past it would overflow converting to float)
        return min(MAX_RETRY_DELAY, self.retry_delay * 2.0 ** min(max(0, attempts - 1), 1023))


def node_configs(
    names: tuple[str, ...],
    index_of: Callable[[str | int, str], int],
    queue: QueueConfig | None,
    queues: Mapping[str | int, QueueConfig] | None,
) -> list[QueueConfig]:
    """Each node's queue settings: ``queue`` (default: `QueueConfig()`), overridden per node by
    ``queues`` (keyed by node name or index; ``index_of`` resolves a key).

    Raises:
        TypeError: a setting is not a QueueConfig.
        ValueError: a queue without a window holds fewer messages than there are nodes (every
            sending node needs room for one).
    """
    default = QueueConfig() if queue is None else queue
    if not isinstance(default, QueueConfig):
        raise TypeError(f"queue must be a QueueConfig, got {default!r}")
    if queues is not None and not isinstance(queues, Mapping):
        raise TypeError(
            f"queues must be a dict of node name or index -> QueueConfig, got {queues!r} "
            "(queue=QueueConfig(...) sets every node's)"
        )
    configs = [default] * len(names)
    for node, config in (queues or {}).items():
        if not isinstance(config, QueueConfig):
            raise TypeError(f"queues[{node!r}] must be a QueueConfig, got {config!r}")
        configs[index_of(node, "queues key")] = config
    count = len(names)
    for index, config in enumerate(configs):
        if (
            config.policy != "drop_oldest"
            and config.capacity is not None
            and config.window is None
            and config.capacity < count
        ):
            raise ValueError(
                f"{names[index]}'s queue capacity {config.capacity} is below the number of "
                f"nodes ({count}): every sending node needs room for at least one message; give "
                f"capacity >= {count}, or a window (the queue then holds up to window x {count})"
            )
    return configs


def configs_text(configs: Sequence[QueueConfig]) -> str:
    """The nodes' queue settings as text that ranks compare: each distinct setting's repr
    once, then each node's number in that list (one repr per node made start-up slower than
    linear: 30% of it at 40,000 nodes)."""
    numbers: dict[int, int] = {}  # id(config) -> its number (configs hold the objects)
    texts: dict[str, int] = {}  # a repr -> its number (equal configs, distinct objects)
    order = []
    for config in configs:
        number = numbers.get(id(config))
        if number is None:
            number = numbers[id(config)] = texts.setdefault(repr(config), len(texts))
        order.append(number)
    return f"{list(texts)!r} {order!r}"
