// SPDX-License-Identifier: GPL-2.0
/* tc_classifier: a flow table per 5-tuple and direction (packets, bytes,
 * first/last seen, TCP flags) with a guess of the L7 protocol from the first
 * payload bytes, on TC ingress and egress; and QoS classes, which set
 * skb->priority and skb->mark by rules (include/qos_classes.h).
 *
 * Verdict: both programs return TC_ACT_UNSPEC (-1), which is TCX_NEXT under
 * tcx: later tcx programs, then the classic clsact filters, then the stack
 * see the packet as if we were not there. Under netlink clsact in
 * direct-action mode, -1 makes cls_bpf go on to the next filter and, after
 * the last one, the packet passes. TC_ACT_OK (0) would be TCX_PASS, which
 * ends the tcx chain and skips the programs after ours.
 *
 * Packet access: parse_packet() reads the headers directly from the linear
 * area. Drivers and the stack nearly always put the headers there, so the
 * common case costs no helper call. When the parse stops short of a header
 * the packet announces (skb->protocol says IP, or the IP header names
 * TCP/UDP/ICMP) and the skb holds more than its linear part, the first
 * FLOW_PULL_LEN bytes are pulled into the linear area once
 * (bpf_skb_pull_data, counted in flow_table_stats.pulled) and the packet is
 * parsed again. Payload, often in page fragments (TCP sends, GRO), is never
 * pulled: the L7 guess, and the walk to the L4 header it and ICMP need,
 * copy what they read with bpf_skb_load_bytes, on few packets.
 *
 * No CO-RE: every structure read here is a packet header or __sk_buff, whose
 * layouts are ABI. Without relocations libbpf need not parse the kernel's
 * BTF (about 8 ms) to load the programs.
 */
#define BPF_NO_PRESERVE_ACCESS_INDEX
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "packet_parse.h"
#include "flow_table.h"
#include "qos_classes.h"

/* uapi/linux/pkt_cls.h; not in vmlinux.h, which only has TCX_NEXT. */
#define TC_ACT_UNSPEC (-1)
_Static_assert(TC_ACT_UNSPEC == TCX_NEXT, "one verdict for tcx and clsact");

/* Enough for Ethernet, two VLAN tags, IPv6 with a few extension headers and
 * a TCP header with options. */
#define FLOW_PULL_LEN 256

#define DNS_PORT       53
#define DNS_HEADER_LEN 12
/* A DNS message over TCP starts with its 2-byte length. */
#define DNS_TCP_PREFIX 2
/* TLS records carry at most 2^14 bytes of plaintext plus 2048 of expansion. */
#define TLS_MAX_RECORD	      (16384 + 2048)
#define TLS_CONTENT_HANDSHAKE 0x16
#define TLS_CLIENT_HELLO      1
#define TLS_SERVER_HELLO      2

_Static_assert((FLOW_L7_WINDOW & (FLOW_L7_WINDOW - 1)) == 0, "the L7 window is masked into range");

/* Every flow, both directions. max_entries is set at load time from
 * --max-flows. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FLOW_DEFAULT_MAX);
	__type(key, struct flow_key);
	__type(value, struct flow_value);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FLOW_DIRECTION_MAX);
	__type(key, __u32);
	__type(value, struct flow_table_stats);
} flow_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct class_config);
} qos_config SEC(".maps");

/* Indexed by slot * CLASS_MAX + class id. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CLASS_SLOTS * CLASS_MAX);
	__type(key, __u32);
	__type(value, struct class_def);
} qos_classes SEC(".maps");

/* Indexed by slot * CLASS_RULES_MAX + rule index. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CLASS_SLOTS * CLASS_RULES_MAX);
	__type(key, __u32);
	__type(value, struct class_rule);
} qos_rules SEC(".maps");

/* Indexed like qos_classes; id 0 counts the packets no rule classified. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CLASS_SLOTS * CLASS_MAX);
	__type(key, __u32);
	__type(value, struct class_counters);
} qos_counters SEC(".maps");

/* Referenced so the enums reach BTF and the skeleton's Rust types. */
const volatile enum flow_limits flow_limits_anchor = FLOW_DEFAULT_MAX;
const volatile enum class_limits class_limits_anchor = CLASS_MAX;
const volatile enum class_sets class_sets_anchor = CLASS_SET_PRIORITY;
const volatile enum flow_direction flow_direction_anchor = FLOW_INGRESS;
const volatile enum l7_proto l7_proto_anchor = L7_UNKNOWN;

/* Where parse_packet() found the L4 header, and where the IP datagram ends
 * (by its length fields, so that Ethernet padding is not payload); offsets
 * from the Ethernet header. */
struct l4_span {
	__u32 l4;
	/* 0 when the length field is zero (segmentation offload may leave it
	 * so): the datagram then ends with the packet. */
	__u32 end;
};

/*
 * packet_parse.h does not hand out the L4 header's offset, so this walks the
 * headers again the way it does, for the two uses that need it: ICMP type and
 * code, and the L7 guess. Only called on packets parse_packet() classified
 * with a whole L4 header, so it expects to succeed; it returns false where
 * the walk would disagree (and for later fragments, which have no L4 header).
 *
 * It reads with bpf_skb_load_bytes into plain offsets rather than through
 * packet pointers: the verifier then sees one state per step instead of one
 * per header combination, and the walk does not depend on what is linear.
 */
static __always_inline bool locate_l4(struct __sk_buff *skb, const struct packet_info *pkt,
				      struct l4_span *span)
{
	__u32 off = sizeof(struct ethhdr);
	__u16 proto, datagram_len;
	__u8 hdr[4];
	int i;

	if (bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, sizeof(proto)))
		return false;
	for (i = 0; i < VLAN_MAX_DEPTH; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if (bpf_skb_load_bytes(skb,
				       off + offsetof(struct vlan_hdr, h_vlan_encapsulated_proto),
				       &proto, sizeof(proto)))
			return false;
		off += sizeof(struct vlan_hdr);
	}

	if (pkt->l3 == L3_IPV4) {
		struct iphdr iph;

		if (bpf_skb_load_bytes(skb, off, &iph, sizeof(iph)))
			return false;
		if (iph.frag_off & bpf_htons(IP_OFFSET_MASK))
			return false;
		datagram_len = bpf_ntohs(iph.tot_len);
		span->end = datagram_len ? off + datagram_len : 0;
		span->l4 = off + (*(__u8 *)&iph & 0x0F) * 4;
		return true;
	}

	if (pkt->l3 == L3_IPV6) {
		__u8 nexthdr;

		/* payload_len and nexthdr */
		if (bpf_skb_load_bytes(skb, off + offsetof(struct ipv6hdr, payload_len), hdr, 3))
			return false;
		datagram_len = (hdr[0] << 8) | hdr[1];
		nexthdr = hdr[2];
		off += sizeof(struct ipv6hdr);
		span->end = datagram_len ? off + datagram_len : 0;
		/* As in parse_ipv6(): one pass per extension header, plus one
		 * for what follows the last one allowed. */
		for (i = 0; i <= IPV6_EXT_MAX; i++) {
			switch (nexthdr) {
			case IPPROTO_HOPOPTS_NR:
			case IPPROTO_ROUTING_NR:
			case IPPROTO_DSTOPTS_NR:
			case IPPROTO_AH_NR:
				/* nexthdr and hdrlen */
				if (bpf_skb_load_bytes(skb, off, hdr, 2))
					return false;
				off += nexthdr == IPPROTO_AH_NR ? (hdr[1] + 2) * 4 :
								  (hdr[1] + 1) * 8;
				nexthdr = hdr[0];
				break;
			case IPPROTO_FRAGMENT_NR:
				/* nexthdr, reserved and frag_off */
				if (bpf_skb_load_bytes(skb, off, hdr, 4))
					return false;
				if (((hdr[2] << 8) | hdr[3]) & IP6_OFFSET_MASK)
					return false;
				nexthdr = hdr[0];
				off += sizeof(struct frag_hdr);
				break;
			default:
				goto done;
			}
		}
		/* A chain longer than parse_packet() walks: no L4 header. */
		return false;
done:
		if (nexthdr != pkt->ip_proto)
			return false;
		span->l4 = off;
		return true;
	}
	return false;
}

/* True when `buf` (of `len` valid bytes) starts with `sig`, a literal of
 * at most FLOW_L7_WINDOW bytes. Written out rather than looped, so that once
 * inlined every comparison is against an immediate and none reads .rodata. */
static __always_inline bool starts_with(const __u8 *buf, __u32 len, const char *sig, __u32 sig_len)
{
	if (len < sig_len)
		return false;
		/* One comparison per byte, four to a line. */
		/* clang-format off */
#define SIG_BYTE(i) \
	if (sig_len > (i) && buf[i] != (__u8)sig[i]) \
		return false
	SIG_BYTE(0); SIG_BYTE(1); SIG_BYTE(2); SIG_BYTE(3);
	SIG_BYTE(4); SIG_BYTE(5); SIG_BYTE(6); SIG_BYTE(7);
	SIG_BYTE(8); SIG_BYTE(9); SIG_BYTE(10); SIG_BYTE(11);
	SIG_BYTE(12); SIG_BYTE(13); SIG_BYTE(14); SIG_BYTE(15);
#undef SIG_BYTE
	/* clang-format on */
	return true;
}

#define STARTS_WITH(buf, len, lit)                                                       \
	({                                                                               \
		_Static_assert(sizeof(lit) - 1 <= FLOW_L7_WINDOW, "signature too long"); \
		starts_with(buf, len, lit, sizeof(lit) - 1);                             \
	})

/*
 * A DNS header: QDCOUNT exactly 1 (RFC 9619; every resolver asks one
 * question, and responses echo it) and a defined opcode (QUERY, IQUERY,
 * STATUS, NOTIFY, UPDATE). Ports alone would call anything on port 53 DNS.
 */
static __always_inline bool dns_header(const __u8 *h)
{
	__u8 opcode = (h[2] >> 3) & 0x0F;

	if (opcode == 3 || opcode > 5)
		return false;
	return h[4] == 0 && h[5] == 1;
}

static __always_inline enum l7_proto guess_dns(const __u8 *buf, __u32 len, bool tcp)
{
	if (!tcp)
		return len >= DNS_HEADER_LEN && dns_header(buf) ? L7_DNS : L7_UNKNOWN;
	/* Over TCP: the length prefix covers at least a header, and the
	 * header follows it in the same segment. */
	if (len < DNS_TCP_PREFIX + DNS_HEADER_LEN)
		return L7_UNKNOWN;
	if (((buf[0] << 8) | buf[1]) < DNS_HEADER_LEN)
		return L7_UNKNOWN;
	return dns_header(buf + DNS_TCP_PREFIX) ? L7_DNS : L7_UNKNOWN;
}

static __always_inline enum l7_proto guess_tcp_stream(const __u8 *buf, __u32 len)
{
	__u16 record_len;

	/* HTTP/2's preface first: it also looks like an HTTP/1 request line. */
	if (STARTS_WITH(buf, len, "PRI * HTTP/2.0"))
		return L7_HTTP2;
	if (STARTS_WITH(buf, len, "GET ") || STARTS_WITH(buf, len, "POST") ||
	    STARTS_WITH(buf, len, "PUT ") || STARTS_WITH(buf, len, "HEAD") ||
	    STARTS_WITH(buf, len, "DELE") || STARTS_WITH(buf, len, "OPTI") ||
	    STARTS_WITH(buf, len, "PATC") || STARTS_WITH(buf, len, "CONN") ||
	    STARTS_WITH(buf, len, "HTTP/1."))
		return L7_HTTP1;
	if (STARTS_WITH(buf, len, "SSH-2.0") || STARTS_WITH(buf, len, "SSH-1."))
		return L7_SSH;
	/* A TLS record header (handshake, version 3.0 to 1.3 as the record
	 * layer spells them, a possible length) and the first handshake
	 * message's type: a hello. */
	if (len >= 6 && buf[0] == TLS_CONTENT_HANDSHAKE && buf[1] == 3 && buf[2] <= 4) {
		record_len = (buf[3] << 8) | buf[4];
		if (record_len && record_len <= TLS_MAX_RECORD &&
		    (buf[5] == TLS_CLIENT_HELLO || buf[5] == TLS_SERVER_HELLO))
			return L7_TLS;
	}
	return L7_UNKNOWN;
}

/*
 * The functions below are global (not static) on purpose: the verifier checks
 * a global function once, on its own, instead of once per path that reaches
 * a call, and what it returns is a plain number whatever path produced it.
 * Inlined, the parser and the header walk would multiply the paths of all the
 * code after them. A call costs a few ns.
 */

/* Fills `span` for a packet parse_packet() classified with a whole L4
 * header; returns 0 when there is none to locate. */
__noinline int tc_locate_l4(struct __sk_buff *skb, const struct packet_info *pkt,
			    struct l4_span *span)
{
	if (!pkt || !span)
		return 0;
	return locate_l4(skb, pkt, span);
}

/* tc_guess_l7's answer for a packet without payload, which the guess does
 * not count against its window. */
#define L7_NO_PAYLOAD (-1)

/* The L7 guess of a TCP or UDP packet from its first payload bytes, which
 * may lie outside the linear area: read with bpf_skb_load_bytes. L7_UNKNOWN
 * when nothing matches, L7_NO_PAYLOAD when there is no payload. */
__noinline int tc_guess_l7(struct __sk_buff *skb, const struct packet_info *pkt)
{
	__u8 buf[FLOW_L7_WINDOW] = {};
	struct l4_span span = {};
	__u32 payload, end, len;
	__u8 doff;
	bool tcp;

	if (!pkt)
		return L7_UNKNOWN;
	if (!tc_locate_l4(skb, pkt, &span))
		return L7_UNKNOWN;
	tcp = pkt->ip_proto == IPPROTO_TCP_NR;
	if (tcp) {
		if (bpf_skb_load_bytes(skb, span.l4 + 12, &doff, 1))
			return L7_UNKNOWN;
		doff >>= 4;
		if (doff < 5)
			return L7_UNKNOWN;
		payload = span.l4 + doff * 4;
	} else if (pkt->ip_proto == IPPROTO_UDP_NR) {
		payload = span.l4 + sizeof(struct udphdr);
	} else {
		return L7_UNKNOWN;
	}
	end = skb->len;
	if (span.end && span.end < end)
		end = span.end;
	if (payload >= end)
		return L7_NO_PAYLOAD;
	len = end - payload;
	if (len > FLOW_L7_WINDOW)
		len = FLOW_L7_WINDOW;
	/* Already 1 to FLOW_L7_WINDOW; the mask, which the compiler must not
	 * drop, proves it to the verifier. */
	barrier_var(len);
	len = ((len - 1) & (FLOW_L7_WINDOW - 1)) + 1;
	if (bpf_skb_load_bytes(skb, payload, buf, len))
		return L7_UNKNOWN;

	if (pkt->sport == DNS_PORT || pkt->dport == DNS_PORT) {
		if (guess_dns(buf, len, tcp) == L7_DNS)
			return L7_DNS;
	}
	if (!tcp)
		return L7_UNKNOWN;
	return guess_tcp_stream(buf, len);
}

/* The L7 guess of the other direction of a flow: a reply inherits what its
 * request showed (an HTTP/2 server's first frames have no preface). */
static __always_inline int reverse_l7(const struct flow_key *key)
{
	struct flow_key reverse = {
		.sport = key->dport,
		.dport = key->sport,
		.family = key->family,
		.protocol = key->protocol,
		.direction = key->direction == FLOW_INGRESS ? FLOW_EGRESS : FLOW_INGRESS,
	};
	struct flow_value *other;

	__builtin_memcpy(reverse.src, key->dst, sizeof(reverse.src));
	__builtin_memcpy(reverse.dst, key->src, sizeof(reverse.dst));
	other = bpf_map_lookup_elem(&flows, &reverse);
	return other ? other->l7 : L7_UNKNOWN;
}

/* ICMP and ICMPv6 messages are flows by type (sport) and code (dport). */
static __always_inline void icmp_ports(struct __sk_buff *skb, const struct packet_info *pkt,
				       struct flow_key *key)
{
	struct l4_span span = {};
	__u8 type_code[2];

	if (!tc_locate_l4(skb, pkt, &span))
		return;
	if (bpf_skb_load_bytes(skb, span.l4, type_code, sizeof(type_code)))
		return;
	key->sport = type_code[0];
	key->dport = type_code[1];
}

/* Does `addr` (16 bytes, as in flow_key) lie in the rule's prefix? The key's
 * bytes are copied word by word: flow_key is only 2-byte aligned. */
static __always_inline bool in_prefix(const __u8 *addr, const __u32 *want, const __u32 *mask)
{
	__u32 word;
	int i;

#pragma unroll
	for (i = 0; i < 4; i++) {
		__builtin_memcpy(&word, addr + 4 * i, sizeof(word));
		if ((word & mask[i]) != want[i])
			return false;
	}
	return true;
}

static __always_inline bool rule_matches(const struct class_rule *rule, const struct flow_key *key,
					 __u32 l7)
{
	if (!(rule->directions & (1 << key->direction)))
		return false;
	if (rule->family && rule->family != key->family)
		return false;
	if (rule->has_protocol && rule->protocol != key->protocol)
		return false;
	if (rule->needs_ports && key->protocol != IPPROTO_TCP_NR && key->protocol != IPPROTO_UDP_NR)
		return false;
	if (key->sport < rule->sport_lo || key->sport > rule->sport_hi ||
	    key->dport < rule->dport_lo || key->dport > rule->dport_hi)
		return false;
	if (rule->l7 != CLASS_L7_ANY && rule->l7 != l7)
		return false;
	return in_prefix(key->src, rule->src, rule->src_mask) &&
	       in_prefix(key->dst, rule->dst, rule->dst_mask);
}

/* What the rule loop's callback reads and answers. */
struct class_match {
	const struct flow_key *key;
	__u32 l7;
	__u32 slot;
	__u32 class_id;
};

/* One rule of the slot: stops the loop (1) at the end of the rules or at
 * the first match, whose class it records. */
static long match_rule(__u32 i, void *data)
{
	struct class_match *match = data;
	const struct class_rule *rule;
	__u32 index;

	/* Already below CLASS_SLOTS; the mask proves it inside the callback. */
	index = (match->slot & (CLASS_SLOTS - 1)) * CLASS_RULES_MAX + i;
	rule = bpf_map_lookup_elem(&qos_rules, &index);
	if (!rule || !rule->class_id)
		return 1;
	if (!rule_matches(rule, match->key, match->l7))
		return 0;
	match->class_id = rule->class_id;
	return 1;
}

/* The class id of the first rule of `slot` that matches the flow, 0 when
 * none does. The rules are walked by bpf_loop, whose callback the verifier
 * checks as one body rather than 256 unrolled copies; global, so that it
 * is checked once rather than at every call site. It runs once per flow
 * and L7 guess, not per packet. */
__noinline int tc_match_class(const struct flow_key *key, __u32 l7, __u32 slot)
{
	struct class_match match = { .l7 = l7, .slot = slot };

	if (!key || slot >= CLASS_SLOTS)
		return 0;
	match.key = key;
	bpf_loop(CLASS_RULES_MAX, match_rule, &match, 0);
	return match.class_id;
}

/* Sets the packet's priority and mark from its flow's class and counts it
 * under the class; classifies the flow again when the rules or its L7 guess
 * changed since it was last classified. Does nothing until classes are
 * applied. */
static __always_inline void apply_class(struct __sk_buff *skb, const struct flow_key *key,
					struct flow_value *value, enum flow_direction dir,
					__u32 len)
{
	struct class_counters *counters;
	const struct class_config *config;
	const struct class_def *class;
	__u32 zero = 0, generation, slot, index, id;

	config = bpf_map_lookup_elem(&qos_config, &zero);
	if (!config)
		return;
	generation = *(volatile const __u32 *)&config->generation;
	if (!generation)
		return;
	slot = generation & 1;
	/* Two CPUs may classify one flow at once; both find the same class. */
	if (value->class_generation != generation) {
		value->class_id = tc_match_class(key, value->l7, slot);
		value->class_generation = generation;
	}
	id = value->class_id;
	if (id >= CLASS_MAX)
		return;
	index = slot * CLASS_MAX + id;
	counters = bpf_map_lookup_elem(&qos_counters, &index);
	if (counters) {
		counters->packets[dir]++;
		counters->bytes[dir] += len;
	}
	if (!id)
		return;
	class = bpf_map_lookup_elem(&qos_classes, &index);
	if (!class)
		return;
	if (class->sets & CLASS_SET_PRIORITY)
		skb->priority = class->priority;
	if (class->sets & CLASS_SET_MARK)
		skb->mark = class->mark;
}

/* tc_parse(skb, pkt) parses the packet at skb->data; it runs a second time
 * on a packet whose headers had to be pulled into the linear area first. */
GLOBAL_PARSE(tc_parse, struct __sk_buff)

/* Did parsing stop where the linear area ends rather than where the packet
 * does? Only for packets that announce headers we read. */
static __always_inline bool headers_cut(struct __sk_buff *skb, const struct packet_info *pkt)
{
	__u32 proto = skb->protocol;

	switch (pkt->l3) {
	case L3_IPV4:
		return pkt->l4 == L4_OTHER &&
		       (pkt->ip_proto == IPPROTO_TCP_NR || pkt->ip_proto == IPPROTO_UDP_NR ||
			pkt->ip_proto == IPPROTO_ICMP_NR);
	case L3_IPV6:
		/* ip_proto 0: the extension chain was cut before its end. */
		return pkt->l4 == L4_OTHER &&
		       (pkt->ip_proto == IPPROTO_TCP_NR || pkt->ip_proto == IPPROTO_UDP_NR ||
			pkt->ip_proto == IPPROTO_ICMPV6_NR || pkt->ip_proto == 0);
	case L3_OTHER:
		return proto == bpf_htons(ETH_P_IP) || proto == bpf_htons(ETH_P_IPV6) ||
		       proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD);
	default:
		return false;
	}
}

static __always_inline int classify(struct __sk_buff *skb, enum flow_direction dir)
{
	__u32 slot = dir, len = skb->len, linear;
	struct flow_value fresh = {}, *value;
	struct flow_key key = {};
	struct packet_info pkt;
	struct flow_table_stats *stats;
	__u64 now, flags;

	stats = bpf_map_lookup_elem(&flow_stats, &slot);
	if (!stats)
		return TC_ACT_UNSPEC;
	stats->packets++;
	stats->bytes += len;

	tc_parse(skb, &pkt);
	linear = skb->data_end - skb->data;
	if (len > linear && headers_cut(skb, &pkt)) {
		if (!bpf_skb_pull_data(skb, len < FLOW_PULL_LEN ? len : FLOW_PULL_LEN)) {
			stats->pulled++;
			tc_parse(skb, &pkt);
		}
	}

	if ((pkt.l3 != L3_IPV4 && pkt.l3 != L3_IPV6) ||
	    (pkt.l3 == L3_IPV6 && pkt.l4 == L4_OTHER && pkt.ip_proto == 0)) {
		stats->not_ip++;
		return TC_ACT_UNSPEC;
	}

	__builtin_memcpy(key.src, pkt.src, sizeof(key.src));
	__builtin_memcpy(key.dst, pkt.dst, sizeof(key.dst));
	key.family = pkt.l3 == L3_IPV4 ? 4 : 6;
	key.protocol = pkt.ip_proto;
	key.direction = dir;
	if (pkt.has_ports) {
		key.sport = pkt.sport;
		key.dport = pkt.dport;
	} else if (pkt.l4 == L4_ICMP || pkt.l4 == L4_ICMPV6) {
		icmp_ports(skb, &pkt, &key);
	}

	now = bpf_ktime_get_ns();
	value = bpf_map_lookup_elem(&flows, &key);
	if (!value) {
		fresh.first_seen_ns = now;
		fresh.last_seen_ns = now;
		/* Another CPU may create the flow first: only one insert
		 * succeeds, and only that one counts. */
		if (!bpf_map_update_elem(&flows, &key, &fresh, BPF_NOEXIST))
			stats->flows_created++;
		value = bpf_map_lookup_elem(&flows, &key);
		if (!value) {
			stats->insert_failed++;
			return TC_ACT_UNSPEC;
		}
	}

	/* Read before counting this packet: the first packets get the guess. */
	if (value->l7 == L7_UNKNOWN && value->l7_tries < FLOW_L7_GUESS_PACKETS &&
	    value->packets < FLOW_L7_GUESS_WINDOW && pkt.has_ports &&
	    (pkt.ip_proto == IPPROTO_TCP_NR || pkt.ip_proto == IPPROTO_UDP_NR)) {
		int l7 = reverse_l7(&key);

		if (l7 == L7_UNKNOWN) {
			l7 = tc_guess_l7(skb, &pkt);
			if (l7 == L7_NO_PAYLOAD)
				l7 = L7_UNKNOWN;
			else
				value->l7_tries++;
		}
		if (l7 != L7_UNKNOWN) {
			value->l7 = l7;
			/* Rules may name the L7 guess: classify again. */
			value->class_generation = 0;
		}
	}

	__sync_fetch_and_add(&value->packets, 1);
	__sync_fetch_and_add(&value->bytes, len);
	value->last_seen_ns = now;
	flags = pkt.tcp_flags;
	/* A locked OR only when it adds a flag: most packets add none. */
	if (pkt.l4 == L4_TCP && (value->tcp_flags & flags) != flags)
		__sync_fetch_and_or(&value->tcp_flags, flags);
	apply_class(skb, &key, value, dir, len);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int tc_ingress(struct __sk_buff *skb)
{
	return classify(skb, FLOW_INGRESS);
}

SEC("tc")
int tc_egress(struct __sk_buff *skb)
{
	return classify(skb, FLOW_EGRESS);
}

char LICENSE[] SEC("license") = "GPL";
