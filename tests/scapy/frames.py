#!/usr/bin/python3
"""Frames for tests/parse_scapy.rs, built with scapy from a fixed seed, each
with the classes README.md gives it (oracle.py, from the frame's bytes alone).

Prints one JSON object per line: the frame in hex, scapy's summary of it,
the expected `l3` and `l4` of xdp_counter, and what xdp_mesh_filter matches
on (`proto`, `ports`). The same seed prints the same lines.

    /usr/bin/python3 tests/scapy/frames.py [--seed N] [--count N]
"""

import argparse
import json
import logging
import random
import sys
from pathlib import Path

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_RR, IPOption_Timestamp
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    PadN,
)
from scapy.layers.ipsec import AH, ESP
from scapy.layers.l2 import ARP, GRE, Dot1Q, Ether
from scapy.layers.sctp import SCTP
from scapy.packet import Raw

sys.path.insert(0, str(Path(__file__).parent))
from oracle import ETH_HLEN, expect  # noqa: E402

MAC = dict(dst="02:00:00:00:00:02", src="02:00:00:00:00:01")
SRC4, DST4 = "192.0.2.1", "192.0.2.2"
SRC6, DST6 = "2001:db8::1", "2001:db8::2"
# Ports the filter's rules name, and others.
PORTS = (53, 80, 443, 5000, 40000)
# IP protocols beyond the four xdp_counter counts: SCTP, GRE, ESP, AH, IPIP,
# IPv6-in-IPv4, no next header, and unassigned ones.
OTHER_PROTOS = (132, 47, 50, 51, 4, 41, 59, 143, 253, 255)
ETHERTYPE_VLAN = (0x8100, 0x88A8)
# Not IP, ARP nor a VLAN tag this parser takes: an 802.3 length, IPX, MPLS,
# LLDP, the old QinQ 0x9100, local experimental, 0xFFFF.
NON_IP = (0x002E, 0x05DC, 0x8137, 0x8847, 0x88CC, 0x9100, 0x88B5, 0xFFFF)
EXT_HEADERS = ("hbh", "routing", "dstopts", "frag0", "frag", "ah")
EXT_NUMBERS = {"hbh": 0, "routing": 43, "dstopts": 60, "frag0": 44, "frag": 44, "ah": 51}


def payload(rng, most=64):
    return Raw(bytes(rng.getrandbits(8) for _ in range(rng.choice((0, 0, 1, 3, rng.randrange(most))))))


def stack(*layers):
    """The layers as one packet; unlike `/`, which copies both sides each time."""
    for outer, inner in zip(layers, layers[1:]):
        outer.lastlayer().add_payload(inner)
    return layers[0]


def l2(rng, ethertype):
    """Ethernet with 0 to 3 VLAN tags (a third is past the limit), ending in `ethertype`."""
    tags = rng.choices((0, 1, 2, 3), weights=(55, 20, 18, 7))[0]
    kinds = [rng.choice(ETHERTYPE_VLAN) for _ in range(tags)]
    frame = Ether(type=kinds[0] if kinds else ethertype, **MAC)
    for i in range(tags):
        inner = kinds[i + 1] if i + 1 < tags else ethertype
        frame = stack(frame, Dot1Q(vlan=rng.randrange(4096), prio=rng.randrange(8), type=inner))
    return frame


def transport(rng, proto, family):
    """The layer after IP for protocol number `proto`."""
    sport, dport = rng.choice(PORTS), rng.choice(PORTS)
    if proto == 6:
        options = [("MSS", 1460), ("NOP", None), ("WScale", 7)] if rng.random() < 0.3 else []
        return TCP(sport=sport, dport=dport, flags=rng.choice(("S", "SA", "A", "PA", "F")), options=options)
    if proto == 17:
        return UDP(sport=sport, dport=dport)
    if proto == 1:
        return ICMP(type=rng.choice((0, 3, 8, 11)))
    if proto == 58:
        return rng.choice((ICMPv6EchoRequest(), ICMPv6ND_NS(tgt=DST6)))
    if proto == 132:
        return SCTP(sport=sport, dport=dport)
    if proto == 47:
        return GRE(proto=0x0800)
    if proto == 50:
        return ESP(spi=rng.randrange(1, 1 << 32), seq=1)
    return Raw(b"")


def protocol(rng):
    return rng.choices((6, 17, 1, 58, rng.choice(OTHER_PROTOS)), weights=(25, 25, 15, 10, 25))[0]


def ipv4_frame(rng):
    proto = protocol(rng)
    options = []
    if rng.random() < 0.3:
        options = rng.choice(
            (
                [IPOption_NOP()] * rng.randrange(1, 40),
                [IPOption_RR(routers=[DST4] * rng.randrange(1, 9))],
                [IPOption_Timestamp(flg=0, timestamp=[rng.randrange(1 << 32)] * rng.randrange(1, 9))],
            )
        )
    ip = IP(src=SRC4, dst=DST4, proto=proto, options=options, ttl=64)
    roll = rng.random()
    if roll < 0.15:
        ip.frag = rng.choice((1, 185, 0x1FFF, rng.randrange(1, 0x2000)))
        ip.flags = rng.choice(("", "MF"))
    elif roll < 0.25:
        ip.flags = rng.choice(("MF", "DF"))
    upper = stack(transport(rng, proto, 4), payload(rng))
    built = bytes(stack(ip.copy(), upper.copy()))
    hlen = (built[0] & 0x0F) * 4
    roll = rng.random()
    if roll < 0.06:
        ip.version = rng.choice((0, 5, 6, 15))
    elif roll < 0.12:
        ip.ihl = rng.randrange(0, 5)
    elif roll < 0.18:
        # IHL beyond the options present: the header swallows what follows.
        ip.ihl = min(15, hlen // 4 + rng.randrange(1, 4))
    elif roll < 0.32:
        # Shorter than the datagram: below the header, into the L4 header,
        # or after it; the rest of the bytes become padding.
        ip.len = rng.choice((0, hlen - 1, hlen, hlen + 1, hlen + 4, hlen + 7, hlen + 8, hlen + 19, hlen + 20))
        ip.len = max(0, min(ip.len, len(built)))
    elif roll < 0.38:
        ip.len = min(0xFFFF, len(built) + rng.choice((1, 8, 1000)))
    elif roll < 0.45:
        # A short datagram padded to the Ethernet minimum, as on the wire.
        upper = transport(rng, proto, 4)
        return stack(l2(rng, 0x0800), ip, upper, Raw(b"\0" * rng.randrange(1, 40)))
    return stack(l2(rng, 0x0800), ip, upper)


def ext_header(rng, kind, nh):
    if kind in ("hbh", "dstopts"):
        units = rng.choice((0, 0, 1, 3))
        cls = IPv6ExtHdrHopByHop if kind == "hbh" else IPv6ExtHdrDestOpt
        return cls(nh=nh, options=[PadN(optdata=b"\0" * (8 * units + 4))])
    if kind == "routing":
        return IPv6ExtHdrRouting(nh=nh, type=rng.choice((0, 2, 3)), addresses=[DST6] * rng.choice((0, 1, 2)))
    if kind == "frag0":
        return IPv6ExtHdrFragment(nh=nh, offset=0, m=rng.randrange(2), id=rng.randrange(1 << 32))
    if kind == "frag":
        offset = rng.choice((1, 185, 0x1FFF, rng.randrange(1, 0x2000)))
        return IPv6ExtHdrFragment(nh=nh, offset=offset, m=rng.randrange(2), id=rng.randrange(1 << 32))
    icv = rng.choice((1, 3, 4))
    return AH(nh=nh, payloadlen=icv + 1, spi=rng.randrange(1, 1 << 32), icv=b"\0" * (4 * icv))


def ipv6_frame(rng):
    # Chains of 0 to 10 headers, most around the limit of 8.
    length = rng.choices(range(11), weights=(14, 8, 6, 4, 4, 4, 6, 12, 16, 14, 12))[0]
    kinds = [rng.choice(EXT_HEADERS) for _ in range(length)]
    proto = protocol(rng)
    chain = [ext_header(rng, kind, EXT_NUMBERS[after]) for kind, after in zip(kinds, kinds[1:])]
    if kinds:
        chain.append(ext_header(rng, kinds[-1], proto))
    upper = stack(*chain, transport(rng, proto, 6), payload(rng))
    ip6 = IPv6(src=SRC6, dst=DST6, nh=EXT_NUMBERS[kinds[0]] if kinds else proto)
    plen = len(bytes(upper))
    roll = rng.random()
    if roll < 0.05:
        ip6.version = rng.choice((0, 4, 15))
    elif roll < 0.20:
        # Payload length 0 (a jumbogram's), short, or past the frame.
        ip6.plen = rng.choice((0, 0, rng.randrange(plen + 1), max(0, plen - 8), plen + 1, plen + 100))
    elif roll < 0.27:
        ip6 = IPv6(src=SRC6, dst=DST6, nh=ip6.nh, plen=plen)
        return stack(l2(rng, 0x86DD), ip6, upper, Raw(b"\0" * rng.randrange(1, 40)))
    return stack(l2(rng, 0x86DD), ip6, upper)


def arp_frame(rng):
    hwtype = rng.choice((1, 1, 1, 6, 32, rng.randrange(1 << 16)))
    ptype = rng.choice((0x0800, 0x0800, 0x86DD, rng.randrange(1 << 16)))
    hwlen = rng.choice((6, 6, 0, 8, 20, rng.randrange(256)))
    plen = rng.choice((4, 4, 0, 16, rng.randrange(256)))
    if hwtype == 1 and ptype == 0x0800 and rng.random() < 0.5:
        hwlen, plen = 6, 4
    arp = ARP(hwtype=hwtype, ptype=ptype, hwlen=hwlen, plen=plen, op=rng.choice((1, 2)))
    # Only the fixed 8 bytes come from scapy's fields: its address fields
    # follow hwtype, not hwlen. The addresses are as long as the lengths say,
    # give or take a byte.
    fixed = bytes(arp)[:8]
    body = 2 * (hwlen + plen) + rng.choice((0, 0, 0, -1, 1, 20))
    return stack(l2(rng, 0x0806), Raw(fixed + bytes(rng.getrandbits(8) for _ in range(max(0, body)))))


def non_ip_frame(rng):
    return stack(l2(rng, rng.choice(NON_IP)), payload(rng, 60))


def layer_ends(frame):
    """Where each layer of the frame ends as scapy dissects it, in bytes from
    the frame's start (a dissected layer keeps its bytes: no rebuild)."""
    ends = []
    layer = Ether(frame)
    while layer:
        ends.append(len(frame) - len(layer.payload))
        layer = layer.payload
    return ends


def cut(rng, packet):
    """The frame, often cut at a layer boundary, just around one, or anywhere."""
    frame = bytes(packet)
    roll = rng.random()
    if roll < 0.55:
        return frame
    if roll < 0.85:
        at = rng.choice(layer_ends(frame)) + rng.choice((0, 0, -1, 1, -2, 2, -4, 4, -7))
    else:
        at = rng.randrange(ETH_HLEN, len(frame) + 1)
    # XDP test runs refuse frames shorter than an Ethernet header.
    return frame[: max(ETH_HLEN, at)]


def crafted():
    """Frames at the datagram-length edges that random ones reach only now and
    then: a payload length of 0 with and without hop-by-hop options, and
    fragment headers that end just inside or just past the payload length."""
    udp = UDP(sport=53, dport=80)
    later = IPv6ExtHdrFragment(nh=17, offset=1)
    yield Ether(**MAC) / IPv6(src=SRC6, dst=DST6, nh=17, plen=0) / udp
    yield Ether(**MAC) / IPv6(src=SRC6, dst=DST6, nh=0, plen=0) / IPv6ExtHdrHopByHop(nh=17) / udp
    yield Ether(**MAC) / IPv6(src=SRC6, dst=DST6, nh=44, plen=8) / later / Raw(b"\0" * 8)
    yield Ether(**MAC) / IPv6(src=SRC6, dst=DST6, nh=44, plen=7) / later / Raw(b"\0" * 8)
    yield Ether(**MAC) / IPv6(src=SRC6, dst=DST6, nh=60, plen=7) / IPv6ExtHdrDestOpt(nh=17) / udp
    yield Ether(**MAC) / IP(src=SRC4, dst=DST4, proto=17, len=20) / udp


def frames(seed, count):
    rng = random.Random(seed)
    kinds = (ipv4_frame, ipv6_frame, arp_frame, non_ip_frame)
    edges = [bytes(packet) for packet in crafted()]
    yield from edges
    for _ in range(count - len(edges)):
        packet = rng.choices(kinds, weights=(40, 45, 8, 7))[0](rng)
        yield cut(rng, packet)


def main():
    # Frames built out of place on purpose (ICMPv6 over IPv4, layers measured
    # alone) make scapy warn about checksums it cannot compute: noise here.
    logging.getLogger("scapy").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--count", type=int, default=4000)
    args = parser.parse_args()
    for frame in frames(args.seed, args.count):
        want = expect(frame)
        line = {
            "hex": frame.hex(),
            "summary": Ether(frame).summary(),
            "l3": want.l3,
            "l4": want.l4,
            "proto": want.proto,
            "ports": want.ports,
        }
        print(json.dumps(line))


if __name__ == "__main__":
    main()
