#!/usr/bin/env bash
# `make demo`: attach xdp_counter to a veth in a throwaway network namespace,
# send known traffic, show the counters, detach and leave nothing behind.
set -euo pipefail
BIN=$(realpath "${1:-target/release/meshbpf}")
ID="mbdemo$$"
NS_A="${ID}a" NS_B="${ID}b" DEV_A="${ID:0:12}a" DEV_B="${ID:0:12}b"

cleanup() {
    # Removes the pins too if the demo stopped half-way (works without the interface).
    "$BIN" detach "$DEV_A" >/dev/null 2>&1 || true
    ip netns del "$NS_A" 2>/dev/null || true
    ip netns del "$NS_B" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

in_a() { nsenter --net="/run/netns/$NS_A" -- "$@"; }
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

ip netns add "$NS_A"
ip netns add "$NS_B"
ip link add "$DEV_A" netns "$NS_A" type veth peer name "$DEV_B" netns "$NS_B"
ip -n "$NS_A" addr add 192.0.2.1/24 dev "$DEV_A"
ip -n "$NS_B" addr add 192.0.2.2/24 dev "$DEV_B"
ip -n "$NS_A" link set "$DEV_A" up
ip -n "$NS_B" link set "$DEV_B" up
echo "demo network: $DEV_A (192.0.2.1, namespace $NS_A) <-> $DEV_B (192.0.2.2, namespace $NS_B)"

step meshbpf attach "$DEV_A"
in_a "$BIN" attach "$DEV_A"

step "ping -c 3 192.0.2.1 and 20 UDP datagrams of 100 bytes, from $NS_B"
ip netns exec "$NS_B" ping -q -c 3 -i 0.2 192.0.2.1 | tail -2
ip netns exec "$NS_B" python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(20):
    s.sendto(b"x" * 100, ("192.0.2.1", 9))'

step meshbpf stats "$DEV_A"
in_a "$BIN" stats "$DEV_A"
step meshbpf stats "$DEV_A" --json "(what a script reads)"
in_a "$BIN" stats "$DEV_A" --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(json.dumps({k: s[k] for k in ("interface", "mode", "packets", "bytes")}))
print("l4.udp =", json.dumps(s["l4"]["udp"]), " l4.icmp =", json.dumps(s["l4"]["icmp"]))'


step meshbpf detach "$DEV_A"
in_a "$BIN" detach "$DEV_A"
left=$(ls "${MESHBPF_BPFFS:-/sys/fs/bpf/meshbpf}/net" 2>/dev/null | grep -c "^$DEV_A\$" || true)
echo "pins left for $DEV_A: $left"
