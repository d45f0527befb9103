/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Maps of xdp_mesh_filter, shared with meshbpf's Rust side (through the
 * skeleton's generated types, never through hand-written mirrors).
 *
 * Rules are compiled in user space into lookups that cost the same for one
 * rule or ten thousand: per side (source, destination), an exact-match hash
 * probed once per prefix length, or an LPM trie, gives the longest rule
 * prefix holding the address (its "class") with the decisions that depend
 * on that class alone; two arrays give each port's class, and a hash of
 * decisions gives the first rule matching any other combination.
 * Every key carries a generation: a rule set is written under the inactive
 * generation and published by flipping `active`, so a packet sees one whole
 * rule set, never a mix.
 */
#ifndef MESHBPF_MESH_FILTER_H
#define MESHBPF_MESH_FILTER_H

#include "traffic_counters.h"

/* Enums rather than #defines: they reach BTF, so Rust reads the same
 * numbers from the skeleton instead of repeating them. */
enum filter_limits {
	FILTER_GENERATIONS = 2,
	FILTER_MAX_RULES = 16384,
	/* Decision entries per generation; the map holds two generations. */
	FILTER_MAX_DECISIONS = 262144,
	FILTER_MAX_PREFIXES = 65536,
	FILTER_MAX_LIMITERS = 65536,
	FILTER_PORTS_PER_GEN = 2 * 65536,
	/* A family whose rules use at most this many prefix lengths is looked
	 * up in an exact-match hash, once per length, longest first: a hash
	 * lookup costs a fraction of an LPM trie walk. More lengths use the
	 * trie. */
	FILTER_HASH_LENGTHS = 4,
	/* In a lengths list: end of list, or "use the trie" as its first entry. */
	FILTER_NO_LENGTH = 0xFF,
	FILTER_USE_TRIE = 0xFE,
	/* Bits of the generation and family bytes leading every prefix key. */
	FILTER_PREFIX_HEADER_BITS = 16,
};

/* Bits of filter_decision.flags and filter_config.decision_kinds. */
enum filter_flags {
	/* The decision needs a second lookup with the packet's port classes. */
	FILTER_NEEDS_PORTS = 1,
	/* The matched rule has its own rate limit in rule_limits. */
	FILTER_RATE_LIMITED = 2,
	/* In a prefix value's `alone` list: this entry holds a decision. */
	FILTER_DECIDED = 4,
	/* Which decision keys a rule set has, so the program skips lookups
	 * that cannot hit: (src, any dst), (any src, dst), (src, dst). */
	FILTER_SRC_DECISIONS = 1,
	FILTER_DST_DECISIONS = 2,
	FILTER_PAIR_DECISIONS = 4,
};

/* Wildcard address class: a decision that holds whatever the class is. */
#define FILTER_ANY_CLASS 0xFFFFFFFF
/* Decision keys that do not look at ports carry this in both port fields. */
#define FILTER_NO_PORTS 0xFFFF
/* Port class of a packet whose ports are unknown (later fragments,
 * truncated L4 headers, protocols without ports). */
#define FILTER_UNKNOWN_PORT 0

/* Limiter ids in limiter_key: the interface-wide limit, the SYN-flood
 * limit, or a rule's own limit (FILTER_RULE_LIMITER + rule). */
#define FILTER_INTERFACE_LIMITER 0
#define FILTER_SYN_LIMITER	 1
#define FILTER_RULE_LIMITER	 2

enum filter_action {
	FILTER_ALLOW,
	FILTER_DENY,
};

/* A packet's protocol class, as rules see it. */
enum filter_proto {
	FILTER_TCP,
	FILTER_UDP,
	FILTER_ICMP,
	FILTER_ICMPV6,
	FILTER_OTHER_IP,
	FILTER_ARP,
	FILTER_NON_IP,
};

enum filter_verdict {
	FILTER_PASS,
	FILTER_DROP,
	FILTER_VERDICTS,
};

enum filter_family {
	FILTER_IPV4 = 4,
	FILTER_IPV6 = 6,
};

/* Prefix key: generation and family come first, so one map holds both
 * generations and both families; IPv4 uses the first 4 address bytes.
 * The same key serves the LPM tries and, with the address masked to
 * `prefixlen`, the exact-match hashes; the padding is explicit because a
 * hash compares every byte. */
struct filter_prefix_key {
	__u32 prefixlen;
	__u8 gen;
	__u8 family;
	__u8 addr[16];
	__u8 pad[2];
};

/* Index of a family in the lengths lists. */
#define FILTER_V4_LENGTHS 0
#define FILTER_V6_LENGTHS 1

struct filter_key {
	__u32 src;
	__u32 dst;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 gen;
	__u8 pad[2];
};

struct filter_decision {
	__u32 rule;
	__u8 action;
	__u8 flags;
	__u8 pad[2];
};

/* Protocol classes a decision can be keyed by (FILTER_TCP..FILTER_ARP). */
#define FILTER_PROTO_CLASSES (FILTER_ARP + 1)

/* What an address lookup returns: the class, and the decisions that
 * depend on this side's class alone (per protocol class), so the common
 * rule sets (a list of source CIDRs) need no lookup in `decisions`. */
struct filter_prefix_value {
	__u32 class;
	__u32 pad;
	struct filter_decision alone[FILTER_PROTO_CLASSES];
};

/* Index: gen * FILTER_PORTS_PER_GEN + (udp ? 65536 : 0) + port. */
struct filter_port_classes {
	__u16 sport;
	__u16 dport;
};

/* A GCRA limiter, equivalent to a token bucket of `burst` at `pps`:
 * interval = 1e9 / pps, tolerance = (burst - 1) * interval. */
struct filter_limit {
	__u64 interval_ns;
	__u64 tolerance_ns;
	/* As the operator wrote them, for display. */
	__u64 pps;
	__u64 burst;
};

/* One exact-match probe: the prefix length and its address mask, which
 * user space computes so the packet path masks without branches. */
struct filter_prefix_probe {
	__u8 len;
	__u8 mask[16];
};

struct filter_config {
	struct filter_limit rate_limit; /* interval 0: off */
	struct filter_limit syn_flood;
	__u32 rules;
	__u8 default_action;
	__u8 decision_kinds; /* FILTER_*_DECISIONS */
	/* Per family (FILTER_V4_LENGTHS, FILTER_V6_LENGTHS), longest first:
	 * the lengths to probe in the exact-match hash, ended by
	 * FILTER_NO_LENGTH; or FILTER_USE_TRIE first. No length at all: no
	 * rule names an address on that side for that family. */
	struct filter_prefix_probe src_probes[2][FILTER_HASH_LENGTHS];
	struct filter_prefix_probe dst_probes[2][FILTER_HASH_LENGTHS];
	__u8 pad[2];
	/* The `alone` decisions of class 0 (no rule prefix holds the address). */
	struct filter_decision src_alone[FILTER_PROTO_CLASSES];
	struct filter_decision dst_alone[FILTER_PROTO_CLASSES];
};

struct filter_limiter_key {
	__u32 limiter;
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

struct filter_limiter_state {
	/* GCRA's theoretical arrival time, CLOCK_MONOTONIC ns. */
	__u64 tat;
	/* Set once this source has been refused, to count sources. */
	__u64 refused;
};

struct filter_stats {
	struct traffic_counter verdicts[FILTER_VERDICTS];
	struct traffic_counter defaulted; /* no rule matched */
	struct traffic_counter rate_limited;
	struct traffic_counter syn_dropped;
	__u64 rate_limited_sources;
	__u64 syn_flood_sources;
};

#define FILTER_NAME_LEN 32

/* A rule as the operator wrote it; the program never reads these, they
 * let `filter show` print the active rule set back from the pins. */
struct filter_rule {
	__u8 src[16];
	__u8 dst[16];
	__u8 src_family; /* 0: any */
	__u8 src_len;
	__u8 dst_family;
	__u8 dst_len;
	__u8 action;
	__u8 protocol; /* enum filter_proto; FILTER_NON_IP: any IP */
	__u8 has_limit;
	__u8 pad;
	__u16 sport_lo; /* lo > hi: no port condition */
	__u16 sport_hi;
	__u16 dport_lo;
	__u16 dport_hi;
	__u64 limit_pps;
	__u64 limit_burst;
	char name[FILTER_NAME_LEN];
};

#endif /* MESHBPF_MESH_FILTER_H */
