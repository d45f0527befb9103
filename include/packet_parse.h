/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Kernel-only packet parsing shared by meshbpf's packet programs.
 *
 * Every read is bounds-checked against data_end before it happens, so
 * truncated or garbage frames classify as "other" instead of faulting.
 */
#ifndef MESHBPF_PACKET_PARSE_H
#define MESHBPF_PACKET_PARSE_H

#include "traffic_counters.h"

#define ETH_P_IP     0x0800
#define ETH_P_ARP    0x0806
#define ETH_P_IPV6   0x86DD
#define ETH_P_8021Q  0x8100
#define ETH_P_8021AD 0x88A8

#define IPPROTO_HOPOPTS_NR  0
#define IPPROTO_ICMP_NR	    1
#define IPPROTO_TCP_NR	    6
#define IPPROTO_UDP_NR	    17
#define IPPROTO_ROUTING_NR  43
#define IPPROTO_FRAGMENT_NR 44
#define IPPROTO_AH_NR	    51
#define IPPROTO_ICMPV6_NR   58
#define IPPROTO_DSTOPTS_NR  60

#define IP_OFFSET_MASK	0x1FFF
#define IP6_OFFSET_MASK 0xFFF8

/* 802.1ad outer tag plus 802.1Q inner tag (QinQ); deeper stacks are "other". */
#define VLAN_MAX_DEPTH 2
/* Enough for every extension header chain seen in practice; a longer chain
 * is counted as L4 other rather than walked without bound. */
#define IPV6_EXT_MAX 8

struct packet_info {
	enum l3_proto l3;
	enum l4_proto l4;
	/* IPv4 protocol or the IPv6 header after the extension headers. */
	__u8 ip_proto;
	/* Only with a whole TCP header. */
	__u8 tcp_flags;
	/* Ports (host order) are known only for a TCP or UDP header that is
	 * present: not for later fragments or truncated headers. */
	bool has_ports;
	__u16 sport;
	__u16 dport;
	/* IPv4 addresses fill the first 4 bytes. */
	__u8 src[16];
	__u8 dst[16];
};

#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_ACK 0x10
/* Offset of the flags byte in the TCP header. */
#define TCP_FLAGS_OFFSET 13

/* Classifies the L4 header at `l4`, whose minimum size each protocol must
 * have in a first (or unfragmented) packet, and takes its ports and flags.
 * The header must end within the IP datagram (`l3_end`, which a frame's
 * padding lies past) as well as within the frame. */
static __always_inline void classify_l4(struct packet_info *pkt, __u8 proto, bool ipv6,
					bool later_fragment, void *l4, void *l3_end, void *data_end)
{
	enum l4_proto kind;
	__u32 min_len;

	pkt->ip_proto = proto;
	switch (proto) {
	case IPPROTO_TCP_NR:
		kind = L4_TCP;
		min_len = sizeof(struct tcphdr);
		break;
	case IPPROTO_UDP_NR:
		kind = L4_UDP;
		min_len = sizeof(struct udphdr);
		break;
	case IPPROTO_ICMP_NR:
		if (ipv6)
			return;
		kind = L4_ICMP;
		min_len = sizeof(struct icmphdr);
		break;
	case IPPROTO_ICMPV6_NR:
		if (!ipv6)
			return;
		kind = L4_ICMPV6;
		min_len = sizeof(struct icmp6hdr);
		break;
	default:
		return;
	}
	/* Non-first fragments carry no L4 header; they still belong to the
	 * protocol's packets and bytes. */
	if (later_fragment) {
		pkt->l4 = kind;
		return;
	}
	if (l4 + min_len > data_end || l4 + min_len > l3_end)
		return;
	pkt->l4 = kind;
	if (kind == L4_TCP || kind == L4_UDP) {
		/* TCP and UDP both start with the source and destination port. */
		struct udphdr *ports = l4;

		pkt->has_ports = true;
		pkt->sport = bpf_ntohs(ports->source);
		pkt->dport = bpf_ntohs(ports->dest);
	}
	if (kind == L4_TCP)
		pkt->tcp_flags = *((__u8 *)l4 + TCP_FLAGS_OFFSET);
}

static __always_inline void parse_ipv4(void *pos, void *data_end, struct packet_info *pkt)
{
	struct iphdr *iph = pos;
	__u32 hdr_len, total_len;
	__u8 version_ihl;

	if ((void *)(iph + 1) > data_end)
		return;
	/* Read version/IHL as a byte: CO-RE relocations on bitfields buy
	 * nothing for packet data. */
	version_ihl = *(__u8 *)iph;
	hdr_len = (version_ihl & 0x0F) * 4;
	if ((version_ihl >> 4) != 4 || hdr_len < sizeof(*iph))
		return;
	total_len = bpf_ntohs(iph->tot_len);
	/* Older verifiers lose the 16-bit bound of the swapped value; the
	 * mask, kept by barrier_var, restores it for the pointer math. */
	barrier_var(total_len);
	total_len &= 0xFFFF;
	if (pos + hdr_len > data_end || total_len < hdr_len)
		return;
	pkt->l3 = L3_IPV4;
	__builtin_memcpy(pkt->src, &iph->saddr, 4);
	__builtin_memcpy(pkt->dst, &iph->daddr, 4);
	classify_l4(pkt, iph->protocol, false, iph->frag_off & bpf_htons(IP_OFFSET_MASK),
		    pos + hdr_len, pos + total_len, data_end);
}

static __always_inline void parse_ipv6(void *pos, void *data_end, struct packet_info *pkt)
{
	struct ipv6hdr *ip6h = pos;
	bool later_fragment = false;
	__u32 payload_len;
	void *l3_end;
	__u8 nexthdr;
	int i;

	if ((void *)(ip6h + 1) > data_end)
		return;
	if ((*(__u8 *)ip6h >> 4) != 6)
		return;
	pkt->l3 = L3_IPV6;
	/* A payload length of 0 is a jumbogram's when a hop-by-hop header
	 * follows (its length is in an option, so the frame bounds it), and
	 * otherwise an empty payload (RFC 2675). */
	payload_len = bpf_ntohs(ip6h->payload_len);
	barrier_var(payload_len);
	payload_len &= 0xFFFF;
	l3_end = (void *)(ip6h + 1) + payload_len;
	if (!payload_len && ip6h->nexthdr == IPPROTO_HOPOPTS_NR)
		l3_end = data_end;
	__builtin_memcpy(pkt->src, &ip6h->saddr, 16);
	__builtin_memcpy(pkt->dst, &ip6h->daddr, 16);
	nexthdr = ip6h->nexthdr;
	pos = ip6h + 1;

	/* One pass per extension header, plus one to classify what follows
	 * the last one allowed. */
	for (i = 0; i <= IPV6_EXT_MAX; i++) {
		struct ipv6_opt_hdr *opt = pos;
		struct frag_hdr *frag = pos;

		switch (nexthdr) {
		case IPPROTO_HOPOPTS_NR:
		case IPPROTO_ROUTING_NR:
		case IPPROTO_DSTOPTS_NR:
		case IPPROTO_AH_NR:
			if ((void *)(opt + 1) > data_end)
				return;
			/* AH counts 4-byte units beyond the first two; the
			 * others count 8-byte units beyond the first. */
			pos += nexthdr == IPPROTO_AH_NR ? (opt->hdrlen + 2) * 4 :
							  (opt->hdrlen + 1) * 8;
			/* Like every layer, trusted only when whole, and
			 * inside the datagram: padding after it is no header. */
			if (pos > data_end || pos > l3_end)
				return;
			nexthdr = opt->nexthdr;
			break;
		case IPPROTO_FRAGMENT_NR:
			/* A ninth extension header is past the limit, even a
			 * later fragment's, whose protocol would otherwise be
			 * taken without walking it. */
			if (i == IPV6_EXT_MAX)
				return;
			if ((void *)(frag + 1) > data_end || (void *)(frag + 1) > l3_end)
				return;
			nexthdr = frag->nexthdr;
			later_fragment = frag->frag_off & bpf_htons(IP6_OFFSET_MASK);
			pos = frag + 1;
			/* Headers after the fragment header travel in the first
			 * fragment only: a later one holds data, not headers. */
			if (later_fragment) {
				classify_l4(pkt, nexthdr, true, true, pos, l3_end, data_end);
				return;
			}
			break;
		default:
			classify_l4(pkt, nexthdr, true, later_fragment, pos, l3_end, data_end);
			return;
		}
	}
}

#define ARPHRD_ETHER_NR 1
#define ETH_ALEN_NR	6

/* Whether an ARP header and the addresses its lengths announce are all in
 * the frame, with the lengths its types need (Ethernet: 6, IPv4: 4). */
static __always_inline bool arp_whole(void *pos, void *data_end)
{
	struct arphdr *arp = pos;
	__u32 hlen, plen;

	if ((void *)(arp + 1) > data_end)
		return false;
	hlen = arp->ar_hln;
	plen = arp->ar_pln;
	if (!hlen || !plen)
		return false;
	if (arp->ar_hrd == bpf_htons(ARPHRD_ETHER_NR) && hlen != ETH_ALEN_NR)
		return false;
	if (arp->ar_pro == bpf_htons(ETH_P_IP) && plen != 4)
		return false;
	return pos + sizeof(*arp) + 2 * (hlen + plen) <= data_end;
}

/* The largest offset of an L3 header: Ethernet and VLAN_MAX_DEPTH tags. */
#define L3_MAX_OFFSET (sizeof(struct ethhdr) + VLAN_MAX_DEPTH * sizeof(struct vlan_hdr))

/* Clears `pkt` and walks the Ethernet header and its VLAN tags: returns the
 * L3 header's offset (at most L3_MAX_OFFSET) with its EtherType in `proto`,
 * or 0 when the frame ends first. An offset, not a pointer, so that a
 * caller can hand it to a function the verifier checks on its own. */
static __always_inline __u32 parse_l2(void *data, void *data_end, struct packet_info *pkt,
				      __u16 *proto)
{
	struct ethhdr *eth = data;
	__u32 off = sizeof(*eth);
	int i;

	__builtin_memset(pkt, 0, sizeof(*pkt));
	pkt->l3 = L3_OTHER;
	pkt->l4 = L4_OTHER;
	if (data + off > data_end)
		return 0;
	*proto = eth->h_proto;

	for (i = 0; i < VLAN_MAX_DEPTH; i++) {
		struct vlan_hdr *vlan = data + off;

		if (*proto != bpf_htons(ETH_P_8021Q) && *proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vlan + 1) > data_end)
			return 0;
		*proto = vlan->h_vlan_encapsulated_proto;
		off += sizeof(*vlan);
	}
	return off;
}

/* Classifies the L3 header at `pos`, of EtherType `proto`, and its L4. */
static __always_inline void parse_l3(void *pos, void *data_end, __u16 proto,
				     struct packet_info *pkt)
{
	switch (proto) {
	case bpf_htons(ETH_P_IP):
		parse_ipv4(pos, data_end, pkt);
		break;
	case bpf_htons(ETH_P_IPV6):
		parse_ipv6(pos, data_end, pkt);
		break;
	case bpf_htons(ETH_P_ARP):
		if (arp_whole(pos, data_end))
			pkt->l3 = L3_ARP;
		break;
	}
}

/* Classifies a frame at L3 and L4; fields stay *_OTHER where parsing stops. */
static __always_inline void parse_packet(void *data, void *data_end, struct packet_info *pkt)
{
	__u16 proto = 0;
	__u32 off = parse_l2(data, data_end, pkt, &proto);

	if (off)
		parse_l3(data + off, data_end, proto, pkt);
}

/*
 * Defines NAME(CTX_TYPE *ctx, struct packet_info *pkt): parse_packet() of
 * the packet at ctx->data as two global functions (NAME, and NAME_l3 for
 * the L3 header at its offset), for a program whose packet_info lives in
 * memory. The verifier checks a global function once, on its own: the
 * parse is not checked again for every state of the code around it, and
 * the L3 walk is checked once for every L2 header length rather than once
 * per number of VLAN tags. A call costs a few ns; a program that keeps its
 * packet_info in registers inlines parse_packet() instead.
 */
#define GLOBAL_PARSE(NAME, CTX_TYPE)                                                               \
	__noinline int NAME##_l3(CTX_TYPE *ctx, struct packet_info *pkt, __u32 off, __u32 proto)   \
	{                                                                                          \
		void *data = (void *)(long)ctx->data;                                              \
                                                                                                   \
		if (!pkt || off > L3_MAX_OFFSET)                                                   \
			return 0;                                                                  \
		parse_l3(data + off, (void *)(long)ctx->data_end, proto, pkt);                     \
		return 0;                                                                          \
	}                                                                                          \
                                                                                                   \
	__noinline int NAME(CTX_TYPE *ctx, struct packet_info *pkt)                                \
	{                                                                                          \
		__u16 proto = 0;                                                                   \
		__u32 off;                                                                         \
                                                                                                   \
		if (!pkt)                                                                          \
			return 0;                                                                  \
		off = parse_l2((void *)(long)ctx->data, (void *)(long)ctx->data_end, pkt, &proto); \
		if (off)                                                                           \
			NAME##_l3(ctx, pkt, off, proto);                                           \
		return 0;                                                                          \
	}

#endif /* MESHBPF_PACKET_PARSE_H */
