// SPDX-License-Identifier: GPL-2.0
/*
 * redirect.bpf.c — berth's ingress redirect without TPROXY (redirect mode `ebpf`).
 *
 * A tc ingress program on the interfaces where ingress traffic arrives (the Docker bridges, the
 * host's external interfaces). A TCP packet to <ingress VIP>:<listen> or to <host address>:<publish>
 * is handed to Envoy's transparent listener for that ingress with bpf_sk_assign: the established
 * connection's socket when there is one, else the listener. The packet keeps its destination
 * address; it is marked (be16 listenerPort << 16) | 0x200 (Cilium's proxy mark) so that berth's fwmark
 * rule routes it via a local table to the local stack, where TCP takes the assigned socket
 * instead of looking one up. No iptables rule is involved.
 *
 * Style: helpers return 0 or -errno; the SEC() entry point always lets the packet pass
 * (TC_ACT_OK): a packet we cannot steer is the kernel's to route, never dropped here.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lb.h" /* the map key/value structs, shared with native/ and mirrored by src/datapath/codec.ts */

#define TC_ACT_OK 0
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP 6
#define ENOENT 2

char LICENSE[] SEC("license") = "GPL";

/* (VIP, listen) and (host address, publish) -> Envoy listener port. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BERTH_MAX_REDIR);
	__type(key, struct berth_redir4_key);
	__type(value, struct berth_redir_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);	/* <pinDir>/redirect/berth_redir4, reused on reload */
} berth_redir4 SEC(".maps");

/* (VIP6, listen) and (host IPv6 address, publish) -> Envoy listener port. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BERTH_MAX_REDIR);
	__type(key, struct berth_redir6_key);
	__type(value, struct berth_redir_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);	/* <pinDir>/redirect/berth_redir6 */
} berth_redir6 SEC(".maps");

/*
 * Find the socket for this packet: its established connection first, then the listener.
 * tuple_size selects the family (sizeof ipv4 or ipv6 part); dport points into the tuple.
 */
static __always_inline struct bpf_sock *__lookup_socket(struct __sk_buff *skb, struct bpf_sock_tuple *t, __u32 tuple_size,
							__be16 *dport, __u16 listener_port)
{
	struct bpf_sock *sk;

	/* Packets after the SYN belong to a connection Envoy accepted: its local address is the
	 * VIP (transparent socket), so the packet's own tuple finds it. A TIME_WAIT entry is no
	 * connection to hand the packet to: a client reusing the tuple sends a SYN, which the
	 * TIME_WAIT code would look up on the VIP port (no listener there) and drop; the listener
	 * below takes it instead (Cilium's proxy assign skips TIME_WAIT the same way). */
	sk = bpf_skc_lookup_tcp(skb, t, tuple_size, BPF_F_CURRENT_NETNS, 0);
	if (sk) {
		if (sk->state != BPF_TCP_LISTEN && sk->state != BPF_TCP_TIME_WAIT)
			return sk;
		bpf_sk_release(sk);
	}
	/* A new connection: Envoy's listener, bound to 0.0.0.0 / [::] :<listener port>. */
	*dport = bpf_htons(listener_port);
	sk = bpf_skc_lookup_tcp(skb, t, tuple_size, BPF_F_CURRENT_NETNS, 0);
	if (sk && sk->state != BPF_TCP_LISTEN) {
		bpf_sk_release(sk);
		return NULL;
	}
	return sk;
}

/* Hand the packet to sk and mark it for berth's local route. */
static __always_inline int __assign(struct __sk_buff *skb, struct bpf_sock *sk, __u16 listener_port)
{
	long ret = bpf_sk_assign(skb, sk, 0);

	bpf_sk_release(sk);
	if (ret)
		return ret;
	/* Cilium's layout: the port as __be16 in the upper half (seed 002: 0x43470200 for 18243). */
	skb->mark = ((__u32)bpf_htons(listener_port) << 16) | BERTH_PROXY_MARK;
	return 0;
}

static __always_inline int __redirect4(struct __sk_buff *skb, struct iphdr *ip, void *data_end)
{
	struct tcphdr *tcp;
	struct berth_redir4_key key = {};
	struct berth_redir_val *val;
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	__u16 listener_port;

	if ((void *)(ip + 1) > data_end || ip->protocol != IPPROTO_TCP || ip->ihl < 5)
		return -ENOENT;
	/* Fragments: only the first carries the TCP header, and the stack reassembles after tc.
	 * Leave them all alone rather than assign part of a datagram (MF flag or an offset). */
	if (ip->frag_off & bpf_htons(0x3fff))
		return -ENOENT;
	tcp = (void *)ip + ip->ihl * 4;
	if ((void *)(tcp + 1) > data_end)
		return -ENOENT;

	key.addr = ip->daddr;
	key.port = tcp->dest;
	val = bpf_map_lookup_elem(&berth_redir4, &key);
	if (!val)
		return -ENOENT;
	listener_port = val->listener_port;

	t.ipv4.saddr = ip->saddr;
	t.ipv4.daddr = ip->daddr;
	t.ipv4.sport = tcp->source;
	t.ipv4.dport = tcp->dest;
	sk = __lookup_socket(skb, &t, sizeof(t.ipv4), &t.ipv4.dport, listener_port);
	if (!sk)
		return -ENOENT;	/* Envoy not listening (yet): leave it to routing */
	return __assign(skb, sk, listener_port);
}

/* IPv6: TCP directly after the fixed header only (no extension headers on this path). */
static __always_inline int __redirect6(struct __sk_buff *skb, struct ipv6hdr *ip6, void *data_end)
{
	struct tcphdr *tcp;
	struct berth_redir6_key key = {};
	struct berth_redir_val *val;
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	__u16 listener_port;

	if ((void *)(ip6 + 1) > data_end || ip6->nexthdr != IPPROTO_TCP)
		return -ENOENT;
	tcp = (void *)(ip6 + 1);
	if ((void *)(tcp + 1) > data_end)
		return -ENOENT;

	__builtin_memcpy(key.addr, &ip6->daddr, sizeof(key.addr));
	key.port = tcp->dest;
	val = bpf_map_lookup_elem(&berth_redir6, &key);
	if (!val)
		return -ENOENT;
	listener_port = val->listener_port;

	__builtin_memcpy(t.ipv6.saddr, &ip6->saddr, sizeof(t.ipv6.saddr));
	__builtin_memcpy(t.ipv6.daddr, &ip6->daddr, sizeof(t.ipv6.daddr));
	t.ipv6.sport = tcp->source;
	t.ipv6.dport = tcp->dest;
	sk = __lookup_socket(skb, &t, sizeof(t.ipv6), &t.ipv6.dport, listener_port);
	if (!sk)
		return -ENOENT;
	return __assign(skb, sk, listener_port);
}

SEC("tc")
int berth_redirect(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return TC_ACT_OK;
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		__redirect4(skb, (void *)(eth + 1), data_end);
	else if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		__redirect6(skb, (void *)(eth + 1), data_end);
	return TC_ACT_OK;
}
