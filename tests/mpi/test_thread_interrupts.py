"""Ctrl-C (SIGINT) to the main thread while it waits in receive() and a second thread waits
in receive() too: every interrupt is a KeyboardInterrupt, and the gate is free after each."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading

from geode_mpi import Geode

ROUNDS = 60
TIMEOUT = 30.0


def test_sigint_while_two_threads_receive_never_leaves_the_gate_held(geode: Geode) -> None:
    stop = threading.Event()
    armed = threading.Event()
    fired = threading.Event()
    errors: list[BaseException] = []

    def other() -> None:
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    geode.receive(geode.node, type="Nothing", timeout=0.05)
        except BaseException as exc:
            errors.append(exc)

    def signaller() -> None:
        rng = random.Random(geode.rank)
        while armed.wait(TIMEOUT) and not stop.is_set():
            armed.clear()
            stop.wait(rng.uniform(0.001, 0.02))
            os.kill(os.getpid(), signal.SIGINT)
            fired.set()

    thread = threading.Thread(target=other)
    thread.start()
    ringer = threading.Thread(target=signaller, daemon=True)
    ringer.start()
    got: dict[str, int] = {}
    try:
        for _ in range(ROUNDS):
            try:
                fired.clear()
                armed.set()
                geode.receive(geode.node, timeout=TIMEOUT)
            except KeyboardInterrupt:
                got["KeyboardInterrupt"] = got.get("KeyboardInterrupt", 0) + 1
            except BaseException as exc:
                name = f"{type(exc).__name__}: {exc}"
                got[name] = got.get(name, 0) + 1
            while not fired.is_set():  # (an interrupt that comes after the receive lands here)
                with contextlib.suppress(KeyboardInterrupt):
                    fired.wait(TIMEOUT)
    finally:
        stop.set()
        armed.set()
        thread.join(TIMEOUT)
    gate = geode._runtime.gate
    assert not thread.is_alive(), f"the other thread hangs: gate {gate.lock}, main got {got}"
    assert not errors
    assert got == {"KeyboardInterrupt": ROUNDS}
    assert not gate.owned()
    geode.send("after", geode.node, geode.node)  # the Geode still works
    assert geode.receive(geode.node, timeout=TIMEOUT).data == "after"
