/* SPDX-License-Identifier: GPL-2.0 */
/*
 * `meshbpf capture`: copies of the packets an XDP program decided, shared
 * with meshbpf's Rust side through the skeleton's generated types.
 *
 * A pinned one-entry array, capture_control, says whether a capture runs
 * and what it selects; while its `enabled` is 0 a packet costs one array
 * lookup and a branch. Selection happens in the kernel, so a packet that is
 * not selected costs no copy. The first `snaplen` bytes of a selected packet
 * go through the capture_ring ring buffer; a full buffer counts the packet
 * in capture_stats.lost. A capture never changes a verdict.
 */
#ifndef MESHBPF_CAPTURE_H
#define MESHBPF_CAPTURE_H

enum capture_limits {
	/* The largest frame of a 1500-byte MTU with a VLAN tag: every
	 * record reserves this much, because the ring buffer's reserve
	 * takes a size the verifier knows. */
	CAPTURE_MAX_SNAPLEN = 1522,
	CAPTURE_RING_BYTES = 8 << 20,
};

/* Why a packet got its fate; the bit 1 << verdict of
 * capture_control.verdicts selects it. */
enum capture_verdict {
	CAPTURE_PASS,
	CAPTURE_DROP, /* a deny rule, or the default policy */
	CAPTURE_RATE_LIMITED,
	CAPTURE_SYN_DROPPED,
	CAPTURE_BANNED,
	CAPTURE_VERDICTS,
};

/* Bits of capture_selection.conditions: the conditions a packet must meet. */
enum capture_match {
	CAPTURE_MATCH_RULE = 1, /* rule == control's rule (CAPTURE_NO_RULE: the default) */
	CAPTURE_MATCH_SRC = 2,
	CAPTURE_MATCH_DST = 4,
	CAPTURE_MATCH_PORT = 8, /* either port */
	CAPTURE_MATCH_PROTO = 16,
};

/* An event's rule when no rule matched (the default policy decided, or a
 * ban, which comes before the rules). */
#define CAPTURE_NO_RULE 0xFFFFFFFF

struct capture_selection {
	__u32 enabled;
	__u32 verdicts;	  /* 1 << enum capture_verdict bits */
	__u32 conditions; /* enum capture_match bits */
	__u32 rule;	  /* index in generation `gen` */
	__u32 snaplen;	  /* 1 .. CAPTURE_MAX_SNAPLEN */
	/* Who runs the capture, for `health` to name a stale one. */
	__u32 owner_pid;
	__u8 gen;
	__u8 protocol; /* IP protocol number */
	__u16 port;    /* host order */
	/* Family 4 or 6; addresses already masked with their masks. */
	__u8 src_family;
	__u8 dst_family;
	__u8 pad[2];
	__u8 src[16];
	__u8 src_mask[16];
	__u8 dst[16];
	__u8 dst_mask[16];
};

struct capture_stats {
	__u64 captured;
	/* Selected, but the ring buffer was full. */
	__u64 lost;
};

struct capture_event {
	__u64 boottime_ns; /* bpf_ktime_get_boot_ns() */
	__u32 ifindex;
	__u32 len;    /* of the frame */
	__u32 caplen; /* bytes of data that hold the frame's start */
	__u32 rule;   /* index in the rule set, or CAPTURE_NO_RULE */
	__u8 verdict; /* enum capture_verdict */
	__u8 gen;
	__u8 pad[6];
	__u8 data[CAPTURE_MAX_SNAPLEN];
};

#endif /* MESHBPF_CAPTURE_H */
