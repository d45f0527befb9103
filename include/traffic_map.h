/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Kernel-only: the per-CPU `counters` map that every meshbpf XDP program
 * keeps, laid out by traffic_counters.h. Sharing the definition lets a swap
 * between programs hand the same map over, so the counts never reset.
 */
#ifndef MESHBPF_TRAFFIC_MAP_H
#define MESHBPF_TRAFFIC_MAP_H

#include "packet_parse.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct traffic_counters);
} counters SEC(".maps");

/* Referenced so that the enums reach the object's BTF, and from there the
 * skeleton's generated Rust types that name the counter slots. */
const volatile enum l3_proto l3_proto_names_anchor = L3_OTHER;
const volatile enum l4_proto l4_proto_names_anchor = L4_OTHER;

/* Adds a frame to the L3 and L4 breakdown of this CPU's slot. */
static __always_inline void count_frame(const struct packet_info *pkt, __u64 len)
{
	__u32 zero = 0;
	struct traffic_counters *slot = bpf_map_lookup_elem(&counters, &zero);

	/* Explicit bounds: the verifier may lose them through a stack spill. */
	if (!slot || pkt->l3 >= L3_MAX || pkt->l4 >= L4_MAX)
		return;
	slot->l3[pkt->l3].packets++;
	slot->l3[pkt->l3].bytes += len;
	slot->l4[pkt->l4].packets++;
	slot->l4[pkt->l4].bytes += len;
}

#endif /* MESHBPF_TRAFFIC_MAP_H */
