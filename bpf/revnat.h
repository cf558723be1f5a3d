/* SPDX-License-Identifier: GPL-2.0 */
/*
 * revnat.h — reading a socket's reverse-NAT storage (struct berth_sk_revnat, bpf/lb.h). Shared by
 * sock_lb.bpf.c (which writes it at connect) and flows.bpf.c (which asks it whether a packet's
 * destination is a backend berth balanced this socket to), with the map itself. BPF programs only.
 */
#ifndef BERTH_REVNAT_H
#define BERTH_REVNAT_H

/* Per socket: backend -> VIP translations, for getpeername and UDP recvmsg. Socket-local
 * storage lives and dies with the socket: no capacity to run out of (the LRU keyed by socket
 * cookie it replaces evicted live sockets' entries once more sockets than entries were open, and
 * their getpeername then showed the backend), no eviction and no shared lock on the connect path.
 * Its cost is one allocation at a socket's first balanced connect (npm run bench: connect4
 * ~2.5 us a run, as with the LRU; TCP_CRR rate 0.97x of direct at every service count).
 * Defined here once for both objects: libbpf pins it by name, so the second object to load
 * reuses the first one's map. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct berth_sk_revnat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} berth_sk_revnat SEC(".maps");

static __always_inline bool __revnat_is(const struct berth_sk_revnat_ent *e, const __u32 *addr, __u16 port)
{
	return e->be_port == port && e->be_addr[0] == addr[0] && e->be_addr[1] == addr[1] &&
	       e->be_addr[2] == addr[2] && e->be_addr[3] == addr[3];
}

/* The slot of this socket's translation for a backend, or NULL. */
static __always_inline struct berth_sk_revnat_ent *__revnat_find(struct berth_sk_revnat *st, const __u32 *addr, __u16 port)
{
	for (int i = 0; i < BERTH_SK_REVNAT_SLOTS; i++) {
		if (__revnat_is(&st->ent[i], addr, port))
			return &st->ent[i];
	}
	return NULL;
}

#endif /* BERTH_REVNAT_H */
