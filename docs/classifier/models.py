#!/usr/bin/env python3
"""Offline models of packet-classification families on the shared ClassBench sets.

Written for docs/classifier.md: for each set (acl1, fw1, ipc1 x 1k, 10k in
../shared/classbench beside the checkout, or $MESHBPF_CLASSBENCH) it builds
each family's structure from the rules, classifies a sample of the set's
trace headers with it, and counts what the kernel would have to do per
packet (lookups, probes, words, rules compared) and what it would have to
hold (entries, bytes).
Every family's answer for every sampled header is checked against a plain
linear first-match over the same rules; a single disagreement stops the run,
since the counts of a model that classifies wrongly mean nothing.

Python 3 standard library only; deterministic (no randomness; only the
build-time column depends on the machine). Run: `python3 models.py`
(all six sets, 3-4 minutes on 2 shared cores), or name sets:
`python3 models.py fw1_1000 acl1_10000`. Prints Markdown tables.

Semantics are xdp_mesh_filter's (src/rules/compile.rs): first match in file
order; a prefix /0 and a port range 0-65535 are no condition; a protocol is
any or one number; a rule with a port condition matches TCP and UDP packets
with known ports only; a packet of another protocol has no ports. ClassBench's
TCP-flags column is ignored (the rules JSON has no such field).
"""

import bisect
import os
import sys
import time
from collections import namedtuple

HERE = os.path.dirname(os.path.abspath(__file__))
SETS = ["acl1_1000", "fw1_1000", "ipc1_1000", "acl1_10000", "fw1_10000", "ipc1_10000"]
# Trace headers per set: evenly spaced over the trace file (every
# ceil(n / SAMPLE)-th line), so the 1k sets use their whole trace.
SAMPLE = 1000
TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
# A packet without ports carries this in both port fields: outside every
# rule range, inside the "any" range of rules without one, which is the whole
# 17-bit port axis (a power of two, so that trees cut it with shifts).
NO_PORT = 65536
PORT_AXIS = (0, 2**17 - 1)
# Per-lookup costs used for the "model ns" columns (see docs/classifier.md):
# a hash map lookup is a helper call, measured at about 29 ns in
# BENCHMARKS.md section 2's single-probe rows; an array lookup is inlined by
# the verifier (one bounds check and a load), 1-2 ns: 2 ns is used.
HASH_NS = 29
ARRAY_NS = 2

# src, dst: (addr, len) or None; proto: int or None; sport, dport: (lo, hi) or None.
Rule = namedtuple("Rule", "src dst proto sport dport")
# sport and dport are NO_PORT when the packet has none.
Packet = namedtuple("Packet", "src dst proto sport dport")


def mask(length):
    return (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF if length else 0


def has_ports(rule):
    return rule.sport is not None or rule.dport is not None


def addr_range(prefix):
    """The addresses of a prefix as an inclusive interval."""
    if prefix is None:
        return (0, 0xFFFFFFFF)
    addr, length = prefix
    return (addr, addr | (~mask(length) & 0xFFFFFFFF))


def port_range(ports):
    """A port condition as an interval of the NO_PORT-extended port axis."""
    return PORT_AXIS if ports is None else ports


def proto_range(proto):
    return (0, 255) if proto is None else (proto, proto)


def boxes(rule):
    """The rule as five inclusive intervals (src, dst, proto, sport, dport)."""
    return (
        addr_range(rule.src),
        addr_range(rule.dst),
        proto_range(rule.proto),
        port_range(rule.sport),
        port_range(rule.dport),
    )


def packet_fields(packet):
    return (packet.src, packet.dst, packet.proto, packet.sport, packet.dport)


# ---------------------------------------------------------------- input


def classbench_dir():
    return os.environ.get(
        "MESHBPF_CLASSBENCH", os.path.normpath(os.path.join(HERE, "../../../shared/classbench"))
    )


def parse_prefix(text):
    addr, length = text.split("/")
    a, b, c, d = (int(x) for x in addr.split("."))
    length = int(length)
    value = ((a << 24) | (b << 16) | (c << 8) | d) & mask(length)
    return (value, length) if length else None


def parse_ports(text):
    lo, hi = (int(x) for x in text.split(":"))
    return None if (lo, hi) == (0, 65535) else (lo, hi)


def parse_rules(path):
    rules = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = [x.strip() for x in line.lstrip("@").split("\t")]
            proto, proto_mask = (int(x, 16) for x in fields[4].split("/"))
            if proto_mask not in (0, 0xFF):
                raise SystemExit(f"{path}:{n}: protocol mask {fields[4]} is neither 0x00 nor 0xFF")
            rule = Rule(
                parse_prefix(fields[0]),
                parse_prefix(fields[1]),
                proto if proto_mask else None,
                parse_ports(fields[2]),
                parse_ports(fields[3]),
            )
            if has_ports(rule) and rule.proto not in (None, TCP, UDP):
                raise SystemExit(f"{path}:{n}: ports on protocol {rule.proto}")
            rules.append(rule)
    return rules


def parse_trace(path):
    with open(path) as f:
        lines = [line.split() for line in f if line.strip()]
    step = -(-len(lines) // SAMPLE)
    packets = []
    for fields in lines[::step]:
        src, dst, sport, dport, proto = (int(x) for x in fields[:5])
        if proto not in (TCP, UDP):
            sport = dport = NO_PORT
        packets.append(Packet(src, dst, proto, sport, dport))
    return packets, len(lines)


# ------------------------------------------------------------ reference


class Linear:
    """Plain first match in file order: the reference every model is checked by."""

    def __init__(self, rules):
        self.flat = []
        for index, rule in enumerate(rules):
            (s0, s1), (d0, d1), (p0, p1), (a0, a1), (b0, b1) = boxes(rule)
            self.flat.append((s0, s1, d0, d1, p0, p1, a0, a1, b0, b1, index))

    def classify(self, p):
        src, dst, proto, sport, dport = packet_fields(p)
        for s0, s1, d0, d1, p0, p1, a0, a1, b0, b1, index in self.flat:
            if (
                s0 <= src <= s1
                and d0 <= dst <= d1
                and p0 <= proto <= p1
                and a0 <= sport <= a1
                and b0 <= dport <= b1
            ):
                return index
        return None


def percentile(values, q):
    """The q-th percentile (0-100) by the nearest-rank method."""
    ordered = sorted(values)
    if not ordered:
        return 0
    rank = max(1, -(-q * len(ordered) // 100))
    return ordered[rank - 1]


# ------------------------------------------- cross-producting, as today
#
# A replica of src/rules/compile.rs at ffce93c (the design the issue
# measured): per side, address classes (the longest rule prefix holding the
# address); per protocol class, a decision entry for each class that decides
# alone, for each (src class, dst class) pair neither decides alone, and, where
# rules with ports come first, one entry per port cell. It counts the entries
# the compiler would emit, in the compiler's order and with its own counting
# past the cap (a pair then counts one entry, without its port cells), so that
# its totals can be compared with the table; `cap` makes it stop as
# soon as the total passes the cap instead (for the partition search).

MAX_DECISIONS = 262_144
V4, V6 = 1, 2


class OverCap(Exception):
    pass


def contains(outer, inner):
    return outer[1] <= inner[1] and (inner[0] & mask(outer[1])) == outer[0]


class Classes:
    """One side's classes: the distinct rule prefixes, sorted so that each is
    followed by the prefixes it holds; class c is prefixes[c - 1], class 0 is
    "no rule prefix" (every class descends from it). IPv4 only."""

    def __init__(self, prefixes):
        self.prefixes = sorted(set(prefixes))
        self.index = {p: c for c, p in enumerate(self.prefixes, 1)}
        n = len(self.prefixes)
        self.parent = [0] * (n + 1)
        self.last = [n] * (n + 1)
        stack = []
        for c, p in enumerate(self.prefixes, 1):
            while stack and not contains(self.prefixes[stack[-1] - 1], p):
                self.last[stack.pop()] = c - 1
            self.parent[c] = stack[-1] if stack else 0
            stack.append(c)
        self.count = n
        self.lengths = sorted({length for _, length in self.prefixes}, reverse=True)

    def class_of(self, prefix):
        return 0 if prefix is None else self.index[prefix]

    def families(self, c):
        return V4 | V6 if c == 0 else V4

    def ranges(self, families):
        out = [(0, 0)]
        if families & V4:
            out.append((1, self.count))
        return out

    def ancestors(self, c):
        out = [c]
        while c:
            c = self.parent[c]
            out.append(c)
        return out

    def subtree(self, c):
        return (c, self.last[c])

    def longest_match(self, addr):
        for length in self.lengths:
            c = self.index.get((addr & mask(length), length))
            if c:
                return c
        return 0


def proto_classes(rules, numbered):
    """The compiler's protocol classes; with `numbered`, also one class per
    protocol number a rule names beyond TCP, UDP, ICMP and ICMPv6 (what the
    same design needs once rules name protocols by number)."""
    named = sorted({r.proto for r in rules if r.proto not in (None, TCP, UDP, ICMP, ICMPV6)})
    return ["tcp", "udp", "icmp", "icmpv6"] + (named if numbered else []) + ["other", "arp"]


def proto_families(pc):
    return {"icmp": V4, "icmpv6": V6, "arp": 0}.get(pc, V4 | V6)


def admits(pc, rule):
    if rule.proto is None:
        return pc in ("tcp", "udp") if has_ports(rule) else pc != "arp"
    return pc == {TCP: "tcp", UDP: "udp", ICMP: "icmp", ICMPV6: "icmpv6"}.get(rule.proto, rule.proto)


def packet_proto_class(proto, classes):
    pc = {TCP: "tcp", UDP: "udp", ICMP: "icmp"}.get(proto, proto)
    return pc if pc in classes else "other"


class PortClasses:
    """Port -> class: the intervals between rule range boundaries, from 1."""

    def __init__(self, rules):
        self.sport = self._starts(r.sport for r in rules)
        self.dport = self._starts(r.dport for r in rules)
        self.counts = (len(self.sport), len(self.dport))

    @staticmethod
    def _starts(ranges):
        starts = {0}
        for rng in ranges:
            if rng is not None:
                starts.add(rng[0])
                if rng[1] < 65535:
                    starts.add(rng[1] + 1)
        return sorted(starts)

    @staticmethod
    def _class(starts, port):
        return bisect.bisect_right(starts, port)

    def of(self, sport, dport):
        return (self._class(self.sport, sport), self._class(self.dport, dport))

    def spans(self, rule):
        out = []
        for starts, rng in ((self.sport, rule.sport), (self.dport, rule.dport)):
            if rng is None:
                out.append((1, len(starts)))
            else:
                out.append((self._class(starts, rng[0]), self._class(starts, rng[1])))
        return out


def union_area(rects):
    """Cells covered by inclusive rectangles ((a0, a1), (b0, b1))."""
    cuts = sorted({a0 for (a0, _), _ in rects} | {a1 + 1 for (_, a1), _ in rects})
    area = 0
    for lo, hi in zip(cuts, cuts[1:]):
        spans = sorted(b for (a0, a1), b in rects if a0 <= lo and hi - 1 <= a1)
        covered, end = 0, -1
        for b0, b1 in spans:
            if b1 > end:
                covered += b1 - max(b0, end + 1) + 1
                end = b1
        area += covered * (hi - lo)
    return area


class Reach:
    __slots__ = ("first_bound", "first_terminal", "other_free", "others")

    def __init__(self):
        self.first_bound = None  # IPv4 only: one family on the other side
        self.first_terminal = None
        self.other_free = False
        self.others = []


class CrossProduct:
    """Counts (and, for a packet, emulates the lookups of) the decision
    entries today's compiler emits for `rules`."""

    def __init__(self, rules, numbered=True, cap=None):
        self.rules = rules
        self.cap = cap
        self.sides = [Classes(r.src for r in rules if r.src), Classes(r.dst for r in rules if r.dst)]
        self.pcs = proto_classes(rules, numbered)
        self.ports = {
            pc: PortClasses([r for r in rules if has_ports(r) and admits(pc, r)]) for pc in ("tcp", "udp")
        }
        self.alone = self.paired = self.by_port = 0
        self.painted = {}
        self.views = {}
        for pc in self.pcs:
            view = View(self, pc)
            self.views[pc] = view
            view.emit()

    @property
    def total(self):
        return self.alone + self.paired + self.by_port

    def fits(self):
        return self.total <= MAX_DECISIONS

    def count(self, kind, port_entries):
        if kind == "alone":
            self.alone += 1
        else:
            self.paired += 1
        self.by_port += port_entries
        if self.cap is not None and self.total > self.cap:
            raise OverCap

    def cells(self, pc, run):
        """Port cells the run of rules decides; like the compiler's `paint`,
        it stops adding rules once past MAX_DECISIONS."""
        key = (pc, run)
        if key not in self.painted:
            ports = self.ports[pc]
            rects = [ports.spans(self.rules[r]) for r in run]
            bound = 0
            for n, ((a0, a1), (b0, b1)) in enumerate(rects, 1):
                bound += (a1 - a0 + 1) * (b1 - b0 + 1)
                if bound > MAX_DECISIONS and union_area(rects[:n]) > MAX_DECISIONS:
                    rects = rects[:n]
                    break
            self.painted[key] = union_area(rects)
        return self.painted[key]

    def slot(self, kind, pc, chain):
        ported, terminal = chain
        if not ported:
            if terminal is not None:
                self.count(kind, 0)
            return
        sports, dports = self.ports[pc].counts
        if terminal is not None:
            self.count(kind, sports * dports + 1)
        else:
            self.count(kind, self.cells(pc, ported))

    def classify(self, p):
        """The rule the compiled tables give `p`, by the program's lookups:
        (src, ANY), (ANY, dst), (src, dst), then the port-keyed entry; and
        how many decision-hash probes that took."""
        pc = packet_proto_class(p.proto, self.pcs)
        view = self.views[pc]
        s = self.sides[0].longest_match(p.src)
        d = self.sides[1].longest_match(p.dst)
        probes = 0
        for at in ((s, None), (None, d), (s, d)):
            probes += 1
            chain = view.entry(at)
            if chain is not None:
                break
        else:
            return None, probes
        ported, terminal = chain
        if not ported:
            return terminal, probes
        probes += 1
        if p.sport == NO_PORT:
            return terminal, probes
        a, b = self.ports[pc].of(p.sport, p.dport)
        for r in ported:
            (a0, a1), (b0, b1) = self.ports[pc].spans(self.rules[r])
            if a0 <= a <= a1 and b0 <= b <= b1:
                return r, probes
        return terminal, probes


class View:
    """The rules one protocol class admits, indexed as the compiler does."""

    def __init__(self, cp, pc):
        self.cp = cp
        self.pc = pc
        self.fam = proto_families(pc)
        self.groups = {}
        self.reach = ({}, {})
        src_side, dst_side = cp.sides
        for index, rule in enumerate(cp.rules):
            if not admits(pc, rule):
                continue
            keys = (src_side.class_of(rule.src), dst_side.class_of(rule.dst))
            group = self.groups.setdefault(keys, [])
            if not group or has_ports(cp.rules[group[-1]]):
                group.append(index)
            present = (rule.src is not None, rule.dst is not None)
            for side in (0, 1):
                other = 1 - side
                reach = self.reach[side].setdefault(keys[side], Reach())
                if present[other]:
                    if reach.first_bound is None:
                        reach.first_bound = index
                    reach.others.append(keys[other])
                else:
                    reach.other_free = True
                    if not has_ports(rule) and reach.first_terminal is None:
                        reach.first_terminal = index
        self.srcs = self.dsts = None

    def families(self, side, c):
        return self.cp.sides[side].families(c) & self.fam

    def reaches(self, side, c):
        table = self.reach[side]
        return [table[a] for a in self.cp.sides[side].ancestors(c) if a in table]

    def decides_alone(self, side, c):
        bound = terminal = None
        v4 = self.families(side, c) & V4
        for reach in self.reaches(side, c):
            if v4 and reach.first_bound is not None:
                bound = reach.first_bound if bound is None else min(bound, reach.first_bound)
            if reach.first_terminal is not None:
                t = reach.first_terminal
                terminal = t if terminal is None else min(terminal, t)
        return bound is None or (terminal is not None and terminal < bound)

    def chain(self, at):
        src_side, dst_side = self.cp.sides
        dst_anc = dst_side.ancestors(at[1])
        members = []
        for s in src_side.ancestors(at[0]):
            for d in dst_anc:
                group = self.groups.get((s, d))
                if group:
                    members.extend(group)
        members.sort()
        rules = self.cp.rules
        for i, r in enumerate(members):
            if not has_ports(rules[r]):
                return (tuple(members[:i]), r)
        return (tuple(members), None)

    def emit(self):
        self.srcs = self._alone(0, lambda c: True)
        paired = 0
        for s in self.srcs:
            paired |= self.families(0, s)
        self.paired_families = paired
        self.dsts = self._alone(1, lambda c: self.families(1, c) & paired != 0)
        self.undecided = (set(self.srcs), set(self.dsts))
        self._pairs()

    def _alone(self, side, wanted):
        undecided = []
        for lo, hi in self.cp.sides[side].ranges(self.fam):
            for c in range(lo, hi + 1):
                if not self.decides_alone(side, c):
                    undecided.append(c)
                elif wanted(c):
                    at = [0, 0]
                    at[side] = c
                    self.cp.slot("alone", self.pc, self.chain(at))
        return undecided

    def _shared(self, dsts):
        reach = self.reach[0].get(0)
        others = reach.others if reach else []
        dst_side = self.cp.sides[1]
        return merged([positions(dst_side.subtree(d), dsts) for d in others if d != 0])

    def partners(self, s, dsts, shared):
        dst_side = self.cp.sides[1]
        families = self.families(0, s)
        if any(reach.other_free for reach in self.reaches(0, s)):
            return merged([positions(ids, dsts) for ids in dst_side.ranges(families)])
        own = []
        for c in self.cp.sides[0].ancestors(s):
            if c and c in self.reach[0]:
                own.extend(positions(dst_side.subtree(d), dsts) for d in self.reach[0][c].others)
        return merged(own + (shared if families & V4 else []))

    def _pairs(self):
        srcs, dsts = self.srcs, self.dsts
        if not srcs or not dsts:
            self.shared = []
            return
        self.shared = self._shared(dsts)
        cp = self.cp
        for s in srcs:
            for lo, hi in self.partners(s, dsts, self.shared):
                if not cp.fits():
                    cp.paired += hi - lo
                    if cp.cap is not None and cp.total > cp.cap:
                        raise OverCap
                    continue
                for d in dsts[lo:hi]:
                    cp.slot("paired", self.pc, self.chain((s, d)))

    def entry(self, at):
        """The chain of the entry at `at` (None: ANY), or None if the
        compiler emits no such entry."""
        s, d = at
        if d is None:
            if s in self.undecided[0]:
                return None
            chain = self.chain((s, 0))
        elif s is None:
            if d in self.undecided[1] or not self.families(1, d) & self.paired_families:
                return None
            chain = self.chain((0, d))
        else:
            if s not in self.undecided[0] or d not in self.undecided[1]:
                return None
            dsts = self.dsts
            i = bisect.bisect_left(dsts, d)
            if not any(lo <= i < hi for lo, hi in self.partners(s, dsts, self.shared)):
                return None
            chain = self.chain((s, d))
        ported, terminal = chain
        return None if not ported and terminal is None else chain


def positions(ids, classes):
    return (bisect.bisect_left(classes, ids[0]), bisect.bisect_right(classes, ids[1]))


def merged(ranges):
    out = []
    for lo, hi in sorted(r for r in ranges if r[0] < r[1]):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def partition(rules):
    """Greedy partition into runs of consecutive rules, each as long as its
    decision entries stay within MAX_DECISIONS: the longest run from the
    first rule left, found by doubling then bisecting. Runs in file order let
    a packet stop at the first group that matches."""
    groups = []
    start = 0
    while start < len(rules):

        def fits(k):
            try:
                CrossProduct(rules[start : start + k], cap=MAX_DECISIONS)
                return True
            except OverCap:
                return False

        good, bad = 1, None
        k = 2
        while start + good < len(rules):
            k = min(2 * good, len(rules) - start)
            if fits(k):
                good = k
            else:
                bad = k
                break
        if bad is not None:
            while bad - good > 1:
                mid = (good + bad) // 2
                if fits(mid):
                    good = mid
                else:
                    bad = mid
        groups.append((start, CrossProduct(rules[start : start + good])))
        start += good
    return groups


def classify_partitioned(groups, p):
    """First group in order with a match decides; returns the rule, the
    groups probed, and the decision-hash probes made."""
    probes = 0
    for n, (offset, cp) in enumerate(groups, 1):
        rule, used = cp.classify(p)
        probes += used
        if rule is not None:
            return offset + rule, n, probes
    return None, len(groups), probes


# ------------------------------------------------------- decision trees
#
# HiCuts (Gupta and McKeown 1999): a node holding more than `binth` rules is
# cut along one field into np equal children (np a power of two, so a child
# is found with a shift), choosing the field where the rules' ranges, clipped
# to the node, are most distinct, and doubling np while the children's rule
# lists plus the pointers stay within spfac times the node's rules. Inside a
# node, rules after the first one that covers the node's whole region are
# dropped (unreachable there), as are repeats of an earlier rule's clipped
# region; equal consecutive children share one node. A lookup walks one
# array entry per level, then compares the leaf's rules in order.

AXES = [(0, 0xFFFFFFFF), (0, 0xFFFFFFFF), (0, 255), PORT_AXIS, PORT_AXIS]
MAX_DEPTH = 32
# Internal node: field, shift, base and child count (16 bytes) then np
# 4-byte child indices; leaf: count (4 bytes) then 4-byte rule indices; and
# one 40-byte rule (five ranges) per rule of the set.
NODE_BYTES, REF_BYTES, RULE_BYTES = 16, 4, 40


class TreeTooBig(Exception):
    pass


class Tree:
    def __init__(self, boxes_by_rule, rules, binth, spfac, budget):
        self.boxes = boxes_by_rule
        self.binth = binth
        self.spfac = spfac
        self.budget = budget
        self.nodes = 0
        self.leaves = 0
        self.refs = 0
        self.pointers = 0
        self.max_depth = 0
        self.leaf_sizes = []
        self.root = self._build(tuple(AXES), self._reduce(list(rules), tuple(AXES)), 0)

    def _reduce(self, rules, region):
        """Drops the rules after the first one covering `region`, and, where
        the node will be cut, the repeats of a clipped region."""
        (s0, s1), (d0, d1), (p0, p1), (a0, a1), (b0, b1) = region
        boxes = self.boxes
        out = []
        for r in rules:
            out.append(r)
            (x0, x1), (y0, y1), (q0, q1), (u0, u1), (v0, v1) = boxes[r]
            if (
                x0 <= s0 and s1 <= x1 and y0 <= d0 and d1 <= y1 and q0 <= p0
                and p1 <= q1 and u0 <= a0 and a1 <= u1 and v0 <= b0 and b1 <= v1
            ):
                break
        if len(out) <= self.binth:
            return out
        kept, seen = [], set()
        for r in out:
            (x0, x1), (y0, y1), (q0, q1), (u0, u1), (v0, v1) = boxes[r]
            clipped = (
                max(x0, s0), min(x1, s1), max(y0, d0), min(y1, d1), max(q0, p0),
                min(q1, p1), max(u0, a0), min(u1, a1), max(v0, b0), min(v1, b1),
            )
            if clipped not in seen:
                seen.add(clipped)
                kept.append(r)
        return kept

    def _cuts(self, rules, region, field):
        """The largest np (with its shift) the space bound allows along
        `field`; None when the field cannot be cut."""
        lo, hi = region[field]
        size = hi - lo + 1
        spans = [(max(a, lo) - lo, min(b, hi) - lo) for a, b in (self.boxes[r][field] for r in rules)]
        best = None
        np_ = 2
        while np_ <= size:
            shift = (size // np_).bit_length() - 1
            total = np_ + sum((b >> shift) - (a >> shift) + 1 for a, b in spans)
            if best is not None and total > self.spfac * len(rules):
                break
            best = (np_, shift)
            np_ *= 2
        return best

    def _build(self, region, rules, depth):
        self.max_depth = max(self.max_depth, depth)
        if len(rules) <= self.binth or depth >= MAX_DEPTH:
            return self._leaf(rules)
        distinct = []
        for f in range(5):
            lo, hi = region[f]
            if hi > lo:
                ranges = {(max(self.boxes[r][f][0], lo), min(self.boxes[r][f][1], hi)) for r in rules}
                distinct.append((-len(ranges), f))
        for _, f in sorted(distinct):
            cut = self._cuts(rules, region, f)
            if cut is None:
                continue
            np_, shift = cut
            lo, hi = region[f]
            children = [[] for _ in range(np_)]
            for r in rules:
                a, b = self.boxes[r][f]
                for c in range((max(a, lo) - lo) >> shift, ((min(b, hi) - lo) >> shift) + 1):
                    children[c].append(r)
            if max(len(c) for c in children) == len(rules) and self._same(children, rules, region, f, shift):
                continue
            return self._internal(region, f, shift, children, depth)
        return self._leaf(rules)

    def _same(self, children, rules, region, f, shift):
        """Whether every child, once reduced, still holds all the rules."""
        lo = region[f][0]
        for c, child in enumerate(children):
            sub = list(region)
            sub[f] = (lo + (c << shift), lo + ((c + 1) << shift) - 1)
            if len(self._reduce(child, tuple(sub))) < len(rules):
                return False
        return True

    def _internal(self, region, f, shift, children, depth):
        self.nodes += 1
        self.pointers += len(children)
        lo = region[f][0]
        built = []
        previous = None
        for c, child in enumerate(children):
            sub = list(region)
            sub[f] = (lo + (c << shift), lo + ((c + 1) << shift) - 1)
            sub = tuple(sub)
            reduced = self._reduce(child, sub)
            if previous is not None and reduced == previous[0] and self._leafish(previous[1]):
                built.append(previous[1])
                continue
            node = self._build(sub, reduced, depth + 1)
            previous = (reduced, node)
            built.append(node)
        return ("cut", f, lo, shift, built)

    @staticmethod
    def _leafish(node):
        return node[0] == "leaf"

    def _leaf(self, rules):
        self.leaves += 1
        self.refs += len(rules)
        self.leaf_sizes.append(len(rules))
        if self.refs + self.pointers > self.budget:
            raise TreeTooBig
        return ("leaf", rules)

    def memory(self, rule_count):
        return (
            (self.nodes + self.leaves) * NODE_BYTES
            + (self.pointers + self.refs) * REF_BYTES
            + rule_count * RULE_BYTES
        )

    def classify(self, fields):
        """(rule or None, internal nodes walked, leaf rules compared)."""
        node = self.root
        walked = 0
        while node[0] == "cut":
            _, f, lo, shift, children = node
            node = children[(fields[f] - lo) >> shift]
            walked += 1
        compared = 0
        for r in node[1]:
            compared += 1
            if all(a <= v <= b for (a, b), v in zip(self.boxes[r], fields)):
                return r, walked, compared
        return None, walked, compared


# EffiCuts (Vamanan et al. 2010) and CutSplit (Li et al. 2018) stop the
# replication that wildcards cause by building separate trees for rules that
# are small (specific) or large (wide) in the address fields. Here: one tree
# for the rules whose source is a /16 or longer, one for the others whose
# destination is, one for the rest; a packet searches them in order of their
# first rule and stops once the best match so far precedes the next tree's.
SMALL_PREFIX = 16


def separated(rules):
    def category(rule):
        if rule.src is not None and rule.src[1] >= SMALL_PREFIX:
            return 0
        if rule.dst is not None and rule.dst[1] >= SMALL_PREFIX:
            return 1
        return 2

    parts = [[], [], []]
    for index, rule in enumerate(rules):
        parts[category(rule)].append(index)
    return [p for p in parts if p]


class SeparatedTrees:
    def __init__(self, boxes_by_rule, parts, binth, spfac, budget):
        self.trees = [(part[0], Tree(boxes_by_rule, part, binth, spfac, budget)) for part in parts]

    def classify(self, fields):
        best, walked, compared, searched = None, 0, 0, 0
        for first, tree in self.trees:
            if best is not None and best < first:
                break
            r, w, c = tree.classify(fields)
            searched += 1
            walked += w
            compared += c
            if r is not None and (best is None or r < best):
                best = r
        return best, walked, compared, searched


# --------------------------------------------------- tuple space search
#
# TSS (Srinivasan, Suri and Varghese 1999): rules with the same prefix
# lengths on every field share a hash table keyed by their masked fields; a
# packet probes every table with its own fields masked. Ports are ranges, so
# each range is first cut into prefixes (a rule then takes one entry per
# pair of port prefixes). Probing every table, or the tables sorted by their
# first rule with an early exit once the best match so far precedes the next
# table's first rule (what Open vSwitch's priority sorting does). A packet
# without ports skips the tables whose rules have port conditions.


def range_prefixes(lo, hi, bits=16):
    """The prefixes (value, length) whose union is [lo, hi]."""
    out = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << bits
        while lo + size - 1 > hi:
            size >>= 1
        out.append((lo, bits - size.bit_length() + 1))
        lo += size
    return out


def port_mask(length):
    return (0xFFFF << (16 - length)) & 0xFFFF if length else 0


def coarse_kind(ports):
    if ports is None:
        return "any"
    return "exact" if ports[0] == ports[1] else "range"


def coarse_tuples(rules):
    """Distinct (src len, dst len, sport kind, dport kind, proto kind)."""
    return len(
        {
            (
                r.src[1] if r.src else 0,
                r.dst[1] if r.dst else 0,
                coarse_kind(r.sport),
                coarse_kind(r.dport),
                r.proto is not None,
            )
            for r in rules
        }
    )


class TupleSpace:
    def __init__(self, rules):
        tables = {}
        self.entries = 0
        for index, rule in enumerate(rules):
            sl = rule.src[1] if rule.src else 0
            dl = rule.dst[1] if rule.dst else 0
            sv = rule.src[0] if rule.src else 0
            dv = rule.dst[0] if rule.dst else 0
            pl, pv = (8, rule.proto) if rule.proto is not None else (0, 0)
            sports = range_prefixes(*rule.sport) if rule.sport else [(0, 0)]
            dports = range_prefixes(*rule.dport) if rule.dport else [(0, 0)]
            for spv, spl in sports:
                for dpv, dpl in dports:
                    table = tables.setdefault((sl, dl, pl, spl, dpl), {})
                    key = (sv, dv, pv, spv, dpv)
                    if key not in table:
                        table[key] = index
                        self.entries += 1
        self.tables = sorted(
            ((min(t.values()), shape, t) for shape, t in tables.items()), key=lambda x: x[0]
        )

    def classify(self, p, early_exit):
        best, probes = None, 0
        for first, (sl, dl, pl, spl, dpl), table in self.tables:
            if early_exit and best is not None and best < first:
                break
            if (spl or dpl) and p.sport == NO_PORT:
                continue
            probes += 1
            key = (
                p.src & mask(sl),
                p.dst & mask(dl),
                p.proto if pl else 0,
                p.sport & port_mask(spl),
                p.dport & port_mask(dpl),
            )
            r = table.get(key)
            if r is not None and (best is None or r < best):
                best = r
        return best, probes


# TupleMerge (Daly and Torng, ICCCN 2017 / ToN 2019): fewer, coarser tables.
# A rule may go into any table whose tuple is no longer than its own on
# every field (a port range counts as its covering prefix: the longest one
# holding the whole range), keyed by its fields masked to the table's tuple;
# rules whose masked keys collide share a bucket, compared one by one, at
# most COLLISIONS of them. A rule no table takes opens a table with its tuple
# relaxed (addresses rounded down to /0, /8, /16, /24 or /32; a port range
# to no port; exact ports and the protocol kept); if that table exists and
# its bucket is full, the rule's own tuple; past that the bucket grows (the
# table below reports the largest). Simplified: the paper also splits full
# tables and picks relaxations from the rule set's statistics.
COLLISIONS = 8


def covering_length(ports):
    if ports is None:
        return 0
    lo, hi = ports
    return 16 - (lo ^ hi).bit_length()


class TupleMerge:
    def __init__(self, rules):
        self.rules = rules
        self.boxes = [boxes(r) for r in rules]
        self.tables = []  # [first rule, tuple, {key: [rules]}]
        by_tuple = {}
        for index, rule in enumerate(rules):
            own = self._tuple(rule)
            placed = False
            for table in self.tables:
                shape = table[1]
                if all(t <= o for t, o in zip(shape, own)):
                    bucket = table[2].setdefault(self._key(rule, shape), [])
                    if len(bucket) < COLLISIONS:
                        bucket.append(index)
                        placed = True
                        break
            if placed:
                continue
            sl, dl, pl, spl, dpl = own
            relaxed = (sl // 8 * 8, dl // 8 * 8, pl, spl if spl == 16 else 0, dpl if dpl == 16 else 0)
            for shape in (relaxed, own):
                if shape not in by_tuple:
                    table = [index, shape, {self._key(rule, shape): [index]}]
                    by_tuple[shape] = table
                    self.tables.append(table)
                    placed = True
                    break
            if not placed:
                bucket = by_tuple[own][2].setdefault(self._key(rule, own), [])
                bucket.append(index)
        self.tables.sort(key=lambda t: t[0])
        self.entries = sum(len(t[2]) for t in self.tables)
        self.max_bucket = max(len(b) for t in self.tables for b in t[2].values())

    @staticmethod
    def _tuple(rule):
        return (
            rule.src[1] if rule.src else 0,
            rule.dst[1] if rule.dst else 0,
            8 if rule.proto is not None else 0,
            covering_length(rule.sport),
            covering_length(rule.dport),
        )

    @staticmethod
    def _key(rule, shape):
        sl, dl, pl, spl, dpl = shape
        return (
            (rule.src[0] if rule.src else 0) & mask(sl),
            (rule.dst[0] if rule.dst else 0) & mask(dl),
            rule.proto if pl else 0,
            (rule.sport[0] if rule.sport else 0) & port_mask(spl),
            (rule.dport[0] if rule.dport else 0) & port_mask(dpl),
        )

    def classify(self, p):
        best, probes, compared = None, 0, 0
        fields = packet_fields(p)
        for first, (sl, dl, pl, spl, dpl), table in self.tables:
            if best is not None and best < first:
                break
            if (spl or dpl) and p.sport == NO_PORT:
                continue
            probes += 1
            key = (
                p.src & mask(sl),
                p.dst & mask(dl),
                p.proto if pl else 0,
                p.sport & port_mask(spl),
                p.dport & port_mask(dpl),
            )
            for r in table.get(key, ()):
                if best is not None and r > best:
                    break
                compared += 1
                if all(a <= v <= b for (a, b), v in zip(self.boxes[r], fields)):
                    best = r
                    break
        return best, probes, compared


# PartitionSort (Yingchareonthawornchai, Daly, Liu and Torng, ICNP 2016):
# the rules are split into sortable sets, each searched like a sorted list.
# A set is sortable (for a field order) when any two of its rules, at the
# first field where their ranges differ, have disjoint ranges; then a packet
# is in at most one range per level, found by binary search, and the set
# holds at most one match. Rules go, in file order, into the first set that
# stays sortable (the paper's online insertion; the field order is fixed
# here, where the paper picks one per set). Sets are searched in order of
# their first rule, stopping once the best match so far precedes the next.
PS_ORDER = (0, 1, 4, 3, 2)  # src, dst, dport, sport, proto


class SortableSet:
    def __init__(self, first):
        self.first = first
        self.root = ([], {})  # sorted ranges, {range: child}
        self.nodes = 0

    def insert(self, box, index, dry):
        node = self.root
        for level, f in enumerate(PS_ORDER):
            rng = box[f]
            starts, children = node
            if rng in children:
                if level == len(PS_ORDER) - 1:
                    return True  # an earlier rule has the same ranges
                node = children[rng]
                continue
            i = bisect.bisect_right(starts, (rng[0], 1 << 40)) - 1
            if i >= 0 and starts[i][1] >= rng[0]:
                return False
            if i + 1 < len(starts) and starts[i + 1][0] <= rng[1]:
                return False
            if dry:
                return True
            for f2 in PS_ORDER[level:]:
                rng = box[f2]
                bisect.insort(node[0], rng)
                self.nodes += 1
                child = index if f2 == PS_ORDER[-1] else ([], {})
                node[1][rng] = child
                node = child
            return True
        return True

    def classify(self, fields):
        """(the set's match or None, binary-search steps)."""
        node, steps = self.root, 0
        for f in PS_ORDER:
            starts, children = node
            v = fields[f]
            steps += max(1, len(starts).bit_length())
            i = bisect.bisect_right(starts, (v, 1 << 40)) - 1
            if i < 0 or starts[i][1] < v:
                return None, steps
            node = children[starts[i]]
        return node, steps


class PartitionSort:
    def __init__(self, rules):
        self.sets = []
        for index, rule in enumerate(rules):
            box = boxes(rule)
            for s in self.sets:
                if s.insert(box, index, dry=True):
                    s.insert(box, index, dry=False)
                    break
            else:
                s = SortableSet(index)
                s.insert(box, index, dry=False)
                self.sets.append(s)

    def classify(self, p):
        best, searched, steps = None, 0, 0
        fields = packet_fields(p)
        for s in self.sets:
            if best is not None and best < s.first:
                break
            r, n = s.classify(fields)
            searched += 1
            steps += n
            if r is not None and (best is None or r < best):
                best = r
        return best, searched, steps


# ----------------------------------------------------------- bit vectors
#
# BV (Lakshman and Stiliadis 1998) with ABV's aggregation (Baboescu and
# Varghese 2001), as bpf-iptables' LBVS (Miano et al. 2019) runs it in eBPF,
# and as branch `engine` builds it: per field, the packet's value maps to a
# precomputed vector with bit r set when rule r's condition on that field
# holds; identical vectors are stored once. Each vector carries a summary
# (bit w: word w is not zero) and its first set bit. The program ANDs the
# five summaries and visits the candidate words in order from the latest of
# the five first bits; the first word whose five-way AND is not zero gives
# the first matching rule (its lowest bit).
VECTOR_WORDS = 16384 // 64
# struct filter_vector in include/mesh_filter.h on branch engine: first bit
# and padding (8 bytes), summary (4 words), words (256).
VECTOR_BYTES = 8 + 8 * (VECTOR_WORDS // 64 + VECTOR_WORDS)
CHUNK = 256
# A side whose 16-8-8 trie would need more chunks uses the LPM trie instead.
MAX_SIDE_CHUNKS = 16384
WORD = (1 << 64) - 1


class Vectors:
    """Interned vectors of one rule set, with their summaries and first bits."""

    def __init__(self):
        self.ids = {}
        self.summary = []
        self.first = []
        self.value = []

    def intern(self, v):
        if v not in self.ids:
            self.ids[v] = len(self.value)
            self.value.append(v)
            summary = 0
            w = 0
            rest = v
            while rest:
                if rest & WORD:
                    summary |= 1 << w
                rest >>= 64
                w += 1
            self.summary.append(summary)
            self.first.append((v & -v).bit_length() - 1 if v else None)
        return self.ids[v]


class AddressSide:
    """A side's classes (longest rule prefix) with their vectors, and the
    16-8-8 trie's shape: the /16 slots and /24 slots that need a chunk."""

    def __init__(self, rules, side, vectors):
        prefixes = {}
        free = 0
        for index, rule in enumerate(rules):
            prefix = rule[side]
            if prefix is None:
                free |= 1 << index
            else:
                prefixes[prefix] = prefixes.get(prefix, 0) | 1 << index
        self.classes = Classes(prefixes)
        vec = [free]
        for c, prefix in enumerate(self.classes.prefixes, 1):
            vec.append(vec[self.classes.parent[c]] | prefixes[prefix])
        self.vector = [vectors.intern(v) for v in vec]
        self.distinct = len(set(self.vector))
        l2 = {a >> 16 for a, length in self.classes.prefixes if length > 16}
        l3 = {a >> 8 for a, length in self.classes.prefixes if length > 24}
        self.l2, self.l3 = l2, l3
        self.chunks = len(l2) + len(l3)
        self.trie = self.chunks > MAX_SIDE_CHUNKS

    def lookup(self, addr):
        """(vector id, table lookups: 1 to 3 in the 16-8-8 trie)."""
        steps = 1 + (addr >> 16 in self.l2) + (addr >> 8 in self.l3)
        return self.vector[self.classes.longest_match(addr)], steps


class PortSide:
    """A side's port intervals (cut at every rule range boundary) and their
    vectors, found by a sweep: a rule's bit flips on at its range's start
    and off past its end."""

    def __init__(self, rules, field, vectors):
        flips = {0: 0}
        free = 0
        for index, rule in enumerate(rules):
            rng = getattr(rule, field)
            if rng is None:
                free |= 1 << index
            else:
                flips[rng[0]] = flips.get(rng[0], 0) ^ 1 << index
                if rng[1] < 65535:
                    flips[rng[1] + 1] = flips.get(rng[1] + 1, 0) ^ 1 << index
        self.starts = sorted(flips)
        vec = []
        current = 0
        for start in self.starts:
            current ^= flips[start]
            vec.append(vectors.intern(current | free))
        self.vector = vec
        self.none = vectors.intern(free)
        self.distinct = len(set(self.vector) | {self.none})

    def lookup(self, port):
        if port == NO_PORT:
            return self.none
        return self.vector[bisect.bisect_right(self.starts, port) - 1]


class BitVector:
    def __init__(self, rules):
        if len(rules) > VECTOR_WORDS * 64:
            raise SystemExit(f"{len(rules)} rules: the vectors hold {VECTOR_WORDS * 64}")
        self.vectors = Vectors()
        self.src = AddressSide(rules, 0, self.vectors)
        self.dst = AddressSide(rules, 1, self.vectors)
        self.sport = PortSide(rules, "sport", self.vectors)
        self.dport = PortSide(rules, "dport", self.vectors)
        plain = ported = 0
        named = [0] * 256
        for index, rule in enumerate(rules):
            if rule.proto is not None:
                named[rule.proto] |= 1 << index
            elif has_ports(rule):
                ported |= 1 << index
            else:
                plain |= 1 << index
        protos = [
            self.vectors.intern(plain | named[p] | (ported if p in (TCP, UDP) else 0)) for p in range(256)
        ]
        self.proto = protos
        self.proto_distinct = len(set(protos))

    def memory(self):
        """Bytes of one generation: the vectors, the table of the tries'
        first levels, the port arrays and the chunks, and the protocol table."""
        chunks = sum(s.chunks for s in (self.src, self.dst) if not s.trie)
        table = 4 * (4 * 65536 + CHUNK * chunks)
        return len(self.vectors.value) * VECTOR_BYTES + table + 4 * 2 * 256

    def classify(self, p):
        """(rule or None, table lookups, candidate words visited)."""
        s, s_steps = self.src.lookup(p.src)
        d, d_steps = self.dst.lookup(p.dst)
        ids = (s, d, self.proto[p.proto], self.sport.lookup(p.sport), self.dport.lookup(p.dport))
        lookups = s_steps + d_steps + 2
        vec = self.vectors
        firsts = [vec.first[i] for i in ids]
        if None in firsts:
            return None, lookups, 0
        summary = vec.summary[ids[0]]
        for i in ids[1:]:
            summary &= vec.summary[i]
        summary >>= max(firsts) // 64
        w = max(firsts) // 64
        visited = 0
        values = [vec.value[i] for i in ids]
        while summary:
            step = (summary & -summary).bit_length() - 1
            w += step
            summary >>= step
            visited += 1
            word = WORD
            for v in values:
                word &= v >> (64 * w)
            if word:
                return 64 * w + (word & -word).bit_length() - 1, lookups, visited
            summary >>= 1
            w += 1
        return None, lookups, visited


# ------------------------------------------------------------- the runs
#
# Bytes per entry of a BPF hash map, for the families that use one: the
# kernel's struct htab_elem (48 bytes before the key), a 16-byte key and an
# 8-byte value, and a bucket (16 bytes) per entry; hash maps are
# preallocated at their max_entries.
HASH_ENTRY_BYTES = 48 + 16 + 8 + 16
# PartitionSort: a node per stored range (two bounds, a child: 16 bytes).
PS_NODE_BYTES = 16
# Binary search steps, trie levels and leaf rules each cost an array lookup.
BINTH, SPFAC = 8, 4
TREE_BUDGET = 4_000_000


def timed(build):
    start = time.perf_counter()
    value = build()
    return value, time.perf_counter() - start


def mib(n):
    return n / 2**20


class Disagreement(SystemExit):
    pass


def checked(name, model, packets, expected, classify):
    """Runs `classify` on every packet; stops the run on a disagreement with
    the reference. Returns the list of per-packet extra values."""
    out = []
    for p, want in zip(packets, expected):
        got, *extra = classify(p)
        if got != want:
            raise Disagreement(
                f"{name}: {model} gives rule {got} for {p}, the linear first match gives {want}"
            )
        out.append(extra)
    return out


def p50_90(values):
    return percentile(values, 50), percentile(values, 90)


def run(name):
    d = classbench_dir()
    rules = parse_rules(os.path.join(d, name))
    packets, trace_len = parse_trace(os.path.join(d, name + "_trace"))
    linear = Linear(rules)
    expected = [linear.classify(p) for p in packets]
    r = {"name": name, "rules": len(rules), "trace": trace_len, "sampled": len(packets)}
    r["defaulted"] = sum(e is None for e in expected)
    matched = [e for e in expected if e is not None]
    r["first_match_p50"] = percentile(matched, 50)
    log = lambda what: print(f"{name}: {what}", file=sys.stderr, flush=True)
    check = lambda model, classify: checked(name, model, packets, expected, classify)

    log("cross-producting")
    today = [x for x in rules if x.proto in (None, TCP, UDP, ICMP)]
    r["today_rules"] = len(today)
    r["today_entries"] = CrossProduct(today, numbered=False).total
    r["cp_entries"] = CrossProduct(rules).total
    groups, r["cp_build"] = timed(lambda: partition(rules))
    r["cp_groups"] = len(groups)
    r["cp_group_entries"] = sum(cp.total for _, cp in groups)
    extra = check("partitioned cross-producting", lambda p: classify_partitioned(groups, p))
    probed = [g for g, _ in extra]
    lookups = [probes + 2 * g for g, probes in extra]
    r["cp_probed"] = p50_90(probed)
    r["cp_lookups"] = p50_90(lookups)

    log("decision trees")
    rule_boxes = [boxes(x) for x in rules]
    start = time.perf_counter()
    try:
        tree, r["hc_build"] = timed(lambda: Tree(rule_boxes, range(len(rules)), BINTH, SPFAC, TREE_BUDGET))
        extra = check("HiCuts", lambda p: tree.classify(packet_fields(p)))
        r["hc"] = {
            "depth": tree.max_depth,
            "nodes": tree.nodes + tree.leaves,
            "refs": tree.refs,
            "memory": tree.memory(len(rules)),
            "leaf": max(tree.leaf_sizes),
            "walked": p50_90([w for w, _ in extra]),
            "compared": p50_90([c for _, c in extra]),
            "steps": p50_90([w + c for w, c in extra]),
        }
    except TreeTooBig:
        r["hc"] = None
        r["hc_build"] = time.perf_counter() - start
    parts = separated(rules)
    start = time.perf_counter()
    try:
        trees, r["st_build"] = timed(lambda: SeparatedTrees(rule_boxes, parts, BINTH, SPFAC, TREE_BUDGET))
        extra = check("separated trees", lambda p: trees.classify(packet_fields(p)))
        ts = [t for _, t in trees.trees]
        r["st"] = {
            "parts": [len(x) for x in parts],
            "depth": max(t.max_depth for t in ts),
            "nodes": sum(t.nodes + t.leaves for t in ts),
            "refs": sum(t.refs for t in ts),
            "memory": sum(t.memory(0) for t in ts) + RULE_BYTES * len(rules),
            "leaf": max(max(t.leaf_sizes) for t in ts),
            "searched": p50_90([s for _, _, s in extra]),
            "walked": p50_90([w for w, _, _ in extra]),
            "compared": p50_90([c for _, c, _ in extra]),
            "steps": p50_90([w + c for w, c, _ in extra]),
        }
    except TreeTooBig:
        r["st"] = None
        r["st_build"] = time.perf_counter() - start

    log("tuple spaces")
    r["coarse_tuples"] = coarse_tuples(rules)
    tss, r["tss_build"] = timed(lambda: TupleSpace(rules))
    r["tss_tuples"] = len(tss.tables)
    r["tss_entries"] = tss.entries
    r["tss_all"] = p50_90([x for x, in check("TSS", lambda p: tss.classify(p, False))])
    r["tss_early"] = p50_90([x for x, in check("TSS, early exit", lambda p: tss.classify(p, True))])
    tm, r["tm_build"] = timed(lambda: TupleMerge(rules))
    extra = check("TupleMerge", tm.classify)
    r["tm"] = {
        "tables": len(tm.tables),
        "entries": tm.entries,
        "bucket": tm.max_bucket,
        "probes": p50_90([x for x, _ in extra]),
        "compared": p50_90([c for _, c in extra]),
        "ns": p50_90([x * HASH_NS + c * ARRAY_NS for x, c in extra]),
    }
    ps, r["ps_build"] = timed(lambda: PartitionSort(rules))
    extra = check("PartitionSort", ps.classify)
    r["ps"] = {
        "sets": len(ps.sets),
        "nodes": sum(s.nodes for s in ps.sets),
        "searched": p50_90([s for s, _ in extra]),
        "steps": p50_90([n for _, n in extra]),
    }

    log("bit vectors")
    bv, r["bv_build"] = timed(lambda: BitVector(rules))
    extra = check("bit vectors", bv.classify)
    r["bv"] = {
        "src": bv.src.distinct,
        "dst": bv.dst.distinct,
        "sport": bv.sport.distinct,
        "dport": bv.dport.distinct,
        "proto": bv.proto_distinct,
        "vectors": len(bv.vectors.value),
        "chunks": (bv.src.chunks, bv.dst.chunks),
        "trie": (bv.src.trie, bv.dst.trie),
        "memory": bv.memory(),
        "lookups": p50_90([l + 5 for l, _ in extra]),
        "words": p50_90([w for _, w in extra]) + (max(w for _, w in extra),),
        "ns": p50_90([(l + 5) * ARRAY_NS + w * ARRAY_NS for l, w in extra]),
    }
    return r


def cell(pair, fmt="{:,}"):
    return "/".join(fmt.format(x) for x in pair)


def seconds(value):
    return "-" if value is None else f"{value:.1f}"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def report(results):
    out = []
    out.append("### Sets and sample\n")
    out.append(
        table(
            ["set", "rules", "trace headers", "sampled", "no rule matches", "first match, p50"],
            [
                (
                    r["name"],
                    f"{r['rules']:,}",
                    f"{r['trace']:,}",
                    f"{r['sampled']:,}",
                    r["defaulted"],
                    f"{r['first_match_p50']:,}",
                )
                for r in results
            ],
        )
    )
    out.append("\n### Cross-producting (today's design) and its partition\n")
    out.append(
        table(
            [
                "set",
                "entries, today's rules (issue's table)",
                "entries, all rules",
                "groups under 262,144",
                "entries in the groups",
                "MiB (88 B/entry)",
                "groups searched p50/p90",
                "hash and LPM lookups p50/p90",
                "model ns p50/p90 (≥ 29 ns per lookup)",
                "build s",
            ],
            [
                (
                    r["name"],
                    f"{r['today_entries']:,} ({r['today_rules']:,} rules)",
                    f"{r['cp_entries']:,}",
                    r["cp_groups"],
                    f"{r['cp_group_entries']:,}",
                    f"{mib(r['cp_group_entries'] * HASH_ENTRY_BYTES):.1f}",
                    cell(r["cp_probed"]),
                    cell(r["cp_lookups"]),
                    cell([x * HASH_NS for x in r["cp_lookups"]]),
                    seconds(r["cp_build"]),
                )
                for r in results
            ],
        )
    )
    out.append(f"\n### Decision trees (binth {BINTH}, space factor {SPFAC})\n")
    rows = []
    for r in results:
        variants = (("HiCuts, one tree", "hc", "hc_build"), ("separated trees", "st", "st_build"))
        for label, key, build in variants:
            t = r[key]
            if t is None:
                stopped = f"stopped: over {TREE_BUDGET:,} rule copies and pointers"
                rows.append((r["name"], label, stopped) + ("",) * 8 + (seconds(r[build]),))
                continue
            trees = "1" if key == "hc" else "/".join(f"{n:,}" for n in t["parts"]) + " rules"
            rows.append(
                (
                    r["name"],
                    label,
                    trees,
                    t["depth"],
                    f"{t['nodes']:,}",
                    f"{t['refs'] / r['rules']:.1f}",
                    f"{mib(t['memory']):.2f}",
                    t["leaf"],
                    cell(t["walked"]) + (f" in {cell(t['searched'])} trees" if key == "st" else ""),
                    cell(t["compared"]),
                    cell([x * ARRAY_NS for x in t["steps"]]),
                    seconds(r[build]),
                )
            )
    out.append(
        table(
            [
                "set",
                "variant",
                "trees",
                "depth",
                "nodes",
                "rule copies per rule",
                "MiB",
                "largest leaf",
                "nodes walked p50/p90",
                "leaf rules compared p50/p90",
                f"model ns p50/p90 ({ARRAY_NS} ns per step)",
                "build s",
            ],
            rows,
        )
    )
    out.append("\n### Tuple space search, TupleMerge, PartitionSort\n")
    out.append(
        table(
            [
                "set",
                "tuples (len, len, port kinds, proto kind)",
                "TSS tuples (ranges as prefixes)",
                "TSS entries",
                "TSS probes, all tuples",
                "TSS probes p50/p90, early exit",
                "model ns p50/p90",
                "MiB",
                "build s",
            ],
            [
                (
                    r["name"],
                    r["coarse_tuples"],
                    f"{r['tss_tuples']:,}",
                    f"{r['tss_entries']:,}",
                    f"{r['tss_all'][0]:,}" if r["tss_all"][0] == r["tss_all"][1] else cell(r["tss_all"]),
                    cell(r["tss_early"]),
                    cell([x * HASH_NS for x in r["tss_early"]]),
                    f"{mib(r['tss_entries'] * HASH_ENTRY_BYTES):.2f}",
                    seconds(r["tss_build"]),
                )
                for r in results
            ],
        )
    )
    out.append("")
    out.append(
        table(
            [
                "set",
                f"TupleMerge tables (≤ {COLLISIONS} per bucket)",
                "entries",
                "largest bucket",
                "probes p50/p90",
                "rules compared p50/p90",
                "model ns p50/p90",
                "PartitionSort sets",
                "nodes",
                "sets searched p50/p90",
                "search steps p50/p90",
                f"model ns p50/p90 ({ARRAY_NS} ns per step)",
                "build s (TM, PS)",
            ],
            [
                (
                    r["name"],
                    r["tm"]["tables"],
                    f"{r['tm']['entries']:,}",
                    r["tm"]["bucket"],
                    cell(r["tm"]["probes"]),
                    cell(r["tm"]["compared"]),
                    cell(r["tm"]["ns"]),
                    r["ps"]["sets"],
                    f"{r['ps']['nodes']:,}",
                    cell(r["ps"]["searched"]),
                    cell(r["ps"]["steps"]),
                    cell([x * ARRAY_NS for x in r["ps"]["steps"]]),
                    f"{seconds(r['tm_build'])}, {seconds(r['ps_build'])}",
                )
                for r in results
            ],
        )
    )
    out.append(f"\n### Bit vectors (ABV: {VECTOR_BYTES:,} B per vector)\n")
    out.append(
        table(
            [
                "set",
                "distinct vectors src/dst/proto/sport/dport",
                "stored (all fields, once each)",
                "trie chunks src/dst",
                "MiB",
                "array lookups p50/p90",
                "candidate words p50/p90/max",
                f"model ns p50/p90 ({ARRAY_NS} ns per lookup and word)",
                "build s",
            ],
            [
                (
                    r["name"],
                    "/".join(f"{r['bv'][k]:,}" for k in ("src", "dst", "proto", "sport", "dport")),
                    f"{r['bv']['vectors']:,}",
                    "/".join(
                        f"{c:,}" + (" (LPM trie)" if t else "")
                        for c, t in zip(r["bv"]["chunks"], r["bv"]["trie"])
                    ),
                    f"{mib(r['bv']['memory']):.1f}",
                    cell(r["bv"]["lookups"]),
                    cell(r["bv"]["words"]),
                    cell(r["bv"]["ns"]),
                    seconds(r["bv_build"]),
                )
                for r in results
            ],
        )
    )
    return "\n".join(out)


def main(args):
    names = args or SETS
    unknown = [n for n in names if n not in SETS]
    if unknown:
        raise SystemExit(
            f"unknown set {unknown[0]!r}: name some of {', '.join(SETS)}, or none for all six"
        )
    start = time.perf_counter()
    results = [run(name) for name in names]
    print(report(results))
    sampled = sum(r["sampled"] for r in results)
    elapsed = time.perf_counter() - start
    print(
        f"\n{len(names)} sets, {sampled:,} sampled headers, every model agreeing with the linear "
        f"first match on every one; {elapsed:.0f} s."
    )


if __name__ == "__main__":
    main(sys.argv[1:])
