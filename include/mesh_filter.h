/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Maps of xdp_mesh_filter, shared with meshbpf's Rust side (through the
 * skeleton's generated types, never through hand-written mirrors).
 *
 * Rules are compiled in user space into bit vectors, one bit per rule: for
 * each of five fields (source, destination, protocol, source port,
 * destination port) a lookup maps the packet's value of that field to the
 * vector of the rules whose condition on the field it meets. The first rule
 * matching the packet is the lowest bit set in all five, so the packet path
 * costs a fixed number of lookups plus a scan over at most
 * FILTER_VECTOR_WORDS words, whatever the rules combine. Each vector has a
 * summary (bit w: word w is not zero), which makes the scan skip words the
 * five vectors do not all have bits in, and its first bit, which makes it
 * start at the latest of the five.
 *
 * A generation's tables and vectors are inner maps, created for each rule
 * set at its size; the per-rule maps and the IPv6 tries carry the
 * generation in their keys. A rule set is written under the inactive
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
	FILTER_VECTOR_WORDS = FILTER_MAX_RULES / 64,
	FILTER_SUMMARY_WORDS = FILTER_VECTOR_WORDS / 64,
	/* IPv6 prefixes per generation, per side. */
	FILTER_MAX_PREFIXES = 65536,
	FILTER_MAX_LIMITERS = 65536,
	/* Bits of the generation and family bytes leading every prefix key. */
	FILTER_PREFIX_HEADER_BITS = 16,
	/* Layout of a generation's table (__u32 entries, two to each __u64
	 * value of its array, the even one in the low half): an IPv4
	 * source's vector is found through a 16-8-8 multibit trie whose
	 * first level is indexed by the address's top 16 bits, likewise a
	 * destination's; then a vector per source and per destination port;
	 * then the tries' 256-entry chunks. */
	FILTER_TABLE_SRC = 0,
	FILTER_TABLE_DST = 65536,
	FILTER_TABLE_SPORT = 2 * 65536,
	FILTER_TABLE_DPORT = 3 * 65536,
	FILTER_TABLE_CHUNKS = 4 * 65536,
	FILTER_CHUNK_ENTRIES = 256,
};

/* A trie entry with this bit holds the table index of its next-level
 * chunk instead of a vector id. */
#define FILTER_CHUNK_FLAG 0x80000000
/* A vector's `first` when it has no bit set. */
#define FILTER_NO_RULE 0xFFFFFFFF

/* Bits of filter_config.lookups: the fields some rule has a condition on.
 * The others are not looked up: every rule matches every value of them, so
 * the program takes an all-ones vector of its own for them. */
enum filter_lookups {
	FILTER_LOOKUP_SRC = 1,
	FILTER_LOOKUP_DST = 2,
	FILTER_LOOKUP_PROTOCOL = 4,
	FILTER_LOOKUP_SPORT = 8,
	FILTER_LOOKUP_DPORT = 16,
	/* IPv4 addresses of this side go through the LPM trie, like IPv6,
	 * because the table would need too many chunks. */
	FILTER_LOOKUP_SRC_V4_TRIE = 32,
	FILTER_LOOKUP_DST_V4_TRIE = 64,
};

/* Limiter ids in limiter_key: the interface-wide limit, the SYN-flood
 * limit, or a rule's own limit (FILTER_RULE_LIMITER + rule). */
#define FILTER_INTERFACE_LIMITER 0
#define FILTER_SYN_LIMITER	 1
#define FILTER_RULE_LIMITER	 2

enum filter_action {
	FILTER_ALLOW,
	FILTER_DENY,
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

/* Index of a family in filter_config.protocols. */
#define FILTER_V4_INDEX 0
#define FILTER_V6_INDEX 256

/* LPM trie key: generation and family come first, so one trie holds both
 * generations and both families; IPv4 uses the first 4 address bytes. */
struct filter_prefix_key {
	__u32 prefixlen;
	__u8 gen;
	__u8 family;
	__u8 addr[16];
	__u8 pad[2];
};

struct filter_vector {
	__u32 first; /* lowest rule index set, or FILTER_NO_RULE */
	__u32 pad;
	__u64 summary[FILTER_SUMMARY_WORDS];
	__u64 words[FILTER_VECTOR_WORDS];
};

/* What a rule does once it matched. */
struct filter_rule_action {
	__u8 action;
	__u8 rate_limited; /* its limit is in rule_limits */
	__u8 pad[2];
};

/* A GCRA limiter, equivalent to a token bucket of `burst` at `pps`:
 * interval = 1e9 / pps, tolerance = (burst - 1) * interval. */
struct filter_limit {
	__u64 interval_ns;
	__u64 tolerance_ns;
	/* As the operator wrote them, for display. */
	__u64 pps;
	__u64 burst;
	/* A refused source goes into the ban set for this long; 0: not. */
	__u64 ban_ns;
};

struct filter_config {
	struct filter_limit rate_limit; /* interval 0: off */
	struct filter_limit syn_flood;
	__u32 rules;
	/* The protocol vector of ARP frames. */
	__u32 arp;
	/* The vector holding every rule, FILTER_NO_RULE if none does: a
	 * field whose value maps to it is as good as not looked up. */
	__u32 all;
	__u8 default_action;
	__u8 lookups; /* enum filter_lookups bits */
	__u8 pad[2];
	/* Per side (source, destination): the vector of an address no rule
	 * prefix holds, and of a field not looked up. */
	__u32 no_prefix[2];
	/* Per side: the vector of a packet without ports. */
	__u32 no_ports[2];
	/* At family index * 256 + IP protocol number: its protocol vector.
	 * An IPv6 packet whose extension headers were not all walked has
	 * number 0 (hop-by-hop options, which cannot follow the walk). One
	 * dimension, because the skeleton's types derive Default. */
	__u32 protocols[2 * 256];
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
/* A rule id with its terminating NUL. */
#define FILTER_ID_LEN 64

/* filter_rule.protocol_kind. */
enum filter_rule_protocol {
	FILTER_RULE_ANY_IP,
	FILTER_RULE_ARP,
	FILTER_RULE_IP_NUMBER, /* the number is in ip_proto */
};

/* A rule as the operator wrote it; the program never reads these, they
 * let `filter show` print the active rule set back from the pins, and an
 * apply find the rules whose ids survive. */
struct filter_rule {
	__u8 src[16];
	__u8 dst[16];
	__u8 src_family; /* 0: any */
	__u8 src_len;
	__u8 dst_family;
	__u8 dst_len;
	__u8 action;
	__u8 protocol_kind; /* enum filter_rule_protocol */
	__u8 ip_proto;
	__u8 has_limit;
	__u16 sport_lo; /* lo > hi: no port condition */
	__u16 sport_hi;
	__u16 dport_lo;
	__u16 dport_hi;
	__u64 limit_pps;
	__u64 limit_burst;
	char name[FILTER_NAME_LEN];
	char id[FILTER_ID_LEN];
	/* Added, wrapping, to the rule's hits in rule_hits: what the rule had
	 * counted under the rule sets before this one, less what a reset
	 * cleared. User space owns it, so carrying counts across an apply or
	 * resetting them never races the program's increments. */
	struct traffic_counter carried;
};

/* Commit-confirm. An apply with a window arms a timer in `confirm` that
 * puts the previous generation back unless it is confirmed in time. The
 * timer lives in a pinned map, so it fires whatever becomes of the process
 * that armed it, its terminal or user space. Every change of the state is a
 * compare-and-swap in the kernel, so a confirm racing the timer either wins
 * (the new set stays) or finds the set rolled back, never both. */
enum filter_confirm_state {
	FILTER_CONFIRM_NONE,
	FILTER_CONFIRM_PENDING,
	FILTER_CONFIRM_CONFIRMED,
	FILTER_CONFIRM_ROLLED_BACK,
};

/* What filter_control does with the test-run packet it is given. */
enum filter_control_command {
	/* Arm the timer and publish `generation` in one run, so no kill can
	 * leave the new set in force without its way back. */
	FILTER_CONTROL_ARM = 1,
	FILTER_CONTROL_CONFIRM,
	FILTER_CONTROL_ROLLBACK,
};

/* filter_control's return value. */
enum filter_control_result {
	FILTER_CONTROL_DONE,
	/* ARM: a confirmation is already pending. CONFIRM, ROLLBACK: none is. */
	FILTER_CONTROL_REFUSED,
	FILTER_CONTROL_BAD_REQUEST,
	FILTER_CONTROL_TIMER_FAILED,
};

/* The bytes of the packet filter_control runs on. */
struct filter_control_request {
	__u32 command;
	__u32 generation; /* ARM: the generation to publish */
	__u64 window_ns;  /* ARM: how long until the rollback */
};

struct filter_confirm {
	struct bpf_timer timer;
	/* CLOCK_BOOTTIME ns, the timer's clock. */
	__u64 armed_ns;
	__u64 deadline_ns;
	__u64 settled_ns; /* when confirmed or rolled back */
	/* enum filter_confirm_state, in 64 bits: BPF's 32-bit
	 * compare-and-swap needs a newer instruction set than meshbpf's. */
	__u64 state;
	__u32 rollback_generation;
	__u32 applied_generation;
};

/* Ban sets. Banned sources are dropped before the rules, at the cost of
 * one hash lookup on a miss whatever the set's size: a host address is a
 * key of ban_v4 or ban_v6 (hash maps, allocated as entries come), and only
 * a shorter CIDR goes into the ban_prefixes LPM trie, which the program
 * skips while ban_config.prefixes is 0. An entry whose expiry passed never
 * matches again; the next `filter ban` command deletes it. Rate limits and
 * SYN-flood protection with a ban TTL (filter_limit.ban_ns) add the
 * sources they refuse, which user space counts through
 * filter_ban_stats.promoted. */
enum filter_ban_limits {
	FILTER_BAN_MAX_HOSTS = 1048576, /* per family */
	FILTER_BAN_MAX_PREFIXES = 65536,
	FILTER_BAN_REASONS = 4096, /* texts of operator bans; 0 is none */
	FILTER_BAN_REASON_LEN = 64,
	/* Bits of the family byte and padding leading a prefix key. */
	FILTER_BAN_PREFIX_HEADER_BITS = 32,
};

/* Who put an entry in the ban set. */
enum filter_ban_origin {
	FILTER_BAN_OPERATOR,
	FILTER_BAN_RATE_LIMIT,	    /* a rule's rate limit: reason is its index */
	FILTER_BAN_INTERFACE_LIMIT, /* the interface-wide rate limit */
	FILTER_BAN_SYN_FLOOD,
};

struct filter_ban_v6_key {
	__u8 addr[16];
};

struct filter_ban_prefix_key {
	__u32 prefixlen; /* FILTER_BAN_PREFIX_HEADER_BITS + the CIDR's length */
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

/* What an entry says of its source: whether, until when and why it is
 * banned. */
struct filter_ban_state {
	/* CLOCK_BOOTTIME ns, bpf_ktime_get_boot_ns(); 0: never expires. */
	__u64 expires_ns;
	__u64 added_ns;
	/* OPERATOR: an index in ban_reasons (0: none); RATE_LIMIT: the rule's
	 * index in its rule set. */
	__u32 reason;
	__u8 origin; /* enum filter_ban_origin */
	__u8 banned; /* 0: not banned (a deletion not yet swept, a new entry before) */
	__u8 pad[2];
};

/* A change of the set by user space is all or nothing: it writes every
 * entry it changes with `change` above ban_config.committed, the new state
 * in `now` and the one in force in `before`, then commits them all at once
 * by raising ban_config.committed to `change`. Until then the program reads
 * `before`. The entries of a change killed before its commit keep reading
 * `before`, and the next change puts them back as they were. */
struct filter_ban {
	struct filter_ban_state now;
	struct filter_ban_state before;
	/* What the entry dropped, added atomically by the program. */
	__u64 packets;
	__u64 bytes;
	/* The change that wrote the entry; 0 (the program's): in force. */
	__u64 change;
};

struct filter_ban_reason {
	char text[FILTER_BAN_REASON_LEN];
};

/* Written by user space after each change of the set. */
struct filter_ban_config {
	/* Entries in ban_prefixes; 0: the program does not look there. */
	__u64 prefixes;
	/* What user space counted at its last change, and the sum of
	 * filter_ban_stats.promoted then, so readers add the promotions
	 * since without walking the maps. */
	__u64 hosts_v4;
	__u64 hosts_v6;
	__u64 promoted_seen;
	/* The last change of the set in force (see filter_ban). */
	__u64 committed;
};

struct filter_ban_stats {
	struct traffic_counter banned;
	/* Sources a limiter added (new entries) or could not (set full). */
	__u64 promoted;
	__u64 promote_failed;
};

#endif /* MESHBPF_MESH_FILTER_H */
