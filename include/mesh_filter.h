/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Maps of xdp_mesh_filter, shared with meshbpf's Rust side (through the
 * skeleton's generated types, never through hand-written mirrors).
 *
 * Rules are compiled in user space into lookups that cost the same for one
 * rule or ten thousand: two LPM tries give the longest rule prefix holding the
 * source and the destination (its "class"), two arrays give each port's
 * class, and a hash of decisions gives the first rule matching those classes.
 * Every key carries a generation: a rule set is written under the inactive
 * generation and published by flipping `active`, so a packet sees one whole
 * rule set, never a mix.
 */
#ifndef MESHBPF_MESH_FILTER_H
#define MESHBPF_MESH_FILTER_H

#include "traffic_counters.h"

#define FILTER_GENERATIONS	2
#define FILTER_MAX_RULES	16384
/* Decision entries per generation; the map holds two generations. */
#define FILTER_MAX_DECISIONS	262144
#define FILTER_MAX_PREFIXES	65536
#define FILTER_MAX_LIMITERS	65536

/* Wildcard address class: a decision that holds whatever the class is. */
#define FILTER_ANY_CLASS	0xFFFFFFFF
/* Decision keys that do not look at ports carry this in both port fields. */
#define FILTER_NO_PORTS		0xFFFF
/* Port class of a packet whose ports are unknown (later fragments,
 * truncated L4 headers, protocols without ports). */
#define FILTER_UNKNOWN_PORT	0
#define FILTER_PORTS_PER_GEN	(2 * 65536)

/* Limiter ids in limiter_key: the interface-wide limit, the SYN-flood
 * limit, or a rule's own limit (FILTER_RULE_LIMITER + rule). */
#define FILTER_INTERFACE_LIMITER	0
#define FILTER_SYN_LIMITER		1
#define FILTER_RULE_LIMITER		2

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

/* LPM key: generation and family come first, so one trie holds both
 * generations and both families; IPv4 uses the first 4 address bytes. */
struct filter_prefix_key {
	__u32 prefixlen;
	__u8 gen;
	__u8 family;
	__u8 addr[16];
};

struct filter_key {
	__u32 src;
	__u32 dst;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 gen;
	__u8 pad[2];
};

/* The decision needs a second lookup with the packet's port classes. */
#define FILTER_NEEDS_PORTS	1
/* The matched rule has its own rate limit in rule_limits. */
#define FILTER_RATE_LIMITED	2

struct filter_decision {
	__u32 rule;
	__u8 action;
	__u8 flags;
	__u8 pad[2];
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

struct filter_config {
	struct filter_limit rate_limit;	/* interval 0: off */
	struct filter_limit syn_flood;
	__u32 rules;
	__u8 default_action;
	/* Without rules naming a source (destination), skip that trie. */
	__u8 has_src;
	__u8 has_dst;
	__u8 pad;
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
	struct traffic_counter defaulted;	/* no rule matched */
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
	__u8 src_family;	/* 0: any */
	__u8 src_len;
	__u8 dst_family;
	__u8 dst_len;
	__u8 action;
	__u8 protocol;		/* enum filter_proto; FILTER_NON_IP: any IP */
	__u8 has_limit;
	__u8 pad;
	__u16 sport_lo;		/* lo > hi: no port condition */
	__u16 sport_hi;
	__u16 dport_lo;
	__u16 dport_hi;
	__u64 limit_pps;
	__u64 limit_burst;
	char name[FILTER_NAME_LEN];
};

#endif /* MESHBPF_MESH_FILTER_H */
