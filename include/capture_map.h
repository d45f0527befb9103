/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Kernel-only: the maps of `meshbpf capture` (see capture.h) and the call a
 * packet program makes once its verdict is known.
 */
#ifndef MESHBPF_CAPTURE_MAP_H
#define MESHBPF_CAPTURE_MAP_H

#include "capture.h"
#include "packet_parse.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct capture_selection);
} capture_control SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, CAPTURE_RING_BYTES);
} capture_ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct capture_stats);
} capture_stats SEC(".maps");

/* Referenced so the enums and the event reach BTF and the skeleton. */
const volatile enum capture_limits capture_limits_anchor = CAPTURE_MAX_SNAPLEN;
const volatile enum capture_verdict capture_verdict_anchor = CAPTURE_PASS;
const volatile enum capture_match capture_match_anchor = CAPTURE_MATCH_RULE;
const volatile struct capture_event capture_event_anchor = {};

/* Whether the 16 bytes of `addr`, masked with `mask`, equal `want`. */
static __always_inline bool capture_masked_eq(const __u8 *addr, const __u8 *mask, const __u8 *want)
{
	__u64 a[2], m[2], w[2];

	__builtin_memcpy(a, addr, 16);
	__builtin_memcpy(m, mask, 16);
	__builtin_memcpy(w, want, 16);
	return (a[0] & m[0]) == w[0] && (a[1] & m[1]) == w[1];
}

static __always_inline __u8 capture_family(const struct packet_info *pkt)
{
	return pkt->l3 == L3_IPV4 ? 4 : pkt->l3 == L3_IPV6 ? 6 : 0;
}

static __always_inline bool capture_selects(const struct capture_selection *c,
					    const struct packet_info *pkt, __u32 rule, __u8 gen,
					    __u8 verdict)
{
	if (verdict >= CAPTURE_VERDICTS || !(c->verdicts & (1U << verdict)))
		return false;
	if ((c->conditions & CAPTURE_MATCH_RULE) && (rule != c->rule || gen != c->gen))
		return false;
	if ((c->conditions & CAPTURE_MATCH_SRC) &&
	    (capture_family(pkt) != c->src_family ||
	     !capture_masked_eq(pkt->src, c->src_mask, c->src)))
		return false;
	if ((c->conditions & CAPTURE_MATCH_DST) &&
	    (capture_family(pkt) != c->dst_family ||
	     !capture_masked_eq(pkt->dst, c->dst_mask, c->dst)))
		return false;
	if ((c->conditions & CAPTURE_MATCH_PROTO) &&
	    (!capture_family(pkt) || pkt->ip_proto != c->protocol))
		return false;
	if ((c->conditions & CAPTURE_MATCH_PORT) &&
	    (!pkt->has_ports || (pkt->sport != c->port && pkt->dport != c->port)))
		return false;
	return true;
}

/* Copies the packet into the ring buffer if the running capture selects
 * it. A subprogram, so that the packet path without a capture carries none
 * of this; it looks the selection up again, as a call takes five
 * arguments at most. Global, so that the verifier checks it once rather
 * than once per state the packet's parse ends in. */
__noinline int capture_packet(struct xdp_md *ctx, const struct packet_info *pkt, __u32 rule,
			      __u8 gen, __u8 verdict)
{
	__u64 len = ctx->data_end - ctx->data;
	struct capture_selection *c;
	struct capture_stats *stats;
	struct capture_event *ev;
	__u64 caplen;
	__u32 zero = 0;

	if (!pkt)
		return 0;
	c = bpf_map_lookup_elem(&capture_control, &zero);
	if (!c || !capture_selects(c, pkt, rule, gen, verdict))
		return 0;
	stats = bpf_map_lookup_elem(&capture_stats, &zero);
	if (!stats)
		return 0;
	ev = bpf_ringbuf_reserve(&capture_ring, sizeof(*ev), 0);
	if (!ev) {
		stats->lost++;
		return 0;
	}
	caplen = c->snaplen < len ? c->snaplen : len;
	/* Checked as caplen - 1 and passed as that plus one, so the register
	 * the helper gets carries both bounds: 6.1's verifier refuses a size
	 * that may be 0, and clang checked a copy of caplen other than the
	 * one passed when the two bounds were tested apart. */
	caplen -= 1;
	barrier_var(caplen);
	if (caplen >= CAPTURE_MAX_SNAPLEN || bpf_xdp_load_bytes(ctx, 0, ev->data, caplen + 1)) {
		bpf_ringbuf_discard(ev, 0);
		stats->lost++;
		return 0;
	}
	ev->boottime_ns = bpf_ktime_get_boot_ns();
	ev->ifindex = ctx->ingress_ifindex;
	ev->len = len;
	ev->caplen = caplen + 1;
	ev->rule = rule;
	ev->verdict = verdict;
	ev->gen = gen;
	bpf_ringbuf_submit(ev, 0);
	stats->captured++;
	return 0;
}

static __always_inline bool capture_running(void)
{
	__u32 zero = 0;
	struct capture_selection *c = bpf_map_lookup_elem(&capture_control, &zero);

	return c && c->enabled;
}

/* The packet program's call, after its verdict: one array lookup and a
 * branch while no capture runs. */
static __always_inline void capture(struct xdp_md *ctx, const struct packet_info *pkt, __u32 rule,
				    __u8 gen, __u8 verdict)
{
	if (capture_running())
		capture_packet(ctx, pkt, rule, gen, verdict);
}

GLOBAL_PARSE(xdp_parse, struct xdp_md)

/* Parses the packet again for the capture: passing a program's own
 * packet_info by pointer would keep it on the stack, where xdp_counter
 * otherwise holds it in registers (2 ns a packet, with no capture).
 * Global, so that the verifier checks it once on its own, not once per
 * state the program's own parse ends in. */
__noinline int capture_reparsed(struct xdp_md *ctx, __u32 rule, __u8 gen, __u8 verdict)
{
	struct packet_info pkt;

	xdp_parse(ctx, &pkt);
	capture_packet(ctx, &pkt, rule, gen, verdict);
	return 0;
}

/* capture() for a program whose packet_info must stay in registers. */
static __always_inline void capture_unparsed(struct xdp_md *ctx, __u32 rule, __u8 gen, __u8 verdict)
{
	if (capture_running())
		capture_reparsed(ctx, rule, gen, verdict);
}

#endif /* MESHBPF_CAPTURE_MAP_H */
