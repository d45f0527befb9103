// SPDX-License-Identifier: GPL-2.0
/* xdp_counter: per-CPU packet and byte counters by L3 and L4 protocol.
 * It never changes a packet's fate: the verdict is always XDP_PASS. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
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

SEC("xdp")
int xdp_counter(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	void *data = (void *)(long)ctx->data;
	struct traffic_counters *slot;
	struct packet_info pkt;
	__u64 len = data_end - data;
	__u32 zero = 0;

	parse_packet(data, data_end, &pkt);

	slot = bpf_map_lookup_elem(&counters, &zero);
	if (!slot)
		return XDP_PASS;
	count_frame(slot, &pkt, len);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
