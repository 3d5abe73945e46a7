// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * sockops: when a connection is established, move its original destination
 * from the cookie map to the 4-tuple map the proxy reads, and put sockets with
 * a local peer into the sockhash for sk_msg. On close, delete what it made.
 * With TCP health on, it also feeds the per-workload-pair TCP statistics.
 */
#include "maps.bpf.h"
#include "tcp-health.bpf.h"
#include <bpf/bpf_core_read.h>

#define SM_AF_INET6 10

/* A socket's addresses, read from the context exactly once: the verifier
 * rejects context loads at computed offsets, which clang produces when it
 * merges several similar reads of local_ip6/remote_ip6. */
struct sm_addrs {
	__u32 l6[4];
	__u32 r6[4];
	__u16 lport;
	__u16 rport;
	/* 1 if IPv4, or IPv6 with v4-mapped addresses on both ends */
	int v4;
};

static __always_inline void sm_load_addrs(struct bpf_sock_ops *skops, struct sm_addrs *a)
{
	a->lport = (__u16)skops->local_port;
	a->rport = sm_port_from_be(skops->remote_port);
	if (skops->family == SM_AF_INET) {
		a->l6[3] = skops->local_ip4;
		a->r6[3] = skops->remote_ip4;
		a->v4 = 1;
		return;
	}
	a->l6[0] = skops->local_ip6[0];
	a->l6[1] = skops->local_ip6[1];
	a->l6[2] = skops->local_ip6[2];
	a->l6[3] = skops->local_ip6[3];
	a->r6[0] = skops->remote_ip6[0];
	a->r6[1] = skops->remote_ip6[1];
	a->r6[2] = skops->remote_ip6[2];
	a->r6[3] = skops->remote_ip6[3];
	a->v4 = sm_is_v4mapped(a->l6) && sm_is_v4mapped(a->r6);
}

static __always_inline void sm_tuple4_of(const struct sm_addrs *a, struct sm_tuple4 *t)
{
	t->src_ip4 = a->l6[3];
	t->dst_ip4 = a->r6[3];
	t->src_port = a->lport;
	t->dst_port = a->rport;
}

static __always_inline void sm_tuple6_of(const struct sm_addrs *a, struct sm_tuple6 *t)
{
	__builtin_memcpy(t->src_ip6, a->l6, sizeof(t->src_ip6));
	__builtin_memcpy(t->dst_ip6, a->r6, sizeof(t->dst_ip6));
	t->src_port = a->lport;
	t->dst_port = a->rport;
}

static __always_inline void sm_track_cb(struct bpf_sock_ops *skops)
{
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

/* kernfs_node's parent pointer, before and after its rename to __parent (6.15). */
struct kernfs_node___new {
	struct kernfs_node___new *__parent;
	__u64 id;
} __attribute__((preserve_access_index));
struct kernfs_node___old {
	struct kernfs_node___old *parent;
	__u64 id;
} __attribute__((preserve_access_index));

/* Whether the socket belongs to an enrolled pod: its cgroup (set when the socket
 * was made; an accepted one inherits its listener's) or the nearest ancestor,
 * since a pod's containers live in child cgroups of the pod cgroup. sockops
 * runs in softirq for most callbacks, so the current task says nothing. */
static __always_inline int sm_sock_in_meshed_pod(struct bpf_sock_ops *skops)
{
	struct bpf_sock *bsk = skops->sk;
	struct tcp_sock *tp;
	void *kn;
	__u64 id;

	if (!bsk)
		return 0;
	tp = bpf_skc_to_tcp_sock(bsk);
	if (!tp)
		return 0;
	kn = BPF_CORE_READ((struct sock *)tp, sk_cgrp_data.cgroup, kn);
	for (int level = 0; level < SM_MAX_CGROUP_DEPTH && kn; level++) {
		id = BPF_CORE_READ((struct kernfs_node___new *)kn, id);
		if (bpf_map_lookup_elem(&sm_pods, &id))
			return 1;
		kn = bpf_core_field_exists(((struct kernfs_node___new *)0)->__parent)
			     ? (void *)BPF_CORE_READ((struct kernfs_node___new *)kn, __parent)
			     : (void *)BPF_CORE_READ((struct kernfs_node___old *)kn, parent);
	}
	return 0;
}

/* Both ends are on this node when one of them is the node proxy: pod <-> proxy
 * (the proxy's accepted socket), proxy <-> local pod (the proxy connects from
 * the bridge address). Other pairs are never inserted, so two unrelated
 * netns can never be spliced by a coincidentally mirrored 4-tuple. The pod's
 * end goes in only when the pod is enrolled: a socket in a sockhash reads
 * through tcp_bpf, and a pod outside the mesh (one the proxy passes traffic
 * to) must never be touched. */
static __always_inline void sm_maybe_accelerate(struct bpf_sock_ops *skops, struct sm_tuple4 *t)
{
	struct sm_config *cfg = sm_get_config();
	long err;

	if (!cfg || !cfg->accel || !cfg->proxy_ip4)
		return;
	if (t->src_ip4 != cfg->proxy_ip4 && t->dst_ip4 != cfg->proxy_ip4)
		return;
	if (t->src_ip4 != cfg->proxy_ip4 && !sm_sock_in_meshed_pod(skops))
		return;
	err = bpf_sock_hash_update(skops, &sm_sockhash, t, BPF_ANY);
	if (err == 0)
		sm_count(SM_CNT_SOCK_ACCELERATED);
	else if (err == -7 /* E2BIG */ || err == -12 /* ENOMEM */ || err == -28 /* ENOSPC */)
		sm_count(SM_CNT_MAP_FULL);
	else
		sm_count(SM_CNT_FALLBACK);
}

static __always_inline int sm_is_proxy6(const struct sm_config *cfg, const __u32 *ip6)
{
	return ip6[0] == cfg->proxy_ip6[0] && ip6[1] == cfg->proxy_ip6[1] && ip6[2] == cfg->proxy_ip6[2] &&
	       ip6[3] == cfg->proxy_ip6[3];
}

static __always_inline void sm_maybe_accelerate6(struct bpf_sock_ops *skops, struct sm_tuple6 *t)
{
	struct sm_config *cfg = sm_get_config();
	long err;

	if (!cfg || !cfg->accel || !cfg->has_ip6)
		return;
	if (!sm_is_proxy6(cfg, t->src_ip6) && !sm_is_proxy6(cfg, t->dst_ip6))
		return;
	if (!sm_is_proxy6(cfg, t->src_ip6) && !sm_sock_in_meshed_pod(skops))
		return;
	err = bpf_sock_hash_update(skops, &sm_sockhash6, t, BPF_ANY);
	if (err == 0)
		sm_count(SM_CNT_SOCK_ACCELERATED);
	else if (err == -7 /* E2BIG */ || err == -12 /* ENOMEM */ || err == -28 /* ENOSPC */)
		sm_count(SM_CNT_MAP_FULL);
	else
		sm_count(SM_CNT_FALLBACK);
}

/* Moves a cookie-keyed original destination to its tuple map; 1 if there was one. */
static __always_inline int sm_promote(void *by_cookie, void *by_tuple, __u64 *cookie, void *tuple)
{
	void *orig = bpf_map_lookup_elem(by_cookie, cookie);

	if (!orig)
		return 0;
	if (bpf_map_update_elem(by_tuple, tuple, orig, BPF_ANY) == 0)
		sm_count(SM_CNT_CONN_TRACKED);
	else
		sm_count(SM_CNT_MAP_FULL);
	bpf_map_delete_elem(by_cookie, cookie);
	return 1;
}

SEC("sockops")
int sm_sockops(struct bpf_sock_ops *skops)
{
	struct sm_addrs a = {};
	struct sm_tuple4 t = {};
	struct sm_tuple6 t6 = {};
	__u64 cookie;
	__u32 op = skops->op;

	if (skops->family != SM_AF_INET && skops->family != SM_AF_INET6)
		return 1;
	if (op == BPF_SOCK_OPS_RTT_CB || op == BPF_SOCK_OPS_RETRANS_CB || op == BPF_SOCK_OPS_RTO_CB) {
		sm_tcp_health_event(skops, op);
		return 1;
	}
	if (op != BPF_SOCK_OPS_TCP_CONNECT_CB && op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB &&
	    op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_STATE_CB)
		return 1;
	cookie = bpf_get_socket_cookie(skops);
	if (op == BPF_SOCK_OPS_TCP_CONNECT_CB) {
		/* A redirected connect that never completes must still clean up. */
		if (bpf_map_lookup_elem(&sm_orig_by_cookie, &cookie) ||
		    bpf_map_lookup_elem(&sm_orig6_by_cookie, &cookie))
			sm_track_cb(skops);
		sm_tcp_health_connecting(skops);
		return 1;
	}
	if (op == BPF_SOCK_OPS_STATE_CB)
		sm_tcp_health_state(skops);
	/* args[1] of a state change is the new state. The sockhash entry goes with the socket. */
	if (op == BPF_SOCK_OPS_STATE_CB && skops->args[1] != BPF_TCP_CLOSE)
		return 1;

	sm_load_addrs(skops, &a);
	if (a.v4)
		sm_tuple4_of(&a, &t);
	else
		sm_tuple6_of(&a, &t6);

	if (op == BPF_SOCK_OPS_STATE_CB) {
		if (a.v4) {
			bpf_map_delete_elem(&sm_orig_by_tuple, &t);
			bpf_map_delete_elem(&sm_orig_by_cookie, &cookie);
		} else {
			bpf_map_delete_elem(&sm_orig6_by_tuple, &t6);
			bpf_map_delete_elem(&sm_orig6_by_cookie, &cookie);
		}
		return 1;
	}
	if (op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB) {
		if (a.v4 ? sm_promote(&sm_orig_by_cookie, &sm_orig_by_tuple, &cookie, &t)
			 : sm_promote(&sm_orig6_by_cookie, &sm_orig6_by_tuple, &cookie, &t6))
			sm_track_cb(skops);
	}
	if (a.v4)
		sm_maybe_accelerate(skops, &t);
	else
		sm_maybe_accelerate6(skops, &t6);
	sm_tcp_health_established(skops);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
