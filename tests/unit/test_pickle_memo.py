"""Damaged pickled bytes cannot make a decode allocate what they name: a quick DecodeError.

CPython's C unpickler grows its memo table to twice the index a PUT or LONG_BINPUT names and
zero-fills it: one LONG_BINPUT of 781485646, found by tests/fuzz_arrival.py, made one decode
allocate 12 GiB for 10 s; the checksum of the pickled sections refuses it first. A structured
dtype's pickle (in an array descriptor, read by the pure-Python unpickler) with a BYTEARRAY8
of 5 GiB made another allocate 5 GiB for 13 s; that unpickler refuses the opcode. Each case
runs in a subprocess whose address space is capped 1 GiB above what it uses, so an unbounded
allocation fails there (as a MemoryError) rather than take the machine's memory.
"""

from __future__ import annotations

import pytest
from mpirun import clean_env, python

MEMO = """
where = sys.argv[1]
message = Message({{"a": 1}}, headers={{"h": 1}}) if where == "data+rest" else Message({data})
meta, _ = codec.encode(message, codec.make_stamp(1, 0, 0.0, 0, 1))
end = header.SIZE + header.data_length(meta)
bomb = b"\\x80\\x05}}r" + struct.pack("<I", 781485646) + b"."  # {{}}, LONG_BINPUT, STOP
if where == "rest":
    damaged = bytearray(meta[:end]) + bomb
else:
    damaged = bytearray(meta[: header.SIZE]) + bomb + meta[end:]
    struct.pack_into("<I", damaged, header.DATA_LEN_AT, len(bomb))
"""

BYTEARRAY = """
data = np.zeros(2, [("a", "<i4"), ("b", "<f8")])  # a structured dtype travels pickled
meta, _ = codec.encode(Message(data), codec.make_stamp(1, 0, 0.0, 0, 1))
bomb = b"\\x80\\x05\\x96" + struct.pack("<Q", 5 * 2**30) + b"."  # BYTEARRAY8 of 5 GiB
descriptor = b"C\\x01" + struct.pack("<HI", 1, len(bomb)) + bomb + struct.pack("<q", 2)
section = descriptor + bytes(-(header.SIZE + len(descriptor)) % 8) + data.tobytes()
damaged = bytearray(meta[: header.SIZE]) + section
struct.pack_into("<I", damaged, header.DATA_LEN_AT, len(section))
"""

IMPORTS = """
import resource, struct, sys, time
import numpy as np
from geode_mpi import DecodeError, Message, codec
from geode_mpi.codec import header
"""

DECODE = """
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


def _decode_quickly(build: str, *args: str) -> str:
    """Run ``build`` (which makes ``damaged``) and decode it; check it took < 50 ms of CPU
    (unbounded: 10 s) and grew the peak RSS by < 10 MiB (12 GiB); return the error text."""
    result = python(["-c", IMPORTS + build + DECODE, *args], timeout=60, env=clean_env())
    assert result.returncode == 0, result.explain()
    outcome, cpu_s, grown_kib = result.stdout.split()
    assert outcome.startswith("DecodeError:"), result.explain()
    assert float(cpu_s) < 0.05, result.explain()
    assert int(grown_kib) < 10 * 1024, result.explain()
    return outcome.replace("_", " ")


@pytest.mark.parametrize(
    ("where", "data"),
    [("data", '{"a": 1}'), ("rest", '"x", headers={"h": 1}'), ("data+rest", "None")],
    ids=["data-section", "rest-section", "data-section-before-a-rest"],
)
def test_a_huge_memo_index_is_a_quick_decode_error_not_an_allocation(where: str, data: str) -> None:
    outcome = _decode_quickly(MEMO.format(data=data), where)
    assert "does not match its checksum" in outcome


def test_a_dtype_pickle_cannot_allocate_the_bytearray_it_names() -> None:
    assert "holds a bytearray" in _decode_quickly(BYTEARRAY)
