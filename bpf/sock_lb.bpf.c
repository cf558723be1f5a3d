// SPDX-License-Identifier: GPL-2.0
/*
 * sock_lb.bpf.c — berth's socket-level load balancer (cgroup sock_addr hooks, attached once at
 * the host's ROOT cgroup v2 so that every socket of every process, host and container alike,
 * passes through them: socket hooks run for the socket's cgroup and all its ancestors).
 *
 * connect/sendmsg translate VIP:port to a random backend before the kernel routes anything, so
 * a VIP packet never exists on the wire; the socket's own reverse-NAT storage lets
 * getpeername() and UDP recvmsg() report the VIP again, which is what the application expects.
 * Inspired by the shape of Cilium's bpf/bpf_sock.c (learned from, not copied).
 *
 * Style: the SEC() entry points only turn a helper's result into the hook's verdict; the helpers
 * return 0 (leave the socket alone), 1 (rewritten) or -errno (refuse with that errno).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include "lb.h"
#include "revnat.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define ECONNREFUSED 111

char LICENSE[] SEC("license") = "GPL";

/* (VIP, port, proto, slot) -> master entry or backend id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BERTH_MAX_SERVICE_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct berth_svc_key);
	__type(value, struct berth_svc_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} berth_services SEC(".maps");

/* backend id -> address and port. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BERTH_MAX_BACKENDS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct berth_backend_key);
	__type(value, struct berth_backend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} berth_backends SEC(".maps");

/* berth_sk_revnat (per-socket backend -> VIP translations) is defined in revnat.h. */

/* service id -> per-CPU counters (no atomics on the connect path). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, BERTH_MAX_SERVICE_IDS);
	__type(key, __u32);
	__type(value, struct berth_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} berth_counters SEC(".maps");

/* Client netns cookie -> the Docker networks it is on (per-network backend lists, lb.h). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BERTH_MAX_NETNS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct berth_client_nets);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} berth_netns SEC(".maps");

/* [0] -> the host netns cookie (for host-netns-only services). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct berth_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} berth_config SEC(".maps");

/* Backends whose connected UDP sockets berth_udp_destroy destroys (filled just before a run). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BERTH_MAX_DESTROY);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct berth_destroy_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} berth_doomed SEC(".maps");

static __always_inline bool __addr_is_v4_mapped(const __u32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffff);
}

/* Host-netns-only services (ingress VIP -> 127.0.0.1:proxyPort) must not be rewritten for a
 * container: its 127.0.0.1 is its own loopback, where no Envoy listens. */
static __always_inline bool __in_host_netns(void *ctx)
{
	__u32 zero = 0;
	struct berth_config *cfg = bpf_map_lookup_elem(&berth_config, &zero);

	if (!cfg || !cfg->host_netns_cookie)
		return false;
	return bpf_get_netns_cookie(ctx) == cfg->host_netns_cookie;
}

/*
 * The backend list for this client (lb.h, "Per-client-network backend lists"): list 0 (svc)
 * unless the client's netns is on networks with lists of their own. Leaves key->net at the
 * chosen list, so the slot lookups that follow read that list. Returns a master entry, whose
 * count may be 0 (every network of the client has an empty list: refuse).
 */
static __always_inline struct berth_svc_val *__lb_net_list(struct bpf_sock_addr *ctx, struct berth_svc_key *key,
							   struct berth_svc_val *svc)
{
	struct berth_svc_val *alt = NULL, *empty = NULL;
	struct berth_client_nets *cn;
	__u64 cookie = bpf_get_netns_cookie(ctx);

	cn = bpf_map_lookup_elem(&berth_netns, &cookie);
	if (!cn)
		return svc;
	for (int i = 0; i < BERTH_CLIENT_NETS; i++) {
		if (!cn->net[i])
			break;
		key->net = cn->net[i];
		alt = bpf_map_lookup_elem(&berth_services, key);
		if (!alt)
			break; /* this network sees list 0 */
		if (alt->count)
			return alt;
		empty = alt;
	}
	if (empty && alt)
		return empty; /* every network looked at has an empty list */
	key->net = 0;
	return svc;
}

/*
 * Look the destination up and pick a backend. key holds the VIP with slot 0.
 * Returns 0 when the destination is no service (or not one for this socket), 1 with *out set,
 * or -ECONNREFUSED when the service has no usable backend: failing connect() at once is the
 * contract; letting it through would send it into the unreachable VIP route (EHOSTUNREACH
 * after a route lookup) or, worse, time out.
 */
static __always_inline int __lb_pick(struct bpf_sock_addr *ctx, struct berth_svc_key *key,
				     struct berth_backend *out)
{
	struct berth_svc_val *svc, *slot;
	struct berth_backend *be;
	struct berth_counters *cnt;
	__u32 svc_id;
	__u16 count;

	svc = bpf_map_lookup_elem(&berth_services, key);
	if (!svc)
		return 0;
	if ((svc->flags & BERTH_SVC_F_HOST_NETNS) && !__in_host_netns(ctx))
		return 0;
	if (svc->flags & BERTH_SVC_F_NETS)
		svc = __lb_net_list(ctx, key, svc);
	svc_id = svc->id;
	count = svc->count;
	cnt = bpf_map_lookup_elem(&berth_counters, &svc_id);
	if (count == 0)
		goto refuse;
	key->slot = (bpf_get_prandom_u32() % count) + 1;
	slot = bpf_map_lookup_elem(&berth_services, key);
	if (!slot) {
		/* The service shrank between our read of the master and this lookup (berth writes the
		 * smaller count first, then deletes the tail slots). Slot 1 exists whenever any
		 * backend is left, so take it rather than refuse a service that still has backends. */
		key->slot = 1;
		slot = bpf_map_lookup_elem(&berth_services, key);
		if (!slot)
			goto refuse;
	}
	be = bpf_map_lookup_elem(&berth_backends, &slot->id);
	if (!be)
		goto refuse;
	*out = *be;
	/* Atomic although per CPU: sock_addr programs run preemptible (only migration is off), so
	 * two sockets on one CPU can interleave here. */
	if (cnt)
		__sync_fetch_and_add(&cnt->connects, 1);
	return 1;
refuse:
	if (cnt)
		__sync_fetch_and_add(&cnt->no_backend, 1);
	return -ECONNREFUSED;
}

static __always_inline void __revnat_record(struct bpf_sock_addr *ctx, const __u32 *be_addr,
					    __u16 be_port, const __u32 *vip, __u16 vip_port)
{
	struct berth_sk_revnat *st;
	struct berth_sk_revnat_ent *e;
	struct bpf_sock *sk = ctx->sk;

	if (!sk)
		return;
	/* Best effort: without storage (ENOMEM) only getpeername/recvmsg show the backend. */
	st = bpf_sk_storage_get(&berth_sk_revnat, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return;
	e = __revnat_find(st, be_addr, be_port);
	if (!e) {
		/* A new backend for this socket (a TCP connect, or one more destination of an
		 * unconnected UDP socket): take the next slot round robin. */
		__u32 slot = st->next & (BERTH_SK_REVNAT_SLOTS - 1);

		st->next = slot + 1;
		e = &st->ent[slot];
		__builtin_memcpy(e->be_addr, be_addr, 16);
		e->be_port = be_port;
	}
	__builtin_memcpy(e->vip_addr, vip, 16);
	e->vip_port = vip_port;
}

/* connect4 / sendmsg4: VIP -> backend for an AF_INET socket. */
static __always_inline int __sock4_fwd(struct bpf_sock_addr *ctx)
{
	struct berth_svc_key key = {};
	struct berth_backend be = {};
	__u32 vip[4] = {}, bea[4] = {};
	__u16 vport;
	int ret;

	if (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP)
		return 0;
	vip[0] = ctx->user_ip4;
	vport = (__u16)ctx->user_port;
	key.addr[0] = vip[0];
	key.port = vport;
	key.proto = ctx->protocol;
	key.family = BERTH_FAMILY_V4;
	ret = __lb_pick(ctx, &key, &be);
	if (ret <= 0)
		return ret;
	if (be.family != BERTH_FAMILY_V4)
		return -ECONNREFUSED; /* plan.ts never pairs a v4 VIP with a v6 backend */
	bea[0] = be.addr[0];
	__revnat_record(ctx, bea, be.port, vip, vport);
	ctx->user_ip4 = be.addr[0];
	ctx->user_port = be.port;
	return 1;
}

/* connect6 / sendmsg6: VIP6 -> backend, and ::ffff:VIP4 -> ::ffff:backend4 for dual-stack sockets. */
static __always_inline int __sock6_fwd(struct bpf_sock_addr *ctx)
{
	struct berth_svc_key key = {};
	struct berth_backend be = {};
	__u32 vip[4], bea[4];
	__u16 vport;
	bool mapped;
	int ret;

	if (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP)
		return 0;
	vip[0] = ctx->user_ip6[0];
	vip[1] = ctx->user_ip6[1];
	vip[2] = ctx->user_ip6[2];
	vip[3] = ctx->user_ip6[3];
	vport = (__u16)ctx->user_port;
	mapped = __addr_is_v4_mapped(vip);
	if (mapped) {
		key.addr[0] = vip[3];
		key.family = BERTH_FAMILY_V4;
	} else {
		__builtin_memcpy(key.addr, vip, 16);
		key.family = BERTH_FAMILY_V6;
	}
	key.port = vport;
	key.proto = ctx->protocol;
	ret = __lb_pick(ctx, &key, &be);
	if (ret <= 0)
		return ret;
	if (be.family == BERTH_FAMILY_V4) {
		if (!mapped)
			return -ECONNREFUSED;
		bea[0] = 0;
		bea[1] = 0;
		bea[2] = bpf_htonl(0x0000ffff);
		bea[3] = be.addr[0];
	} else {
		__builtin_memcpy(bea, be.addr, 16);
	}
	__revnat_record(ctx, bea, be.port, vip, vport);
	ctx->user_ip6[0] = bea[0];
	ctx->user_ip6[1] = bea[1];
	ctx->user_ip6[2] = bea[2];
	ctx->user_ip6[3] = bea[3];
	ctx->user_port = be.port;
	return 1;
}

/* recvmsg4 / getpeername4: backend -> VIP, if this socket was balanced to that backend. */
static __always_inline int __sock4_rev(struct bpf_sock_addr *ctx)
{
	struct berth_sk_revnat_ent *e;
	struct berth_sk_revnat *st;
	__u32 peer[4] = {};

	if (!ctx->sk)
		return 0;
	st = bpf_sk_storage_get(&berth_sk_revnat, ctx->sk, 0, 0);
	if (!st)
		return 0;
	peer[0] = ctx->user_ip4;
	e = __revnat_find(st, peer, (__u16)ctx->user_port);
	if (!e)
		return 0;
	ctx->user_ip4 = e->vip_addr[0];
	ctx->user_port = e->vip_port;
	return 1;
}

static __always_inline int __sock6_rev(struct bpf_sock_addr *ctx)
{
	struct berth_sk_revnat_ent *e;
	struct berth_sk_revnat *st;
	__u32 peer[4];

	if (!ctx->sk)
		return 0;
	st = bpf_sk_storage_get(&berth_sk_revnat, ctx->sk, 0, 0);
	if (!st)
		return 0;
	peer[0] = ctx->user_ip6[0];
	peer[1] = ctx->user_ip6[1];
	peer[2] = ctx->user_ip6[2];
	peer[3] = ctx->user_ip6[3];
	e = __revnat_find(st, peer, (__u16)ctx->user_port);
	if (!e)
		return 0;
	ctx->user_ip6[0] = e->vip_addr[0];
	ctx->user_ip6[1] = e->vip_addr[1];
	ctx->user_ip6[2] = e->vip_addr[2];
	ctx->user_ip6[3] = e->vip_addr[3];
	ctx->user_port = e->vip_port;
	return 1;
}

/* connect/sendmsg verdict: 1 lets the call proceed; 0 fails it with the errno set here
 * (bpf_set_retval, kernel >= 5.18). On older kernels libbpf resolves the CO-RE check below to
 * false, the verifier drops the call as dead code, and the caller sees EPERM instead. */
static __always_inline int __verdict(int ret)
{
	if (ret < 0) {
		if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_set_retval))
			bpf_set_retval(ret);
		return 0;
	}
	return 1;
}

SEC("cgroup/connect4")
int berth_sock4_connect(struct bpf_sock_addr *ctx)
{
	return __verdict(__sock4_fwd(ctx));
}

SEC("cgroup/connect6")
int berth_sock6_connect(struct bpf_sock_addr *ctx)
{
	return __verdict(__sock6_fwd(ctx));
}

SEC("cgroup/sendmsg4")
int berth_sock4_sendmsg(struct bpf_sock_addr *ctx)
{
	return __verdict(__sock4_fwd(ctx));
}

SEC("cgroup/sendmsg6")
int berth_sock6_sendmsg(struct bpf_sock_addr *ctx)
{
	return __verdict(__sock6_fwd(ctx));
}

/* recvmsg and getpeername programs must return 1 (the verifier enforces it). */
SEC("cgroup/recvmsg4")
int berth_sock4_recvmsg(struct bpf_sock_addr *ctx)
{
	__sock4_rev(ctx);
	return 1;
}

SEC("cgroup/recvmsg6")
int berth_sock6_recvmsg(struct bpf_sock_addr *ctx)
{
	__sock6_rev(ctx);
	return 1;
}

SEC("cgroup/getpeername4")
int berth_sock4_getpeername(struct bpf_sock_addr *ctx)
{
	__sock4_rev(ctx);
	return 1;
}

SEC("cgroup/getpeername6")
int berth_sock6_getpeername(struct bpf_sock_addr *ctx)
{
	__sock6_rev(ctx);
	return 1;
}

/*
 * UDP fail-over: a connected UDP socket keeps its backend forever (no handshake ever fails), so
 * when a backend goes away berth fills berth_doomed and runs this iterator, which destroys
 * the matching sockets (the application sees ECONNABORTED and reconnects through the VIP).
 * Only sockets that berth balanced to that backend are touched: the socket's own reverse-NAT
 * translation for that peer proves it went through a VIP; a client that connected to the
 * container's own address is not ours to kill. TCP is left alone: a TCP peer that vanished
 * resets or times out by itself, and an established connection to a backend that merely left
 * the service (unhealthy, stopping) keeps working.
 * The iterator walks the UDP sockets of the network namespace it is run in.
 *
 * __weak: kernels before 6.5 lack the kfunc. A strong extern would make libbpf refuse the whole
 * object; weak, it resolves to nothing, this program fails to load, and the loader retries
 * without it (UDP fail-over is then unavailable, as berth status reports).
 */
extern int bpf_sock_destroy(struct sock_common *sk) __ksym __weak;

SEC("iter/udp")
int berth_udp_destroy(struct bpf_iter__udp *ctx)
{
	struct sock *sk = (struct sock *)ctx->udp_sk;
	struct berth_destroy_key key = {};
	struct berth_sk_revnat *st;
	__u32 peer[4] = {};
	__u16 family;

	if (!sk)
		return 0;
	key.port = sk->__sk_common.skc_dport;
	if (key.port == 0)
		return 0; /* not connected */
	family = sk->__sk_common.skc_family;
	if (family == AF_INET) {
		key.family = BERTH_FAMILY_V4;
		key.addr[0] = sk->__sk_common.skc_daddr;
		peer[0] = key.addr[0];
	} else if (family == AF_INET6) {
		__u32 *a = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32;
		__u32 d[4] = { a[0], a[1], a[2], a[3] };

		/* The socket's translations hold the peer as it sees it: v4-mapped on a dual-stack socket. */
		__builtin_memcpy(peer, d, 16);
		if (__addr_is_v4_mapped(d)) {
			key.family = BERTH_FAMILY_V4;
			key.addr[0] = d[3];
		} else {
			key.family = BERTH_FAMILY_V6;
			__builtin_memcpy(key.addr, d, 16);
		}
	} else {
		return 0;
	}
	if (!bpf_map_lookup_elem(&berth_doomed, &key))
		return 0;
	st = bpf_sk_storage_get(&berth_sk_revnat, sk, 0, 0);
	if (!st || !__revnat_find(st, peer, key.port))
		return 0;
	bpf_sock_destroy((struct sock_common *)sk);
	return 0;
}
