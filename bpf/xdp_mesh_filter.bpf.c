// SPDX-License-Identifier: GPL-2.0
/* xdp_mesh_filter: allow or deny by CIDR, protocol and port, per-source rate
 * limits and SYN-flood protection, with the xdp_counter breakdown kept.
 *
 * The packet path never loops over rules: see include/mesh_filter.h for how
 * rules become a fixed number of lookups, and src/rules/compile.rs for the
 * compiler that fills them. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "traffic_map.h"
#include "mesh_filter.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct filter_stats);
} filter_stats SEC(".maps");

/* The generation packets use; user space flips it to publish a rule set. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} active SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FILTER_GENERATIONS);
	__type(key, __u32);
	__type(value, struct filter_config);
} filter_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, FILTER_GENERATIONS * FILTER_MAX_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct filter_prefix_key);
	__type(value, struct filter_prefix_value);
} src_prefixes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, FILTER_GENERATIONS * FILTER_MAX_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct filter_prefix_key);
	__type(value, struct filter_prefix_value);
} dst_prefixes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FILTER_GENERATIONS * FILTER_MAX_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct filter_prefix_key);
	__type(value, struct filter_prefix_value);
} src_exact SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FILTER_GENERATIONS * FILTER_MAX_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct filter_prefix_key);
	__type(value, struct filter_prefix_value);
} dst_exact SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FILTER_GENERATIONS * FILTER_PORTS_PER_GEN);
	__type(key, __u32);
	__type(value, struct filter_port_classes);
} port_classes SEC(".maps");

/* Allocated on demand: sized for two full generations, used far less. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FILTER_GENERATIONS * FILTER_MAX_DECISIONS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct filter_key);
	__type(value, struct filter_decision);
} decisions SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FILTER_GENERATIONS * FILTER_MAX_RULES);
	__type(key, __u32);
	__type(value, struct traffic_counter);
} rule_hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FILTER_GENERATIONS * FILTER_MAX_RULES);
	__type(key, __u32);
	__type(value, struct filter_limit);
} rule_limits SEC(".maps");

/* Read by user space only: the rule set as written, for `filter show`. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FILTER_GENERATIONS * FILTER_MAX_RULES);
	__type(key, __u32);
	__type(value, struct filter_rule);
} rules SEC(".maps");

/* Per-source limiter state; a flood of sources evicts the oldest. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FILTER_MAX_LIMITERS);
	__type(key, struct filter_limiter_key);
	__type(value, struct filter_limiter_state);
} limiters SEC(".maps");

/* Referenced so the enums reach BTF and the skeleton's Rust types. */
const volatile enum filter_action filter_action_anchor = FILTER_ALLOW;
const volatile enum filter_proto filter_proto_anchor = FILTER_TCP;
const volatile enum filter_verdict filter_verdict_anchor = FILTER_PASS;
const volatile enum filter_family filter_family_anchor = FILTER_IPV4;
const volatile enum filter_limits filter_limits_anchor = FILTER_GENERATIONS;
const volatile enum filter_flags filter_flags_anchor = FILTER_NEEDS_PORTS;

static __always_inline enum filter_proto proto_class(const struct packet_info *pkt)
{
	if (pkt->l3 == L3_ARP)
		return FILTER_ARP;
	if (pkt->l3 != L3_IPV4 && pkt->l3 != L3_IPV6)
		return FILTER_NON_IP;
	switch (pkt->ip_proto) {
	case IPPROTO_TCP_NR:
		return FILTER_TCP;
	case IPPROTO_UDP_NR:
		return FILTER_UDP;
	case IPPROTO_ICMP_NR:
		return pkt->l3 == L3_IPV4 ? FILTER_ICMP : FILTER_OTHER_IP;
	case IPPROTO_ICMPV6_NR:
		return pkt->l3 == L3_IPV6 ? FILTER_ICMPV6 : FILTER_OTHER_IP;
	default:
		return FILTER_OTHER_IP;
	}
}

/* The entry of the longest rule prefix holding `addr` (NULL: class 0),
 * probed in the exact-match hash once per configured length, or walked in
 * the trie. */
static __always_inline struct filter_prefix_value *
address_entry(void *trie, void *exact, const struct filter_prefix_probe *probes, __u8 gen,
	      __u8 family, const __u8 *addr)
{
	struct filter_prefix_value *entry;
	struct filter_prefix_key key;
	int i, b;

	__builtin_memset(&key, 0, sizeof(key));
	key.gen = gen;
	key.family = family;
	if (probes[0].len == FILTER_USE_TRIE) {
		key.prefixlen = FILTER_PREFIX_HEADER_BITS + (family == FILTER_IPV4 ? 32 : 128);
		__builtin_memcpy(key.addr, addr, 16);
		return bpf_map_lookup_elem(trie, &key);
	}
	for (i = 0; i < FILTER_HASH_LENGTHS; i++) {
		const struct filter_prefix_probe *probe = &probes[i];

		if (probe->len == FILTER_NO_LENGTH)
			break;
		key.prefixlen = FILTER_PREFIX_HEADER_BITS + probe->len;
#pragma unroll
		for (b = 0; b < 16; b++)
			key.addr[b] = addr[b] & probe->mask[b];
		entry = bpf_map_lookup_elem(exact, &key);
		if (entry)
			return entry;
	}
	return NULL;
}

/* The decision that depends on one side's class alone, if there is one. */
static __always_inline const struct filter_decision *alone(const struct filter_prefix_value *entry,
							   const struct filter_decision *class0,
							   enum filter_proto proto)
{
	const struct filter_decision *decision = entry ? &entry->alone[proto] : &class0[proto];

	return decision->flags & FILTER_DECIDED ? decision : NULL;
}

static __always_inline __u16 port_class(__u8 gen, enum filter_proto proto, __u16 port, bool source)
{
	__u32 index = gen * FILTER_PORTS_PER_GEN + (proto == FILTER_UDP ? 65536 : 0) + port;
	struct filter_port_classes *classes;

	classes = bpf_map_lookup_elem(&port_classes, &index);
	if (!classes)
		return FILTER_UNKNOWN_PORT;
	return source ? classes->sport : classes->dport;
}

/* The first rule matching the packet, or NULL for the default. The order
 * is the compiler's contract: a source-only answer (from the source's
 * prefix entry), a destination-only answer (likewise), then both; then
 * ports if the answer needs them, keyed by the classes that answered. */
static __always_inline const struct filter_decision *decide(const struct packet_info *pkt,
							    enum filter_proto proto, __u8 gen,
							    const struct filter_config *cfg)
{
	struct filter_key key = {
		.proto = proto,
		.gen = gen,
		.sport = FILTER_NO_PORTS,
		.dport = FILTER_NO_PORTS,
	};
	struct filter_prefix_value *src_entry = NULL, *dst_entry = NULL;
	const struct filter_decision *decision = NULL;
	__u8 family = pkt->l3 == L3_IPV4 ? FILTER_IPV4 : FILTER_IPV6;
	int lengths = family == FILTER_IPV4 ? FILTER_V4_LENGTHS : FILTER_V6_LENGTHS;
	__u8 kinds = cfg->decision_kinds;

	if (proto >= FILTER_PROTO_CLASSES)
		return NULL;
	/* A side's entry is needed only by the decision kinds that use it. */
	if (proto != FILTER_ARP) {
		if (kinds & (FILTER_SRC_DECISIONS | FILTER_PAIR_DECISIONS))
			src_entry = address_entry(&src_prefixes, &src_exact,
						  cfg->src_probes[lengths], gen, family, pkt->src);
		if (kinds & (FILTER_DST_DECISIONS | FILTER_PAIR_DECISIONS))
			dst_entry = address_entry(&dst_prefixes, &dst_exact,
						  cfg->dst_probes[lengths], gen, family, pkt->dst);
	}

	if (kinds & FILTER_SRC_DECISIONS) {
		decision = alone(src_entry, cfg->src_alone, proto);
		key.src = src_entry ? src_entry->class : 0;
		key.dst = FILTER_ANY_CLASS;
	}
	if (!decision && (kinds & FILTER_DST_DECISIONS)) {
		decision = alone(dst_entry, cfg->dst_alone, proto);
		key.src = FILTER_ANY_CLASS;
		key.dst = dst_entry ? dst_entry->class : 0;
	}
	if (!decision && (kinds & FILTER_PAIR_DECISIONS)) {
		key.src = src_entry ? src_entry->class : 0;
		key.dst = dst_entry ? dst_entry->class : 0;
		decision = bpf_map_lookup_elem(&decisions, &key);
	}
	if (!decision || !(decision->flags & FILTER_NEEDS_PORTS))
		return decision;

	if (pkt->has_ports && (proto == FILTER_TCP || proto == FILTER_UDP)) {
		key.sport = port_class(gen, proto, pkt->sport, true);
		key.dport = port_class(gen, proto, pkt->dport, false);
	} else {
		key.sport = FILTER_UNKNOWN_PORT;
		key.dport = FILTER_UNKNOWN_PORT;
	}
	return bpf_map_lookup_elem(&decisions, &key);
}

/* GCRA: admits a packet unless it arrives earlier than its theoretical
 * arrival time allows. Lock-free, because LRU maps cannot hold a
 * bpf_spin_lock; a lost race retries a bounded number of times. A
 * subprogram, not inlined: three inlined copies made the program large
 * enough to cost every packet ~40 ns, limiters or not. */
static __noinline bool limit_admits(__u32 limiter, const struct packet_info *pkt,
				    const struct filter_limit *limit, __u64 *refused_sources)
{
	struct filter_limiter_key key = {
		.limiter = limiter,
		.family = pkt->l3 == L3_IPV4 ? FILTER_IPV4 : FILTER_IPV6,
	};
	struct filter_limiter_state fresh = {}, *state;
	__u64 now = bpf_ktime_get_ns();
	int i;

	__builtin_memcpy(key.addr, pkt->src, 16);
	state = bpf_map_lookup_elem(&limiters, &key);
	if (!state) {
		bpf_map_update_elem(&limiters, &key, &fresh, BPF_NOEXIST);
		state = bpf_map_lookup_elem(&limiters, &key);
		if (!state)
			return true;
	}

	for (i = 0; i < 4; i++) {
		__u64 tat = state->tat;
		__u64 start = tat > now ? tat : now;

		if (start - now > limit->tolerance_ns) {
			if (!state->refused &&
			    __sync_val_compare_and_swap(&state->refused, 0, 1) == 0)
				(*refused_sources)++;
			return false;
		}
		if (__sync_val_compare_and_swap(&state->tat, tat, start + limit->interval_ns) ==
		    tat)
			return true;
	}
	return false;
}

static __always_inline void count(struct traffic_counter *c, __u64 len)
{
	c->packets++;
	c->bytes += len;
}

static __always_inline enum filter_verdict filter(const struct packet_info *pkt, __u8 gen,
						  const struct filter_config *cfg,
						  struct filter_stats *stats, __u64 len)
{
	enum filter_proto proto = proto_class(pkt);
	const struct filter_decision *decision = NULL;
	__u8 action = cfg->default_action;
	__u32 rule = 0;

	if (proto != FILTER_NON_IP)
		decision = decide(pkt, proto, gen, cfg);
	if (decision && decision->rule < FILTER_MAX_RULES) {
		struct traffic_counter *hits;

		action = decision->action;
		rule = gen * FILTER_MAX_RULES + decision->rule;
		hits = bpf_map_lookup_elem(&rule_hits, &rule);
		if (hits)
			count(hits, len);
	} else {
		decision = NULL;
		count(&stats->defaulted, len);
	}
	if (action == FILTER_DENY)
		return FILTER_DROP;
	if (proto == FILTER_ARP || proto == FILTER_NON_IP)
		return FILTER_PASS;

	if (cfg->syn_flood.interval_ns && proto == FILTER_TCP &&
	    (pkt->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN &&
	    !limit_admits(FILTER_SYN_LIMITER, pkt, &cfg->syn_flood, &stats->syn_flood_sources)) {
		count(&stats->syn_dropped, len);
		return FILTER_DROP;
	}
	if (decision && (decision->flags & FILTER_RATE_LIMITED)) {
		struct filter_limit *limit = bpf_map_lookup_elem(&rule_limits, &rule);

		if (limit && !limit_admits(FILTER_RULE_LIMITER + rule, pkt, limit,
					   &stats->rate_limited_sources)) {
			count(&stats->rate_limited, len);
			return FILTER_DROP;
		}
	}
	if (cfg->rate_limit.interval_ns &&
	    !limit_admits(FILTER_INTERFACE_LIMITER, pkt, &cfg->rate_limit,
			  &stats->rate_limited_sources)) {
		count(&stats->rate_limited, len);
		return FILTER_DROP;
	}
	return FILTER_PASS;
}

SEC("xdp")
int xdp_mesh_filter(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	void *data = (void *)(long)ctx->data;
	struct filter_config *cfg;
	struct filter_stats *stats;
	enum filter_verdict verdict;
	struct packet_info pkt;
	__u64 len = data_end - data;
	__u32 zero = 0, *gen;

	parse_packet(data, data_end, &pkt);

	count_frame(&pkt, len);
	stats = bpf_map_lookup_elem(&filter_stats, &zero);
	gen = bpf_map_lookup_elem(&active, &zero);
	if (!stats || !gen)
		return XDP_PASS;
	cfg = bpf_map_lookup_elem(&filter_config, gen);
	if (!cfg)
		return XDP_PASS;

	verdict = filter(&pkt, *gen & 1, cfg, stats, len);
	count(&stats->verdicts[verdict], len);
	return verdict == FILTER_PASS ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
