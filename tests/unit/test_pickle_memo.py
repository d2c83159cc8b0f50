"""A damaged pickle cannot make C pickle allocate without bound: the checksum refuses it first.

CPython's unpickler grows its memo table to twice the index a PUT or LONG_BINPUT names and
zero-fills it: one LONG_BINPUT of 781485646, found by tests/fuzz_arrival.py, made one decode
allocate 12 GiB for 10 s. Each case runs in a subprocess whose address space is capped 1 GiB
above what it uses, so the unbounded allocation would fail there (as a MemoryError) rather
than take the machine's memory.
"""

from __future__ import annotations

import pytest
from mpirun import clean_env, python

BOMB = """
import resource, struct, sys, time
from geode_mpi import DecodeError, Message, codec
from geode_mpi.codec import wire

where = sys.argv[1]
message = Message({{"a": 1}}, headers={{"h": 1}}) if where == "data+rest" else Message({data})
meta, _ = codec.encode(message, codec.make_stamp(1, 0, 0.0, 0, 1))
end = wire.HEAD_SIZE + struct.unpack_from("<I", meta, 44)[0]
bomb = b"\\x80\\x05}}r" + struct.pack("<I", 781485646) + b"."  # {{}}, LONG_BINPUT, STOP
if where == "rest":
    damaged = bytearray(meta[:end]) + bomb
else:
    damaged = bytearray(meta[: wire.HEAD_SIZE]) + bomb + meta[end:]
    struct.pack_into("<I", damaged, 44, len(bomb))

with open("/proc/self/status") as status:
    vm_kib = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, ((vm_kib + 2**20) * 1024, resource.RLIM_INFINITY))
rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.thread_time()
try:
    codec.decode(bytes(damaged), [], ["a", "b"])
    print("decoded")
except DecodeError as exc:
    print("DecodeError:" + str(exc).replace(" ", "_"))
print(time.thread_time() - started)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before)
"""


@pytest.mark.parametrize(
    ("where", "data"),
    [("data", '{"a": 1}'), ("rest", '"x", headers={"h": 1}'), ("data+rest", "None")],
    ids=["data-section", "rest-section", "data-section-before-a-rest"],
)
def test_a_huge_memo_index_is_a_quick_decode_error_not_an_allocation(where: str, data: str) -> None:
    result = python(["-c", BOMB.format(data=data), where], timeout=60, env=clean_env())
    assert result.returncode == 0, result.explain()
    outcome, cpu_s, grown_kib = result.stdout.split()
    assert outcome.startswith("DecodeError"), result.explain()
    assert "does_not_match_its_checksum" in outcome, result.explain()
    assert float(cpu_s) < 0.05, result.explain()  # it took 10 s of CPU, unbounded
    assert int(grown_kib) < 10 * 1024, result.explain()  # and 12 GiB
