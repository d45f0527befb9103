// SPDX-License-Identifier: GPL-2.0
/* xdp_counter: per-CPU packet and byte counters by L3 and L4 protocol.
 * It never changes a packet's fate: the verdict is always XDP_PASS, which
 * is also what `meshbpf capture` reports of every packet (no rule). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "traffic_map.h"
#include "capture_map.h"

SEC("xdp")
int xdp_counter(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	void *data = (void *)(long)ctx->data;
	struct packet_info pkt;

	parse_packet(data, data_end, &pkt);
	count_frame(&pkt, data_end - data);
	capture_unparsed(ctx, CAPTURE_NO_RULE, 0, CAPTURE_PASS);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
