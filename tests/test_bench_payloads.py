"""benchmarks/pingpong.py --payloads' smoke test (``--quick``): every kind's row, ratios and
target lines, and the figures benchmarks/ab.py takes from its JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from mpirun import ROOT, mpirun

KINDS = (
    *("str", "int", "float", "dict", "tuple", "list", "array 8 B", "array 1 KiB"),
    *("subclass", "attrs", "script"),
)
SUBCLASSES = KINDS[-3:]


@pytest.mark.mpi
def test_every_payload_is_timed_beside_raw_with_its_targets(tmp_path: Path) -> None:
    out = tmp_path / "payloads.json"
    script = str(ROOT / "benchmarks" / "pingpong.py")
    args = [script, "--payloads", "all", "--quick", "--json", str(out)]
    result = mpirun(2, args, timeout=180, cwd=ROOT)
    assert result.returncode == 0, result.explain()
    assert "issue 17: Message(x) <= 1.5x raw send/recv of a fields dict" in result.stdout
    assert "issue 17: small arrays <= 1.0x raw pickle" in result.stdout
    found = json.loads(out.read_text())
    records = found["payloads"]
    assert tuple(records) == KINDS
    for kind, record in records.items():
        ratios = record["ratios"]
        assert ("bare/raw object" in ratios) == (kind not in SUBCLASSES), kind
        assert all(ratio > 0 for ratio in ratios.values()), record
    assert [t["worst"]["case"] in KINDS for t in found["targets"]] == [True, True]
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import ab
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    figures = ab.pingpong(found)
    assert figures["dict Message/raw fields"] == records["dict"]["ratios"]["Message/raw fields"]
    assert "array 8 B bare/raw object" in figures and "subclass Message us" in figures


def test_an_unknown_payload_kind_is_refused() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import pingpong_payloads
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert pingpong_payloads.kinds_option("int,dict") == ["int", "dict"]
    with pytest.raises(ValueError, match="unknown kind 'set'"):
        pingpong_payloads.kinds_option("int,set")


def test_a_subclass_raw_fields_dict_carries_its_class_name_and_attributes() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import pingpong_payloads as payloads
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    text = payloads.PAYLOADS["attrs"]
    assert payloads.raw_extras(payloads.Point, text) == {"type": "Point", "x": 1, "label": "a"}
    assert payloads.raw_extras(payloads.Tagged, text) == {"type": "Tagged"}
    assert payloads.raw_extras(payloads.Message, text) == {}
