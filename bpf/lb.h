/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lb.h — the ONE definition of berth's BPF map layouts, shared by bpf/ (the programs) and
 * native/ (the addon, which exports the sizes so src/datapath/codec.ts can check its own
 * encoders against them). Fixed-width fields, explicit padding, no implicit holes: the kernel,
 * the addon and the codec must agree byte for byte, and _Static_assert below keeps it so.
 *
 * Byte order: addresses and ports are stored exactly as the socket hooks see them
 * (network order, i.e. the bytes of the address in their usual order); everything else is
 * host order. Only src/datapath/codec.ts converts.
 *
 * The service map follows Cilium's lb4_key/lb4_service slot scheme (bpf/lib/lb.h there):
 * slot 0 of a (VIP, port, proto) is the master entry holding the backend count, flags and the
 * service id; slots 1..count hold backend ids. A connect picks slot 1 + random % count.
 */
#ifndef BERTH_LB_H
#define BERTH_LB_H

#ifdef __BPF__
/* In BPF programs the fixed-width types come from vmlinux.h. */
#else
#include <linux/types.h>
#endif

/* Map capacities. Hash maps are BPF_F_NO_PREALLOC, so unused capacity costs only buckets. */
#define BERTH_MAX_SERVICE_ENTRIES (1u << 19) /* master + backend slots, all services */
#define BERTH_MAX_BACKENDS (1u << 18)        /* distinct (address, port) backends */
#define BERTH_MAX_SERVICE_IDS (1u << 17)     /* service ids 1..MAX-1; index of the counters */
#define BERTH_MAX_DESTROY 4096               /* backends whose UDP sockets one iterator run destroys */
#define BERTH_MAX_SLOTS 0xffffu              /* backends per service (u16 slot) */

/* berth_svc_val.flags */
#define BERTH_SVC_F_HOST_NETNS 0x1 /* rewrite only for sockets in the host network namespace */
#define BERTH_SVC_F_NETS 0x2       /* master of list 0 only: per-network lists exist (look the
                                      client's networks up in berth_netns) */

/*
 * Per-client-network backend lists. A client container is known by its network namespace's
 * cookie (bpf_get_netns_cookie; berthd learns each container's via SO_NETNS_COOKIE), mapped to
 * the Docker networks it is on, as berth's small network numbers. For a frontend flagged
 * BERTH_SVC_F_NETS the connect hook tries the client's networks in order: a network without a
 * list of its own uses list 0; a list with backends is used; an empty list (crossNetwork docker:
 * no backend on that network) moves on; when every network of the client has an empty list the
 * connect is refused. Clients not in berth_netns (the host, unknown namespaces) use list 0.
 */
#define BERTH_CLIENT_NETS 4          /* networks per client looked at (in berth's order) */
#define BERTH_MAX_NETNS (1u << 16)   /* client network namespaces */

/* berth_netns value (key: __u64 netns cookie). */
struct berth_client_nets {
	__u16 net[BERTH_CLIENT_NETS]; /* network numbers 1..65535, 0 = unused (the rest too) */
};

#define BERTH_FAMILY_V4 4
#define BERTH_FAMILY_V6 6

/* services map key: one (VIP, port, protocol, slot). */
struct berth_svc_key {
	__u32 addr[4];  /* VIP, network order; IPv4 in addr[0], addr[1..3] zero */
	__u16 port;     /* VIP port, network order */
	__u8 proto;     /* IPPROTO_TCP (6) or IPPROTO_UDP (17) */
	__u8 family;    /* BERTH_FAMILY_V4 or BERTH_FAMILY_V6 */
	__u16 slot;     /* 0 = master entry, 1..count = backend slots */
	__u16 net;      /* 0 = the list for every client; n = the list for clients on Docker network
	                   n (berth_netns), present only where it differs from list 0 (issue 15) */
};

/* services map value. */
struct berth_svc_val {
	__u32 id;       /* slot 0: service id (index into counters); slot n: backend id */
	__u16 count;    /* slot 0: number of backend slots; slot n: zero */
	__u8 flags;     /* slot 0: BERTH_SVC_F_*; slot n: zero */
	__u8 pad;       /* zero */
};

/* backends map key. */
struct berth_backend_key {
	__u32 id;       /* backend id, 1.. (0 is never used) */
};

/* backends map value: where a connect is sent. */
struct berth_backend {
	__u32 addr[4];  /* backend address, network order; IPv4 in addr[0]. An IPv6 backend may be
	                   v4-mapped (::ffff:a.b.c.d) for IPv6 sockets reaching an IPv4 listener */
	__u16 port;     /* backend port, network order */
	__u8 family;    /* BERTH_FAMILY_V4 or BERTH_FAMILY_V6 */
	__u8 pad;       /* zero */
};

/* Reverse-NAT translations a socket keeps (berth_sk_revnat entries): one for a TCP or connected
 * UDP socket; an unconnected UDP socket sending to several VIPs keeps the last few. */
#define BERTH_SK_REVNAT_SLOTS 4

/* One translation: replies from this backend must look as if they came from this VIP. */
struct berth_sk_revnat_ent {
	__u32 be_addr[4];  /* backend address as the socket sees it (v4-mapped on a dual-stack
	                      IPv6 socket), network order; IPv4 in be_addr[0] */
	__u16 be_port;     /* backend port, network order; 0 = empty slot */
	__u16 vip_port;    /* VIP port, network order */
	__u32 vip_addr[4]; /* VIP as the socket asked for it, network order */
};

/* berth_sk_revnat value: per-socket storage (BPF_MAP_TYPE_SK_STORAGE), created at the socket's
 * first balanced connect/sendmsg and freed with the socket: no capacity to run out of, no
 * eviction, no shared lock on the connect path. */
struct berth_sk_revnat {
	struct berth_sk_revnat_ent ent[BERTH_SK_REVNAT_SLOTS];
	__u32 next;        /* slot a new translation takes when none matches (round robin) */
	__u32 pad;         /* zero */
};

/* counters map value (per CPU, indexed by service id). */
struct berth_counters {
	__u64 connects;   /* connects and unconnected UDP sends balanced to a backend */
	__u64 no_backend; /* attempts refused because the service had no backend */
};

/* config map value (array, one entry at index 0). */
struct berth_config {
	__u64 host_netns_cookie; /* netns cookie of the host network namespace (where Envoy listens) */
	__u32 flags;             /* reserved, zero */
	__u32 pad;               /* zero */
};

/* udp_destroy map key: a backend whose connected UDP sockets the iterator destroys. */
struct berth_destroy_key {
	__u32 addr[4];  /* backend address, network order */
	__u16 port;     /* backend port, network order */
	__u8 family;    /* BERTH_FAMILY_V4 or BERTH_FAMILY_V6 */
	__u8 pad;       /* zero */
};

/*
 * Balanced flows (bpf/flows.bpf.c, crossNetwork `allow`). A container's connect to a VIP is
 * rewritten to a backend address that may sit on another Docker network, where Docker's
 * isolation chains drop it. berth_flow_record (cgroup_skb/egress, root cgroup) writes the
 * packet's 5-tuple here when the sending socket's own reverse-NAT storage proves berth balanced
 * it; berth_flow_match (socket filter, run by iptables' xt_bpf in DOCKER-USER) lets exactly
 * those flows' first packets pass and CONNMARKs them, so both directions are accepted.
 */
#define BERTH_MAX_FLOWS (1u << 16)

/* berth_flows map key: one flow as the client sends it (original direction). */
struct berth_flow_key {
	__u32 saddr[4]; /* client address, network order; IPv4 in saddr[0], rest zero */
	__u32 daddr[4]; /* backend address, network order; IPv4 in daddr[0], rest zero */
	__u16 sport;    /* client port, network order */
	__u16 dport;    /* backend port, network order */
	__u8 proto;     /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 family;    /* BERTH_FAMILY_V4 or BERTH_FAMILY_V6 (of the packet, not the socket) */
	__u16 pad;      /* zero */
};

/*
 * Ingress redirect maps (bpf/redirect.bpf.c, redirect mode `ebpf`): (destination, port) ->
 * the Envoy listener to hand the packet to. Keyed by the ingress VIP and its listen port, and by
 * each host address with a publish port (address 0 never occurs: userspace lists them).
 */
#define BERTH_MAX_REDIR 4096

/* berth's proxy mark: 0x200 in the 0xf00 nibble, the listener port (be16) in the upper 16 bits
 * (Cilium's layout: seed 002's 0x43470200 for port 18243). */
#define BERTH_PROXY_MARK 0x200

/* berth_redir4 map key. */
struct berth_redir4_key {
	__u32 addr;     /* destination IPv4 address, network order */
	__u16 port;     /* destination port, network order */
	__u16 pad;      /* zero */
};

/* berth_redir6 map key. */
struct berth_redir6_key {
	__u8 addr[16];  /* destination IPv6 address, network order */
	__u16 port;     /* destination port, network order */
	__u16 pad;      /* zero */
};

/* berth_redir4 / berth_redir6 value. */
struct berth_redir_val {
	__u16 listener_port; /* Envoy listener port, host order */
	__u16 pad;           /* zero */
};

#ifdef __cplusplus
#define _Static_assert static_assert /* C++ spells it without the underscore */
#endif
_Static_assert(sizeof(struct berth_svc_key) == 24, "berth_svc_key size");
_Static_assert(sizeof(struct berth_svc_val) == 8, "berth_svc_val size");
_Static_assert(sizeof(struct berth_backend_key) == 4, "berth_backend_key size");
_Static_assert(sizeof(struct berth_backend) == 20, "berth_backend size");
_Static_assert(sizeof(struct berth_sk_revnat_ent) == 36, "berth_sk_revnat_ent size");
_Static_assert(sizeof(struct berth_sk_revnat) == 4 * 36 + 8, "berth_sk_revnat size");
_Static_assert(sizeof(struct berth_counters) == 16, "berth_counters size");
_Static_assert(sizeof(struct berth_config) == 16, "berth_config size");
_Static_assert(sizeof(struct berth_destroy_key) == 20, "berth_destroy_key size");
_Static_assert(sizeof(struct berth_flow_key) == 40, "berth_flow_key size");
_Static_assert(sizeof(struct berth_client_nets) == 8, "berth_client_nets size");
_Static_assert(sizeof(struct berth_redir4_key) == 8, "berth_redir4_key size");
_Static_assert(sizeof(struct berth_redir6_key) == 20, "berth_redir6_key size");
_Static_assert(sizeof(struct berth_redir_val) == 4, "berth_redir_val size");

#endif /* BERTH_LB_H */
