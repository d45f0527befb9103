"""What README.md says xdp_counter and xdp_mesh_filter make of a frame.

The rules are the README's ("What xdp_counter counts", "How packets are
parsed for matching"), written down without looking at include/packet_parse.h;
scapy decodes every header's fields, so neither the offsets of fields inside
a header nor their bit masks come from meshbpf. Where the README is silent,
the choice is marked SILENT and follows the RFC.

`expect(frame)` reads only the frame's bytes, never how it was built.
"""

from dataclasses import dataclass
from typing import Optional

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import AH
from scapy.layers.l2 import ARP, Dot1Q, Dot3, Ether

ETH_HLEN = 14
ETH_P_IP, ETH_P_IPV6, ETH_P_ARP = 0x0800, 0x86DD, 0x0806
# "Up to two VLAN tags (802.1ad outer and 802.1Q inner)". SILENT on their
# order: either type is taken at either depth (two 802.1Q tags are common).
VLAN_TYPES = (0x8100, 0x88A8)
VLAN_MAX = 2
VLAN_HLEN = 4
IPV4_MIN, IPV6_HLEN = 20, 40
# "Up to 8 IPv6 extension headers are walked (hop-by-hop, routing,
# destination options, fragment, AH)".
IPV6_EXT_MAX = 8
HOPOPTS, ROUTING, FRAGMENT, AH_NR, DSTOPTS = 0, 43, 44, 51, 60
FRAG_HLEN = 8
OPTS_CLASS = {HOPOPTS: IPv6ExtHdrHopByHop, ROUTING: IPv6ExtHdrRouting, DSTOPTS: IPv6ExtHdrDestOpt}
# "L4 needs its minimum header: TCP 20, UDP 8, ICMP 8, ICMPv6 8 bytes", and
# ICMP counts over IPv4 only, ICMPv6 over IPv6 only.
L4_MIN = {6: ("tcp", 20, None), 17: ("udp", 8, None), 1: ("icmp", 8, 4), 58: ("icmpv6", 8, 6)}
ARPHRD_ETHER = 1
ARP_HLEN = 8


@dataclass
class Expected:
    l3: str = "other"
    l4: str = "other"
    # The protocol a filter rule matches: the IPv4 protocol field, or the
    # IPv6 header after the extension headers; None where that header is
    # never reached ("another IP protocol").
    proto: Optional[int] = None
    # Only with a whole TCP or UDP header in a first (or only) fragment.
    ports: Optional[tuple] = None


def expect(frame: bytes) -> Expected:
    out = Expected()
    eth = Ether(frame[:ETH_HLEN])
    # scapy turns a type field of 1500 or less into an 802.3 length.
    ethertype = eth.len if isinstance(eth, Dot3) else eth.type
    pos = ETH_HLEN
    tags = 0
    while ethertype in VLAN_TYPES:
        # "With a third tag, the frame is other."
        if tags == VLAN_MAX or pos + VLAN_HLEN > len(frame):
            return out
        ethertype = Dot1Q(frame[pos : pos + VLAN_HLEN]).type
        pos += VLAN_HLEN
        tags += 1
    if ethertype == ETH_P_IP:
        ipv4(frame, pos, out)
    elif ethertype == ETH_P_IPV6:
        ipv6(frame, pos, out)
    elif ethertype == ETH_P_ARP and arp_whole(frame, pos):
        out.l3 = "arp"
    return out


def ipv4(frame, pos, out):
    # "IPv4 needs version 4 and IHL >= 5 with the whole header present", and
    # "an IPv4 total length shorter than its header is invalid". SILENT on
    # the header checksum: not required to be right.
    if pos + IPV4_MIN > len(frame):
        return
    ip = IP(frame[pos : pos + IPV4_MIN])
    hlen = ip.ihl * 4
    if ip.version != 4 or ip.ihl < 5 or pos + hlen > len(frame) or ip.len < hlen:
        return
    out.l3 = "ipv4"
    # The datagram ends at its total length, or earlier where the frame does
    # (a longer total length than the frame is a truncated datagram, still IPv4).
    end = min(pos + ip.len, len(frame))
    transport(frame, ip.proto, 4, ip.frag != 0, pos + hlen, end, out)


def ipv6(frame, pos, out):
    if pos + IPV6_HLEN > len(frame):
        return
    ip6 = IPv6(frame[pos : pos + IPV6_HLEN])
    if ip6.version != 6:
        return
    out.l3 = "ipv6"
    nh = ip6.nh
    pos += IPV6_HLEN
    if ip6.plen:
        end = min(pos + ip6.plen, len(frame))
    elif nh == HOPOPTS:
        # SILENT: a payload length of 0 is a jumbogram's (RFC 2675), whose
        # length is in a hop-by-hop option; taken as "up to the frame's end".
        end = len(frame)
    else:
        # Without hop-by-hop options it is no jumbogram (RFC 2675; Linux trims
        # such a packet to 40 bytes), so the payload length says the payload
        # is empty, and "the L4 header must end within the datagram's own
        # length (..., IPv6 payload length)".
        end = pos
    later = False
    for _ in range(IPV6_EXT_MAX):
        if nh not in (HOPOPTS, ROUTING, FRAGMENT, AH_NR, DSTOPTS):
            break
        # Headers lie within the datagram: "a frame's padding after a short
        # datagram is never read as headers".
        if nh == FRAGMENT:
            if pos + FRAG_HLEN > end:
                return
            frag = IPv6ExtHdrFragment(frame[pos : pos + FRAG_HLEN])
            nh, pos = frag.nh, pos + FRAG_HLEN
            # "The data of a later IPv6 fragment is never parsed as headers."
            if frag.offset:
                later = True
                break
            continue
        if pos + 2 > end:
            return
        # Next header and length are the first two bytes of each of these.
        if nh == AH_NR:
            # RFC 4302: the length counts 4-byte units, less 2. SILENT on an AH
            # shorter than its 12 fixed bytes: taken at its stated length.
            ah = AH(frame[pos : pos + 2])
            nh, length = ah.nh, (ah.payloadlen + 2) * 4
        else:
            opts = OPTS_CLASS[nh](frame[pos : pos + 2])
            nh, length = opts.nh, (opts.len + 1) * 8
        if pos + length > end:
            return
        pos += length
    else:
        if nh in (HOPOPTS, ROUTING, FRAGMENT, AH_NR, DSTOPTS):
            # A ninth extension header: "a longer chain is l4.other", and its
            # L4 header is never reached ("another IP protocol").
            return
    transport(frame, nh, 6, later, pos, end, out)


def transport(frame, proto, family, later, pos, end, out):
    out.proto = proto
    if proto not in L4_MIN:
        return
    name, size, only = L4_MIN[proto]
    if only is not None and only != family:
        return
    # "A later fragment (non-zero offset) carries no L4 header, and still
    # counts under its protocol"; it has no ports.
    if later:
        out.l4 = name
        return
    # "A truncated TCP/UDP header leaves the protocol known and the ports
    # unknown", and the header "must end within the datagram's own length".
    if pos + size > end:
        return
    out.l4 = name
    if name in ("tcp", "udp"):
        header = (TCP if name == "tcp" else UDP)(frame[pos : pos + size])
        out.ports = (header.sport, header.dport)


def arp_whole(frame, pos):
    # "An ARP frame is ARP only with its whole header, addresses included
    # (8 + 2 x (hardware + protocol length) bytes), and the lengths its types
    # need (6 for Ethernet, 4 for IPv4)". SILENT on a zero length: an address
    # of no bytes is no address, so not valid.
    if pos + ARP_HLEN > len(frame):
        return False
    arp = ARP(frame[pos : pos + ARP_HLEN])
    if arp.hwlen == 0 or arp.plen == 0:
        return False
    if arp.hwtype == ARPHRD_ETHER and arp.hwlen != 6:
        return False
    if arp.ptype == ETH_P_IP and arp.plen != 4:
        return False
    return pos + ARP_HLEN + 2 * (arp.hwlen + arp.plen) <= len(frame)
