// SPDX-License-Identifier: GPL-2.0
/*
 * flows.bpf.c — which forwarded packets belong to a connection berth balanced (crossNetwork
 * `allow`). Loaded only in that mode, next to sock_lb.bpf.o, sharing its pinned per-socket
 * reverse-NAT storage.
 *
 * Why: a container's connect() to a VIP is rewritten, inside the container's netns, to a backend
 * address that may sit on another Docker network. The packets then cross the host from one bridge
 * to another, and Docker's DOCKER-ISOLATION-STAGE-1/2 chains drop them by (in, out) bridge
 * whatever their conntrack state: the client hangs. The host cannot tell a balanced flow from a
 * direct container-to-container one by the packet, and a mark on the client's socket does not
 * help: skb_scrub_packet() clears skb->mark when the packet leaves the container's netns through
 * its veth. What does know is the client socket itself, and only in the client's netns: its
 * berth_sk_revnat storage holds the backend it was balanced to.
 *
 * So the decision is taken twice, once where the knowledge is and once where the verdict is:
 *  - berth_flow_record (cgroup_skb/egress at the root cgroup: every socket of every netns) runs
 *    as a packet leaves its socket, before any routing or veth; when the socket's storage has a
 *    translation for the packet's destination it writes the packet's 5-tuple into berth_flows.
 *    A socket berth never balanced has no storage: one pointer test and out.
 *  - berth_flow_match (a socket filter, run by iptables' xt_bpf match with --object-pinned)
 *    answers, in berth's chain jumped to from DOCKER-USER, whether a NEW connection's first
 *    packet is such a flow. The rule CONNMARKs the connection and a second rule ACCEPTs marked
 *    connections, so the replies (which Docker's isolation would drop too) pass with no BPF run.
 * Direct container-to-container traffic across networks is never recorded and stays dropped.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lb.h"
#include "revnat.h"

#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define EINVAL 22
#define ENOENT 2

char LICENSE[] SEC("license") = "GPL";

/* Balanced flows, original direction -> 1. LRU: an entry is only needed until conntrack has
 * marked the connection (its first packet); old ones may go. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, BERTH_MAX_FLOWS);
	__type(key, struct berth_flow_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} berth_flows SEC(".maps");

/*
 * The packet at the network header (where both cgroup_skb and xt_bpf start) as a flow key.
 * Returns 0, or -ENOENT for what berth does not balance (not TCP/UDP, IPv6 extension headers,
 * a non-first fragment without ports), -EINVAL for a short packet.
 */
static __always_inline int __flow_parse(struct __sk_buff *skb, struct berth_flow_key *k)
{
	__u16 ports[2];
	__u8 vihl;
	__u32 off;

	if (bpf_skb_load_bytes(skb, 0, &vihl, 1))
		return -EINVAL;
	if ((vihl >> 4) == 4) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return -EINVAL;
		if (ip.protocol != IPPROTO_TCP && ip.protocol != IPPROTO_UDP)
			return -ENOENT;
		if (ip.frag_off & bpf_htons(0x1fff))
			return -ENOENT;
		k->saddr[0] = ip.saddr;
		k->daddr[0] = ip.daddr;
		k->proto = ip.protocol;
		k->family = BERTH_FAMILY_V4;
		off = (__u32)ip.ihl * 4;
	} else if ((vihl >> 4) == 6) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return -EINVAL;
		if (ip6.nexthdr != IPPROTO_TCP && ip6.nexthdr != IPPROTO_UDP)
			return -ENOENT;
		__builtin_memcpy(k->saddr, ip6.saddr.in6_u.u6_addr32, 16);
		__builtin_memcpy(k->daddr, ip6.daddr.in6_u.u6_addr32, 16);
		k->proto = ip6.nexthdr;
		k->family = BERTH_FAMILY_V6;
		off = sizeof(ip6);
	} else {
		return -ENOENT;
	}
	if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)))
		return -EINVAL;
	k->sport = ports[0];
	k->dport = ports[1];
	return 0;
}

/* Does this socket hold a translation to the packet's destination? An IPv4 packet of a
 * dual-stack IPv6 socket was recorded with the v4-mapped backend address. */
static __always_inline bool __flow_balanced(struct berth_sk_revnat *st, const struct berth_flow_key *k)
{
	__u32 peer[4] = {};

	if (k->family == BERTH_FAMILY_V6)
		return __revnat_find(st, k->daddr, k->dport) != NULL;
	peer[0] = k->daddr[0];
	if (__revnat_find(st, peer, k->dport))
		return true;
	peer[0] = 0;
	peer[2] = bpf_htonl(0x0000ffff);
	peer[3] = k->daddr[0];
	return __revnat_find(st, peer, k->dport) != NULL;
}

/* Record the packet's flow when its socket was balanced to its destination. Returns 1 when
 * recorded, 0 when there was nothing to record, -errno on a failed write (the flow then meets
 * Docker's isolation like any other). */
static __always_inline int __flow_record(struct __sk_buff *skb)
{
	struct berth_flow_key k = {};
	struct berth_sk_revnat *st;
	struct bpf_sock *sk;
	__u8 one = 1;
	int ret;

	sk = skb->sk;
	if (!sk)
		return 0;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return 0;
	st = bpf_sk_storage_get(&berth_sk_revnat, sk, 0, 0);
	if (!st)
		return 0; /* the common case: a socket no VIP connect ever touched */
	if (__flow_parse(skb, &k) < 0 || !__flow_balanced(st, &k))
		return 0;
	/* Look before writing: a flow's later packets find it, and a lookup takes no lock. */
	if (bpf_map_lookup_elem(&berth_flows, &k))
		return 0;
	ret = bpf_map_update_elem(&berth_flows, &k, &one, BPF_ANY);
	return ret < 0 ? ret : 1;
}

/* cgroup_skb programs return 1 to pass: this one only observes. */
SEC("cgroup_skb/egress")
int berth_flow_record(struct __sk_buff *skb)
{
	__flow_record(skb);
	return 1;
}

/* xt_bpf: non-zero = the rule matches (this packet's flow was balanced by berth). */
SEC("socket")
int berth_flow_match(struct __sk_buff *skb)
{
	struct berth_flow_key k = {};

	if (__flow_parse(skb, &k) < 0)
		return 0;
	return bpf_map_lookup_elem(&berth_flows, &k) ? 1 : 0;
}
