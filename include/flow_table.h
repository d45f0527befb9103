/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The flow table of tc_classifier, shared with meshbpf's Rust side through
 * the skeleton's generated types.
 *
 * One LRU hash entry per 5-tuple and direction. Values are shared between
 * CPUs and updated with atomics: a per-CPU LRU would hold one copy of every
 * flow per CPU and make a million-flow table a multi-gigabyte one.
 */
#ifndef MESHBPF_FLOW_TABLE_H
#define MESHBPF_FLOW_TABLE_H

/* The default and the ceiling of --max-flows. An enum rather than defines so
 * that Rust reads them from the skeleton (flow_limits::FLOW_MAX_ENTRIES). */
enum flow_limits {
	FLOW_DEFAULT_MAX = 65536,
	FLOW_MAX_ENTRIES = 4194304,
};

/* The hook a packet was seen on; also the index of its flow_stats slot. */
enum flow_direction {
	FLOW_INGRESS,
	FLOW_EGRESS,
	FLOW_DIRECTION_MAX,
};

/* What the first payload bytes of a flow look like. */
enum l7_proto {
	L7_UNKNOWN,
	L7_HTTP1,
	L7_TLS,
	L7_HTTP2,
	L7_DNS,
	L7_SSH,
	L7_MAX,
};

/* The L7 guess reads at most this many payload bytes of a packet... */
#define FLOW_L7_WINDOW 16
/* ...of at most this many packets that carry payload (pure ACKs do not
 * count)... */
#define FLOW_L7_GUESS_PACKETS 16
/* ...within the flow's first this many packets: a flow still unknown by
 * then (bulk data, a protocol we do not know) costs nothing more. */
#define FLOW_L7_GUESS_WINDOW 1024

struct flow_key {
	/* IPv4 addresses fill the first 4 bytes, the rest stays zero. */
	__u8 src[16];
	__u8 dst[16];
	/* Host order. ICMP and ICMPv6 put the type in sport and the code in
	 * dport, so each kind of message is its own flow. Zero when the packet
	 * has no L4 header to read: IP fragments after the first, protocols
	 * without ports, L4 headers cut short. */
	__u16 sport;
	__u16 dport;
	__u8 family;	/* 4 or 6 */
	__u8 protocol;	/* IP protocol number (after IPv6 extension headers) */
	__u8 direction; /* enum flow_direction */
	__u8 pad;	/* always zero */
};

struct flow_value {
	/* One per skb: a GSO/GRO aggregate counts once, as in tcpdump. */
	__u64 packets;
	/* skb->len as TC sees it: from the Ethernet header on, without a VLAN
	 * tag the device took off (hardware offload, or ingress untagging). */
	__u64 bytes;
	/* CLOCK_MONOTONIC ns (bpf_ktime_get_ns). */
	__u64 first_seen_ns;
	__u64 last_seen_ns;
	/* Every TCP flag seen on the flow, ORed: the TCP header's flags byte
	 * (CWR ECE URG ACK PSH RST SYN FIN) in the low 8 bits. 64 bits wide
	 * because BPF atomics (without -mcpu=v3) are 64-bit only. */
	__u64 tcp_flags;
	__u8 l7; /* enum l7_proto; guessed once payload shows up */
	/* The flow's QoS class (qos_classes.h), valid while class_generation
	 * equals the applied generation; 0 when it has none. */
	__u8 class_id;
	/* Packets with payload the L7 guess has looked at. */
	__u8 l7_tries;
	__u8 pad;
	__u32 class_generation;
};

/* Flow table totals, per CPU, one slot per direction (the `flow_stats` map).
 * Not `struct flow_stats`: the kernel's BTF has one. Evictions are flows
 * created minus flows still in the table: the LRU evicts without telling
 * anyone. */
struct flow_table_stats {
	__u64 flows_created;
	/* Every packet the program saw, flow or not. */
	__u64 packets;
	__u64 bytes;
	/* Packets that are not IPv4/IPv6 or too short to parse as such (an IP
	 * header cut short, an IPv6 extension chain not walked to its end):
	 * no flow. */
	__u64 not_ip;
	/* IP packets for which no entry could be made or found. */
	__u64 insert_failed;
	/* Packets whose headers were not in the linear area and had to be
	 * pulled (bpf_skb_pull_data) before they could be parsed. */
	__u64 pulled;
};

#endif /* MESHBPF_FLOW_TABLE_H */
