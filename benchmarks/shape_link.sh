#!/bin/bash
# Run a command with MPICH's ofi/tcp traffic shaped to a link of RATE (tc, root only).
#
#   benchmarks/shape_link.sh RATE COMMAND...     e.g. shape_link.sh 1gbit mpiexec -n 2 python ...
#   benchmarks/shape_link.sh off                 remove what an interrupted run left behind
#
# Only the ranks' own TCP traffic is shaped, never the rest of the loopback: libfabric's tcp
# provider is pinned to a port range (FI_TCP_PORT_LOW_RANGE / FI_TCP_PORT_HIGH_RANGE, the ports
# its endpoints listen on), and an htb qdisc on lo sends the packets to or from those ports
# (u32 filters on the source and destination port) through one class of RATE; all other
# traffic is unclassified, which htb sends on unshaped (its direct queue). The qdisc is removed when the command ends,
# however it ends (trap). The command runs with MPICH's network path forced
# (MPIR_CVAR_NOLOCAL=1 MPIR_CVAR_CH4_NETMOD=ofi FI_PROVIDER=tcp) and GEODE_SHAPED_LINK=RATE,
# which benchmarks/compress.py records beside its figures.
set -euo pipefail

DEV=lo
PORT_LOW=${SHAPE_PORT_LOW:-47360}  # 16 ports from here: a multiple of 16, for the u32 mask
PORT_HIGH=$((PORT_LOW + 15))
MASK=0xfff0

remove() {
    tc qdisc del dev "$DEV" root handle 1: htb 2>/dev/null || true
}

if [ "${1:-}" = "off" ]; then
    remove
    exit 0
fi
if [ $# -lt 2 ]; then
    echo "usage: $0 RATE COMMAND... (RATE as tc says it: 1gbit, 10gbit, 500mbit) | $0 off" >&2
    exit 2
fi
if [ $((PORT_LOW % 16)) -ne 0 ]; then
    echo "SHAPE_PORT_LOW must be a multiple of 16, got $PORT_LOW" >&2
    exit 2
fi
RATE=$1
shift
if tc qdisc show dev "$DEV" | grep -q "qdisc htb 1:"; then
    echo "$DEV already has an htb qdisc 1: (another shaped run?); '$0 off' removes it" >&2
    exit 1
fi

# The bucket holds 1 ms of the link (a 10 Gbit/s link: 1.25 MB), at least 256 KiB: loopback
# hands tc segments of up to 64 KiB.
BITS=$(python3 - "$RATE" <<'EOF'
import re, sys
text = sys.argv[1].lower()
m = re.fullmatch(r"([0-9.]+)([kmg]?)bit", text)
if not m:
    sys.exit(f"RATE must look like 1gbit, 10gbit or 500mbit, got {sys.argv[1]!r}")
print(int(float(m[1]) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m[2]]))
EOF
)
BURST=$((BITS / 8 / 1000 > 262144 ? BITS / 8 / 1000 : 262144))

trap remove EXIT INT TERM
tc qdisc add dev "$DEV" root handle 1: htb  # no default class: unclassified goes unshaped
tc class add dev "$DEV" parent 1: classid 1:10 htb rate "$RATE" ceil "$RATE" \
    burst "$BURST" cburst "$BURST" quantum 65536
for field in sport dport; do
    tc filter add dev "$DEV" parent 1: protocol ip prio 1 u32 \
        match ip "$field" "$PORT_LOW" "$MASK" flowid 1:10
done

export MPIR_CVAR_NOLOCAL=1 MPIR_CVAR_CH4_NETMOD=ofi FI_PROVIDER=tcp
export FI_TCP_PORT_LOW_RANGE=$PORT_LOW FI_TCP_PORT_HIGH_RANGE=$PORT_HIGH
export GEODE_SHAPED_LINK=$RATE
status=0
"$@" || status=$?
echo "shaped $DEV ports $PORT_LOW-$PORT_HIGH at $RATE:" >&2
tc -s class show dev "$DEV" classid 1:10 | sed 's/^/  /' >&2
exit $status
