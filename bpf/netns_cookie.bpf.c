// SPDX-License-Identifier: GPL-2.0
/*
 * netns_cookie.bpf.c — a network namespace's cookie for kernels without SO_NETNS_COOKIE.
 *
 * berthd learns netns cookies (its own, for host-netns-only ingress VIPs, and each container's,
 * for per-network backend lists) with getsockopt(SO_NETNS_COOKIE) on a socket made in that
 * namespace: the value bpf_get_netns_cookie() returns in the connect hooks. That socket option
 * came with Linux 5.14 ("net: retrieve netns cookie via getsocketopt"); before, getsockopt
 * answers ENOPROTOOPT and berthd could not start (measured on Debian 11's 5.10). The BPF helper
 * is older, but before 5.14 it is not offered to cgroup/getsockopt programs (the 5.10 verifier:
 * "unknown func bpf_get_netns_cookie#122"); it is offered to cgroup/sock_create (5.7).
 *
 * So, loaded and attached at the root cgroup only where the option is missing: when a socket is
 * created that nothing else makes — AF_INET, SOCK_RAW, protocol 253 (RFC 3692's "use for
 * experimentation and testing") — this program stores the namespace's cookie in the new socket's
 * mark (low 32 bits) and priority (high 32 bits), which the creator reads back with
 * getsockopt(SO_MARK) and getsockopt(SO_PRIORITY) (native/src/namespaces.cc). Values match the
 * connect hooks' by construction: the same helper. Every other socket is left untouched.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define AF_INET 2
#define SOCK_RAW 3
#define BERTH_PROBE_PROTOCOL 253

char LICENSE[] SEC("license") = "GPL";

SEC("cgroup/sock_create")
int berth_netns_cookie(struct bpf_sock *sk)
{
	__u64 cookie;

	if (sk->family != AF_INET || sk->type != SOCK_RAW || sk->protocol != BERTH_PROBE_PROTOCOL)
		return 1;
	cookie = bpf_get_netns_cookie(sk);
	sk->mark = (__u32)cookie;
	sk->priority = (__u32)(cookie >> 32);
	return 1;
}
