/* SPDX-License-Identifier: GPL-2.0 */
/*
 * QoS classes of tc_classifier (`attach --classes FILE`), shared with
 * meshbpf's Rust side through the skeleton's generated types.
 *
 * A class sets skb->priority and/or skb->mark, so that the operator's own
 * qdisc (HTB picks the class whose id equals skb->priority; u32 matches
 * marks) shapes the traffic. Rules pick a flow's class from its 5-tuple,
 * direction and L7 guess, first match in file order. The class is worked out
 * when a flow is created or its L7 guess changes, and cached in the flow's
 * entry: packets of a known flow pay for a generation check, not for the
 * rules.
 *
 * Everything lives in two slots. `attach --classes` writes the slot not in
 * use (its classes, its rules ended by a class 0 rule, zeroed counters) and
 * only then bumps class_config.generation, whose low bit selects the slot:
 * a packet sees the old rule set or the new one, never a mix, and flows
 * cached under the old generation are classified again.
 */
#ifndef MESHBPF_QOS_CLASSES_H
#define MESHBPF_QOS_CLASSES_H

#include "flow_table.h"

/* An enum rather than defines so that Rust reads them from the skeleton. */
enum class_limits {
	/* Class ids per slot; id 0 is "no class" (the packet is not touched,
	 * and counted as unclassified). */
	CLASS_MAX = 64,
	CLASS_RULES_MAX = 256,
	CLASS_NAME_LEN = 32,
	CLASS_SLOTS = 2,
};

/* What a class writes into the packet (class_def.sets). */
enum class_sets {
	CLASS_SET_PRIORITY = 1,
	CLASS_SET_MARK = 2,
};

/* class_rule.l7 for a rule that matches any L7 guess. */
#define CLASS_L7_ANY 0xff

struct class_def {
	/* Only for meshbpf's own output: pins are its only state. */
	char name[CLASS_NAME_LEN];
	__u32 priority;
	__u32 mark;
	__u32 sets; /* enum class_sets bits */
	__u32 pad;
};

/* Addresses as four 32-bit words in network order, already masked. */
struct class_rule {
	__u32 src[4];
	__u32 src_mask[4];
	__u32 dst[4];
	__u32 dst_mask[4];
	/* Host order, inclusive; 0-65535 for any. */
	__u16 sport_lo;
	__u16 sport_hi;
	__u16 dport_lo;
	__u16 dport_hi;
	__u8 family;	 /* 0 any, 4 or 6 */
	__u8 protocol;	 /* IP protocol number, if has_protocol */
	__u8 l7;	 /* enum l7_proto, or CLASS_L7_ANY */
	__u8 directions; /* bit (1 << enum flow_direction) per direction */
	/* Set when the rule names ports: then it matches TCP and UDP only,
	 * never the ICMP type and code that flows keep in the port fields. */
	__u8 needs_ports;
	/* The class this rule picks; 0 ends the slot's rules. */
	__u8 class_id;
	/* Set when the rule names a protocol: flows of `protocol` only. A
	 * flag, because every number is a protocol (0 is hopopt). */
	__u8 has_protocol;
	__u8 pad;
};

struct class_config {
	/* 0 until classes are applied; then bumped by each apply, its low
	 * bit naming the slot in use. */
	__u32 generation;
};

/* Per-CPU, per slot and class id, per direction. */
struct class_counters {
	__u64 packets[FLOW_DIRECTION_MAX];
	__u64 bytes[FLOW_DIRECTION_MAX];
};

#endif /* MESHBPF_QOS_CLASSES_H */
