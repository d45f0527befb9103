/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Counter layout shared by the XDP programs and meshbpf's Rust side.
 *
 * Rust never mirrors these definitions: it reads map bytes into the
 * skeleton's generated types, so this header is the single source of truth.
 */
#ifndef MESHBPF_TRAFFIC_COUNTERS_H
#define MESHBPF_TRAFFIC_COUNTERS_H

/* A layer is classified only when its whole header is present and valid;
 * anything else (truncated, unknown, garbage) counts as *_OTHER. */
enum l3_proto {
	L3_IPV4,
	L3_IPV6,
	L3_ARP,
	L3_OTHER,
	L3_MAX,
};

/* Every frame is counted once in l3 and once in l4, so each breakdown sums
 * to the totals; frames without an IP header count as L4_OTHER. */
enum l4_proto {
	L4_TCP,
	L4_UDP,
	L4_ICMP,
	L4_ICMPV6,
	L4_OTHER,
	L4_MAX,
};

struct traffic_counter {
	__u64 packets;
	__u64 bytes;
};

/* One slot of a per-CPU array: one lookup per packet, no atomics. */
struct traffic_counters {
	struct traffic_counter l3[L3_MAX];
	struct traffic_counter l4[L4_MAX];
};

#endif /* MESHBPF_TRAFFIC_COUNTERS_H */
