// SPDX-License-Identifier: GPL-2.0
/* xdp_mesh_filter: allow or deny by CIDR, protocol and port, per-source rate
 * limits and SYN-flood protection, with the xdp_counter breakdown kept.
 *
 * The packet path never loops over rules: see include/mesh_filter.h for how
 * rules become bit vectors found by a fixed number of lookups, and
 * src/rules/compile.rs for the compiler that fills them. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "traffic_map.h"
#include "mesh_filter.h"
#include "capture_map.h"

/* From the UAPI headers, which vmlinux.h does not carry. */
#define CLOCK_BOOTTIME 7
#define EBUSY	       16
#define EEXIST	       17

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

/* The prefixes of both generations that are not in the tables (IPv6, and
 * IPv4 where the table would be too large), each with its vector id. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, FILTER_GENERATIONS * FILTER_MAX_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct filter_prefix_key);
	__type(value, __u32);
} src_prefixes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, FILTER_GENERATIONS * FILTER_MAX_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct filter_prefix_key);
	__type(value, __u32);
} dst_prefixes SEC(".maps");

/* Inner maps are sized per rule set (BPF_F_INNER_MAP lets their sizes
 * differ), so a generation costs what its rules need. */
struct filter_table {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_INNER_MAP);
	__uint(max_entries, FILTER_TABLE_CHUNKS / 2);
	__type(key, __u32);
	__type(value, __u64);
};

/* Sizes, not BTF types: user space creates the inner maps without BTF,
 * and 6.1 refuses an inner map whose BTF-derived layout (its timer
 * offset: none found in a struct, versus no BTF at all) differs from the
 * template's. A scalar value, as filter_table's, derives the same. */
struct filter_vectors {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_INNER_MAP);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct filter_vector));
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, FILTER_GENERATIONS);
	__type(key, __u32);
	__array(values, struct filter_table);
} tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, FILTER_GENERATIONS);
	__type(key, __u32);
	__array(values, struct filter_vectors);
} vectors SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FILTER_GENERATIONS * FILTER_MAX_RULES);
	__type(key, __u32);
	__type(value, struct filter_rule_action);
} rule_actions SEC(".maps");

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

/* One entry: the commit-confirm state and its timer (see mesh_filter.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct filter_confirm);
} confirm SEC(".maps");

/* The ban set (see mesh_filter.h): hosts by family, shorter CIDRs in the
 * trie, reason texts for user space, and the set-wide config and counts. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FILTER_BAN_MAX_HOSTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct filter_ban);
} ban_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FILTER_BAN_MAX_HOSTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct filter_ban_v6_key);
	__type(value, struct filter_ban);
} ban_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, FILTER_BAN_MAX_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct filter_ban_prefix_key);
	__type(value, struct filter_ban);
} ban_prefixes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FILTER_BAN_REASONS);
	__type(key, __u32);
	__type(value, struct filter_ban_reason);
} ban_reasons SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct filter_ban_config);
} ban_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct filter_ban_stats);
} ban_stats SEC(".maps");

/* Referenced so the enums reach BTF and the skeleton's Rust types. */
const volatile enum filter_action filter_action_anchor = FILTER_ALLOW;
const volatile enum filter_verdict filter_verdict_anchor = FILTER_PASS;
const volatile enum filter_family filter_family_anchor = FILTER_IPV4;
const volatile enum filter_limits filter_limits_anchor = FILTER_GENERATIONS;
const volatile enum filter_lookups filter_lookups_anchor = FILTER_LOOKUP_SRC;
const volatile enum filter_rule_protocol filter_rule_protocol_anchor = FILTER_RULE_ANY_IP;
const volatile enum filter_confirm_state filter_confirm_state_anchor = FILTER_CONFIRM_NONE;
const volatile enum filter_control_command filter_control_command_anchor = FILTER_CONTROL_ARM;
const volatile enum filter_control_result filter_control_result_anchor = FILTER_CONTROL_DONE;
const volatile enum filter_ban_limits filter_ban_limits_anchor = FILTER_BAN_MAX_HOSTS;
const volatile enum filter_ban_origin filter_ban_origin_anchor = FILTER_BAN_OPERATOR;
/* So the request's layout reaches BTF and the skeleton's Rust types. */
const volatile struct filter_control_request filter_control_request_anchor = {};
const volatile struct filter_ban_v6_key filter_ban_v6_key_anchor = {};
const volatile struct filter_ban_prefix_key filter_ban_prefix_key_anchor = {};
const volatile struct filter_ban_reason filter_ban_reason_anchor = {};

/* Index of the lowest set bit of a non-zero word: BPF has no count of
 * trailing zeros, and a de Bruijn multiply takes one load. */
static const __u8 debruijn[64] = {
	0,  1,	48, 2,	57, 49, 28, 3,	61, 58, 50, 42, 38, 29, 17, 4,	62, 55, 59, 36, 53, 51,
	43, 22, 45, 39, 33, 30, 24, 18, 12, 5,	63, 47, 56, 27, 60, 41, 37, 16, 54, 35, 52, 21,
	44, 32, 23, 11, 46, 26, 40, 15, 34, 20, 31, 10, 25, 14, 19, 9,	13, 8,	7,  6,
};

static __always_inline __u32 lowest_bit(__u64 word)
{
	return debruijn[((word & -word) * 0x03f79d71b4cb0a89ULL) >> 58];
}

/* Entry `index` of a generation's table: two to a value, as an array map
 * would align a lone __u32 value to 8 bytes. */
static __always_inline __u32 table_entry(void *table, __u32 index, __u32 none)
{
	__u32 pair = index / 2;
	__u64 *entries = bpf_map_lookup_elem(table, &pair);

	return entries ? (__u32)(*entries >> (index % 2 * 32)) : none;
}

/* The vector id of an IPv4 address: at most three levels of the table's
 * multibit trie, each one array lookup. */
static __always_inline __u32 ipv4_vector(void *table, __u32 first_level, const __u8 *addr,
					 __u32 none)
{
	__u32 entry = table_entry(table, first_level + ((__u32)addr[0] << 8 | addr[1]), none);
	int level;

	for (level = 2; level < 4 && (entry & FILTER_CHUNK_FLAG); level++)
		entry = table_entry(table, (entry & ~FILTER_CHUNK_FLAG) + addr[level], none);
	return entry;
}

static __always_inline __u32 trie_vector(void *trie, __u8 gen, __u8 family, const __u8 *addr,
					 __u32 none)
{
	struct filter_prefix_key key = {
		.prefixlen = FILTER_PREFIX_HEADER_BITS + (family == FILTER_IPV4 ? 32 : 128),
		.gen = gen,
		.family = family,
	};
	__u32 *id;

	__builtin_memcpy(key.addr, addr, 16);
	id = bpf_map_lookup_elem(trie, &key);
	return id ? *id : none;
}

/* The lowest rule set in all five vectors, or FILTER_NO_RULE: from the
 * word of the latest first bit, over the words all five summaries have.
 * Global, so that the verifier checks its loops once, not once per path
 * of classify() that calls it. */
__noinline __u32 first_common(const struct filter_vector *v0, const struct filter_vector *v1,
			      const struct filter_vector *v2, const struct filter_vector *v3,
			      const struct filter_vector *v4)
{
	__u32 start, s, k;

	if (!v0 || !v1 || !v2 || !v3 || !v4)
		return FILTER_NO_RULE;
	start = v0->first;
	start = v1->first > start ? v1->first : start;
	start = v2->first > start ? v2->first : start;
	start = v3->first > start ? v3->first : start;
	start = v4->first > start ? v4->first : start;
	if (start == FILTER_NO_RULE)
		return FILTER_NO_RULE;
	start /= 64;
	/* From 0, not from start's summary word: a loop whose index starts
	 * at a constant is one 6.1's verifier can bound; from start it
	 * refused the summary read as past the vector's end. */
	for (s = 0; s < FILTER_SUMMARY_WORDS; s++) {
		__u64 candidates;

		if (s < start / 64)
			continue;
		candidates = v0->summary[s] & v1->summary[s] & v2->summary[s] & v3->summary[s] &
			     v4->summary[s];
		if (s == start / 64)
			candidates &= ~0ULL << (start % 64);
		for (k = 0; k < 64 && candidates; k++) {
			__u32 w = (s * 64 + lowest_bit(candidates)) & (FILTER_VECTOR_WORDS - 1);
			__u64 common = v0->words[w] & v1->words[w] & v2->words[w] & v3->words[w] &
				       v4->words[w];

			if (common)
				return w * 64 + lowest_bit(common);
			candidates &= candidates - 1;
		}
	}
	return FILTER_NO_RULE;
}

/* The index of the first rule matching the packet, or FILTER_NO_RULE. */
/* The vector of a field no rule has a condition on. Not const: a global
 * function's pointer arguments must be writable memory, which .rodata is
 * not; nothing writes it. */
static struct filter_vector all_rules = {
	.summary = { [0 ... FILTER_SUMMARY_WORDS - 1] = ~0ULL },
	.words = { [0 ... FILTER_VECTOR_WORDS - 1] = ~0ULL },
};

/* Vector `id` if the field is looked up (`lookups` has `field`) and the
 * vector is not every rule's, else all_rules, which costs no lookup. */
static __always_inline const struct filter_vector *
vector(void *vecs, const struct filter_config *cfg, __u8 lookups, __u8 field, __u32 id)
{
	if (!(lookups & field) || id == cfg->all)
		return &all_rules;
	return bpf_map_lookup_elem(vecs, &id);
}

/* The index of the first rule matching the packet, or FILTER_NO_RULE. */
static __always_inline __u32 classify(const struct packet_info *pkt, __u8 gen,
				      const struct filter_config *cfg)
{
	__u32 src = cfg->no_prefix[0], dst = cfg->no_prefix[1], protocol;
	__u32 sport = cfg->no_ports[0], dport = cfg->no_ports[1], key = gen;
	__u8 lookups = cfg->lookups;
	void *table, *vecs;

	/* With no rule, the all-ones vectors would match a rule 0. */
	if (!cfg->rules)
		return FILTER_NO_RULE;
	table = bpf_map_lookup_elem(&tables, &key);
	vecs = bpf_map_lookup_elem(&vectors, &key);
	if (!table || !vecs)
		return FILTER_NO_RULE;

	if (pkt->l3 == L3_ARP) {
		/* Only arp rules match ARP, whatever the others say. */
		protocol = cfg->arp;
		lookups |= FILTER_LOOKUP_PROTOCOL;
	} else if (pkt->l3 == L3_IPV4) {
		protocol = cfg->protocols[FILTER_V4_INDEX + pkt->ip_proto];
		if (lookups & FILTER_LOOKUP_SRC_V4_TRIE)
			src = trie_vector(&src_prefixes, gen, FILTER_IPV4, pkt->src, src);
		else if (lookups & FILTER_LOOKUP_SRC)
			src = ipv4_vector(table, FILTER_TABLE_SRC, pkt->src, src);
		if (lookups & FILTER_LOOKUP_DST_V4_TRIE)
			dst = trie_vector(&dst_prefixes, gen, FILTER_IPV4, pkt->dst, dst);
		else if (lookups & FILTER_LOOKUP_DST)
			dst = ipv4_vector(table, FILTER_TABLE_DST, pkt->dst, dst);
	} else {
		protocol = cfg->protocols[FILTER_V6_INDEX + pkt->ip_proto];
		if (lookups & FILTER_LOOKUP_SRC)
			src = trie_vector(&src_prefixes, gen, FILTER_IPV6, pkt->src, src);
		if (lookups & FILTER_LOOKUP_DST)
			dst = trie_vector(&dst_prefixes, gen, FILTER_IPV6, pkt->dst, dst);
	}
	if (pkt->has_ports) {
		if (lookups & FILTER_LOOKUP_SPORT)
			sport = table_entry(table, FILTER_TABLE_SPORT + pkt->sport, sport);
		if (lookups & FILTER_LOOKUP_DPORT)
			dport = table_entry(table, FILTER_TABLE_DPORT + pkt->dport, dport);
	}

	return first_common(vector(vecs, cfg, lookups, FILTER_LOOKUP_SRC, src),
			    vector(vecs, cfg, lookups, FILTER_LOOKUP_DST, dst),
			    vector(vecs, cfg, lookups, FILTER_LOOKUP_PROTOCOL, protocol),
			    vector(vecs, cfg, lookups, FILTER_LOOKUP_SPORT, sport),
			    vector(vecs, cfg, lookups, FILTER_LOOKUP_DPORT, dport));
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

/* Whether `ban` bans its source now, in the state in force: `before`
 * while its change is not committed. The clock is read only for an entry
 * with a TTL: most bans have none. */
static __always_inline bool ban_live(const struct filter_ban *ban,
				     const struct filter_ban_config *cfg)
{
	const struct filter_ban_state *s = ban->change > cfg->committed ? &ban->before : &ban->now;

	return s->banned && (!s->expires_ns || s->expires_ns > bpf_ktime_get_boot_ns());
}

/* The live ban entry of the packet's source: its host entry, else the
 * longest CIDR of the trie holding it (looked up only when the trie has
 * any); NULL when the source is not banned. */
static __always_inline struct filter_ban *ban_of(const struct packet_info *pkt)
{
	struct filter_ban_prefix_key key = {};
	struct filter_ban_config *cfg;
	struct filter_ban *ban;
	__u32 zero = 0;

	cfg = bpf_map_lookup_elem(&ban_config, &zero);
	if (!cfg)
		return NULL;
	if (pkt->l3 == L3_IPV4) {
		__u32 host;

		__builtin_memcpy(&host, pkt->src, 4);
		ban = bpf_map_lookup_elem(&ban_v4, &host);
		key.prefixlen = FILTER_BAN_PREFIX_HEADER_BITS + 32;
		key.family = FILTER_IPV4;
	} else {
		ban = bpf_map_lookup_elem(&ban_v6, pkt->src);
		key.prefixlen = FILTER_BAN_PREFIX_HEADER_BITS + 128;
		key.family = FILTER_IPV6;
	}
	if (ban && ban_live(ban, cfg))
		return ban;
	if (!cfg->prefixes)
		return NULL;
	__builtin_memcpy(key.addr, pkt->src, 16);
	ban = bpf_map_lookup_elem(&ban_prefixes, &key);
	return ban && ban_live(ban, cfg) ? ban : NULL;
}

/* Whether the packet's source is banned; counts the drop where it is. A
 * subprogram, like limit_admits, to keep the program small. */
static __noinline bool banned(const struct packet_info *pkt, __u64 len)
{
	struct filter_ban *ban = ban_of(pkt);
	struct filter_ban_stats *stats;
	__u32 zero = 0;

	if (!ban)
		return false;
	__sync_fetch_and_add(&ban->packets, 1);
	__sync_fetch_and_add(&ban->bytes, len);
	stats = bpf_map_lookup_elem(&ban_stats, &zero);
	if (stats)
		count(&stats->banned, len);
	return true;
}

/* Renews the expired entry `old` of a source, or adds `fresh` under `key`;
 * returns 0, or the error of the add. */
static __always_inline int ban_host(void *map, const void *key, const struct filter_ban *fresh)
{
	struct filter_ban *old = bpf_map_lookup_elem(map, key);

	if (!old)
		return bpf_map_update_elem(map, key, fresh, BPF_NOEXIST);
	/* A live entry dropped the packet before any limiter saw it, so
	 * this one bans nobody (expired, deleted, or new in a change not
	 * committed): it starts over, in force at once, keeping what it
	 * counted. */
	old->now = fresh->now;
	old->change = 0;
	return -EEXIST;
}

/* Puts the source a limiter refused into the ban set for `ttl_ns`. New
 * entries are counted, so readers know the set's size without walking it. */
static __noinline void ban_source(const struct packet_info *pkt, __u64 ttl_ns, __u8 origin,
				  __u32 reason)
{
	struct filter_ban fresh = {
		.now.origin = origin,
		.now.reason = reason,
		.now.banned = 1,
	};
	struct filter_ban_stats *stats;
	__u32 zero = 0;
	int err;

	fresh.now.added_ns = bpf_ktime_get_boot_ns();
	fresh.now.expires_ns = fresh.now.added_ns + ttl_ns;
	if (pkt->l3 == L3_IPV4) {
		__u32 host;

		__builtin_memcpy(&host, pkt->src, 4);
		err = ban_host(&ban_v4, &host, &fresh);
	} else {
		err = ban_host(&ban_v6, pkt->src, &fresh);
	}
	stats = bpf_map_lookup_elem(&ban_stats, &zero);
	if (!stats)
		return;
	if (!err)
		stats->promoted++;
	else if (err != -EEXIST)
		stats->promote_failed++;
}

/* The packet's fate and why (enum capture_verdict: CAPTURE_PASS passes it,
 * any other drops it); `*index` gets the matched rule's index in its rule
 * set, or stays CAPTURE_NO_RULE. */
static __always_inline __u8 filter(const struct packet_info *pkt, __u8 gen,
				   const struct filter_config *cfg, struct filter_stats *stats,
				   __u64 len, __u32 *index)
{
	bool ip = pkt->l3 == L3_IPV4 || pkt->l3 == L3_IPV6;
	const struct filter_rule_action *matched = NULL;
	__u8 action = cfg->default_action;
	__u32 rule = FILTER_NO_RULE;

	/* Banned sources are dropped before the rules see them. */
	if (ip && banned(pkt, len))
		return CAPTURE_BANNED;
	if (ip || pkt->l3 == L3_ARP)
		rule = classify(pkt, gen, cfg);
	if (rule < FILTER_MAX_RULES) {
		struct traffic_counter *hits;

		*index = rule;
		rule += gen * FILTER_MAX_RULES;
		matched = bpf_map_lookup_elem(&rule_actions, &rule);
		hits = bpf_map_lookup_elem(&rule_hits, &rule);
		if (hits)
			count(hits, len);
	}
	if (matched)
		action = matched->action;
	else
		count(&stats->defaulted, len);
	if (action == FILTER_DENY)
		return CAPTURE_DROP;
	if (!ip)
		return CAPTURE_PASS;

	if (cfg->syn_flood.interval_ns && pkt->l4 == L4_TCP &&
	    (pkt->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN &&
	    !limit_admits(FILTER_SYN_LIMITER, pkt, &cfg->syn_flood, &stats->syn_flood_sources)) {
		if (cfg->syn_flood.ban_ns)
			ban_source(pkt, cfg->syn_flood.ban_ns, FILTER_BAN_SYN_FLOOD, 0);
		count(&stats->syn_dropped, len);
		return CAPTURE_SYN_DROPPED;
	}
	if (matched && matched->rate_limited) {
		struct filter_limit *limit = bpf_map_lookup_elem(&rule_limits, &rule);

		if (limit && !limit_admits(FILTER_RULE_LIMITER + rule, pkt, limit,
					   &stats->rate_limited_sources)) {
			if (limit->ban_ns)
				ban_source(pkt, limit->ban_ns, FILTER_BAN_RATE_LIMIT,
					   rule - gen * FILTER_MAX_RULES);
			count(&stats->rate_limited, len);
			return CAPTURE_RATE_LIMITED;
		}
	}
	if (cfg->rate_limit.interval_ns &&
	    !limit_admits(FILTER_INTERFACE_LIMITER, pkt, &cfg->rate_limit,
			  &stats->rate_limited_sources)) {
		if (cfg->rate_limit.ban_ns)
			ban_source(pkt, cfg->rate_limit.ban_ns, FILTER_BAN_INTERFACE_LIMIT, 0);
		count(&stats->rate_limited, len);
		return CAPTURE_RATE_LIMITED;
	}
	return CAPTURE_PASS;
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
	__u32 zero = 0, *gen, rule = CAPTURE_NO_RULE;
	__u8 why;

	xdp_parse(ctx, &pkt);

	count_frame(&pkt, len);
	stats = bpf_map_lookup_elem(&filter_stats, &zero);
	gen = bpf_map_lookup_elem(&active, &zero);
	if (!stats || !gen)
		return XDP_PASS;
	cfg = bpf_map_lookup_elem(&filter_config, gen);
	if (!cfg)
		return XDP_PASS;

	why = filter(&pkt, *gen & 1, cfg, stats, len, &rule);
	verdict = why == CAPTURE_PASS ? FILTER_PASS : FILTER_DROP;
	count(&stats->verdicts[verdict], len);
	capture(ctx, &pkt, rule, *gen & 1, why);
	return verdict == FILTER_PASS ? XDP_PASS : XDP_DROP;
}

static __always_inline void publish(__u32 generation)
{
	__u32 zero = 0, *gen = bpf_map_lookup_elem(&active, &zero);

	if (gen)
		*gen = generation;
}

/* The timer's callback: the window ran out unconfirmed. */
static int roll_back(void *map, __u32 *key, struct filter_confirm *c)
{
	if (__sync_val_compare_and_swap(&c->state, FILTER_CONFIRM_PENDING,
					FILTER_CONFIRM_ROLLED_BACK) == FILTER_CONFIRM_PENDING) {
		publish(c->rollback_generation);
		c->settled_ns = bpf_ktime_get_boot_ns();
	}
	return 0;
}

static __always_inline int arm(struct filter_confirm *c, const struct filter_control_request *req)
{
	__u32 zero = 0, *gen = bpf_map_lookup_elem(&active, &zero);
	__u64 now = bpf_ktime_get_boot_ns();
	__u64 state = c->state;
	int err;

	if (!gen || req->generation >= FILTER_GENERATIONS || !req->window_ns)
		return FILTER_CONTROL_BAD_REQUEST;
	if (state == FILTER_CONFIRM_PENDING ||
	    __sync_val_compare_and_swap(&c->state, state, FILTER_CONFIRM_PENDING) != state)
		return FILTER_CONTROL_REFUSED;
	c->rollback_generation = *gen;
	c->applied_generation = req->generation;
	c->armed_ns = now;
	c->deadline_ns = now + req->window_ns;
	c->settled_ns = 0;
	/* -EBUSY: initialised by an earlier apply, which is as good. */
	err = bpf_timer_init(&c->timer, &confirm, CLOCK_BOOTTIME);
	if (err && err != -EBUSY)
		goto failed;
	err = bpf_timer_set_callback(&c->timer, roll_back);
	if (!err)
		err = bpf_timer_start(&c->timer, req->window_ns, 0);
	if (err)
		goto failed;
	publish(req->generation);
	return FILTER_CONTROL_DONE;
failed:
	c->state = state;
	return FILTER_CONTROL_TIMER_FAILED;
}

/* Settles a pending confirmation: confirmed, or rolled back now. */
static __always_inline int settle(struct filter_confirm *c, __u64 to)
{
	if (__sync_val_compare_and_swap(&c->state, FILTER_CONFIRM_PENDING, to) !=
	    FILTER_CONFIRM_PENDING)
		return FILTER_CONTROL_REFUSED;
	bpf_timer_cancel(&c->timer);
	if (to == FILTER_CONFIRM_ROLLED_BACK)
		publish(c->rollback_generation);
	c->settled_ns = bpf_ktime_get_boot_ns();
	return FILTER_CONTROL_DONE;
}

/* Never attached: user space runs it with BPF_PROG_TEST_RUN on a
 * filter_control_request, because only a program can arm a bpf_timer. */
SEC("xdp")
int filter_control(struct xdp_md *ctx)
{
	const struct filter_control_request *req = (void *)(long)ctx->data;
	struct filter_confirm *c;
	__u32 zero = 0;

	if ((void *)(req + 1) > (void *)(long)ctx->data_end)
		return FILTER_CONTROL_BAD_REQUEST;
	c = bpf_map_lookup_elem(&confirm, &zero);
	if (!c)
		return FILTER_CONTROL_BAD_REQUEST;
	switch (req->command) {
	case FILTER_CONTROL_ARM:
		return arm(c, req);
	case FILTER_CONTROL_CONFIRM:
		return settle(c, FILTER_CONFIRM_CONFIRMED);
	case FILTER_CONTROL_ROLLBACK:
		return settle(c, FILTER_CONFIRM_ROLLED_BACK);
	}
	return FILTER_CONTROL_BAD_REQUEST;
}

char LICENSE[] SEC("license") = "GPL";
