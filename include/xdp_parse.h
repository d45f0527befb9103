/* SPDX-License-Identifier: GPL-2.0 */
/*
 * parse_packet() as two global functions, for XDP programs whose
 * packet_info lives on the stack. The verifier checks a global function
 * once, on its own: the parse is not checked again for every state of the
 * code around it, and the L3 walk is checked once for every L2 header
 * length rather than once per number of VLAN tags. A call costs a few ns;
 * a program that keeps its packet_info in registers inlines parse_packet()
 * instead.
 */
#ifndef MESHBPF_XDP_PARSE_H
#define MESHBPF_XDP_PARSE_H

#include "packet_parse.h"

__noinline int xdp_parse_l3(struct xdp_md *ctx, struct packet_info *pkt, __u32 off, __u32 proto)
{
	void *data = (void *)(long)ctx->data;

	if (!pkt || off > L3_MAX_OFFSET)
		return 0;
	parse_l3(data + off, (void *)(long)ctx->data_end, proto, pkt);
	return 0;
}

__noinline int xdp_parse(struct xdp_md *ctx, struct packet_info *pkt)
{
	__u16 proto = 0;
	__u32 off;

	if (!pkt)
		return 0;
	off = parse_l2((void *)(long)ctx->data, (void *)(long)ctx->data_end, pkt, &proto);
	if (off)
		xdp_parse_l3(ctx, pkt, off, proto);
	return 0;
}

#endif /* MESHBPF_XDP_PARSE_H */
