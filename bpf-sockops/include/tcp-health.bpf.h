/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TCP health per workload pair, fed by sockops callbacks (RTT, RETRANS, RTO,
 * STATE). The kernel cannot tell which workloads a proxy socket serves, so the
 * agent tags each connection it makes or accepts by 4-tuple (sm_tcp_tags); a
 * socket looks its tag up on its first callbacks and keeps the answer in
 * socket storage, so the steady state costs one storage read and one LRU
 * update per callback. Sockets nobody tags stop asking after a few tries.
 */
#ifndef SOCKMESH_TCP_HEALTH_BPF_H
#define SOCKMESH_TCP_HEALTH_BPF_H

#include "maps.bpf.h"
#include <bpf/bpf_core_read.h>

/* Tags by the 4-tuple as one end sees it. src_port 0 is a dial tag: any local
 * port from src_ip4 to dst, set before connect() so a failed connect (which
 * the agent never learns the port of) is still attributed. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SM_MAX_TCP_TAGS);
	__type(key, struct sm_tuple4);
	__type(value, struct sm_tcp_pair);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_tcp_tags SEC(".maps");

/* Bounded aggregate: the least recently updated pair goes first. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SM_MAX_TCP_PAIRS);
	__type(key, struct sm_tcp_pair);
	__type(value, struct sm_tcp_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_tcp_pairs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sm_tcp_cfg);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_tcp_cfg SEC(".maps");

/* Names of the ids in tags, written by the agent (status tools read them back). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SM_MAX_PODS);
	__type(key, __u32);
	__type(value, struct sm_tcp_workload);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_tcp_workloads SEC(".maps");

#define SM_TCP_UNRESOLVED 0
#define SM_TCP_RESOLVED 1
#define SM_TCP_UNTAGGED 2 /* gave up: nobody tagged it */
#define SM_TCP_MAX_TRIES 64

struct sm_tcp_sk {
	struct sm_tcp_pair pair;
	__u32 state;
	__u32 tries;
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sm_tcp_sk);
} sm_tcp_sk SEC(".maps");

#define SM_TCP_EVENT_FLAGS (BPF_SOCK_OPS_RTT_CB_FLAG | BPF_SOCK_OPS_RETRANS_CB_FLAG | BPF_SOCK_OPS_RTO_CB_FLAG)

static __always_inline int sm_tcp_health_on(void)
{
	__u32 zero = 0;
	struct sm_tcp_cfg *cfg = bpf_map_lookup_elem(&sm_tcp_cfg, &zero);

	return cfg && cfg->enabled;
}

static __always_inline struct sm_tcp_stats *sm_tcp_stats_of(const struct sm_tcp_pair *pair)
{
	struct sm_tcp_stats *st = bpf_map_lookup_elem(&sm_tcp_pairs, pair);
	struct sm_tcp_stats zero = {};

	if (st)
		return st;
	bpf_map_update_elem(&sm_tcp_pairs, pair, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&sm_tcp_pairs, pair);
}

static __always_inline void sm_tcp_tuple_of(struct bpf_sock_ops *skops, struct sm_tuple4 *t)
{
	t->src_ip4 = skops->local_ip4;
	t->dst_ip4 = skops->remote_ip4;
	t->src_port = (__u16)skops->local_port;
	t->dst_port = sm_port_from_be(skops->remote_port);
}

/* The tag of this connection, by its own tuple. Only the end the agent tagged
 * (its own socket) is measured: a node-local connection counts once, not once
 * per end. */
static __always_inline struct sm_tcp_pair *sm_tcp_find_tag(struct bpf_sock_ops *skops)
{
	struct sm_tuple4 t = {};

	sm_tcp_tuple_of(skops, &t);
	return bpf_map_lookup_elem(&sm_tcp_tags, &t);
}

/* The dial tag of a connect() from this address to this destination. */
static __always_inline struct sm_tcp_pair *sm_tcp_find_dial(struct bpf_sock_ops *skops)
{
	struct sm_tuple4 t = {};

	sm_tcp_tuple_of(skops, &t);
	t.src_port = 0;
	return bpf_map_lookup_elem(&sm_tcp_tags, &t);
}

/* The socket's pair once known; counts the connection when it first resolves. */
static __always_inline struct sm_tcp_sk *sm_tcp_resolve(struct bpf_sock_ops *skops, int create)
{
	struct bpf_sock *sk = skops->sk;
	struct sm_tcp_sk *s;
	struct sm_tcp_pair *tag;
	struct sm_tcp_stats *st;

	if (!sk)
		return 0;
	s = bpf_sk_storage_get(&sm_tcp_sk, sk, 0, create ? BPF_SK_STORAGE_GET_F_CREATE : 0);
	if (!s || s->state != SM_TCP_UNRESOLVED)
		return s;
	tag = sm_tcp_find_tag(skops);
	if (!tag) {
		if (++s->tries >= SM_TCP_MAX_TRIES) {
			s->state = SM_TCP_UNTAGGED;
			/* Stop paying for a socket nobody will tag (the state callback stays: capture needs it). */
			bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags & ~SM_TCP_EVENT_FLAGS);
		}
		return s;
	}
	s->pair = *tag;
	s->state = SM_TCP_RESOLVED;
	st = sm_tcp_stats_of(&s->pair);
	if (st)
		__sync_fetch_and_add(&st->connections, 1);
	return s;
}

/* connect() to a dialled destination: follow its states, so a failed handshake counts. */
static __always_inline void sm_tcp_health_connecting(struct bpf_sock_ops *skops)
{
	if (skops->family != SM_AF_INET || !sm_tcp_health_on() || !sm_tcp_find_dial(skops))
		return;
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

static __always_inline void sm_tcp_health_established(struct bpf_sock_ops *skops)
{
	struct sm_tcp_sk *s;

	if (skops->family != SM_AF_INET || !sm_tcp_health_on())
		return;
	s = sm_tcp_resolve(skops, 1);
	if (!s || s->state == SM_TCP_UNTAGGED)
		return;
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG |
						 SM_TCP_EVENT_FLAGS);
}

static __always_inline void sm_tcp_health_event(struct bpf_sock_ops *skops, __u32 op)
{
	struct sm_tcp_sk *s = sm_tcp_resolve(skops, 0);
	struct sm_tcp_stats *st;
	struct tcp_sock *tp;

	if (!s || s->state != SM_TCP_RESOLVED)
		return;
	st = sm_tcp_stats_of(&s->pair);
	if (!st)
		return;
	if (op == BPF_SOCK_OPS_RETRANS_CB) {
		/* args: seq, segments, result of the transmit (0 = sent) */
		if (skops->args[2] == 0)
			__sync_fetch_and_add(&st->retransmits, skops->args[1]);
		return;
	}
	if (op == BPF_SOCK_OPS_RTO_CB) {
		__sync_fetch_and_add(&st->rtos, 1);
		return;
	}
	/* RTT: the kernel keeps srtt << 3 and mdev << 2. */
	{
		struct bpf_sock *sk = skops->sk;
		__u32 srtt = skops->srtt_us >> 3;
		__u32 mdev = 0;

		tp = sk ? bpf_skc_to_tcp_sock(sk) : 0;
		if (tp)
			mdev = BPF_CORE_READ(tp, mdev_us) >> 2;
		__sync_fetch_and_add(&st->rtt_samples, 1);
		__sync_fetch_and_add(&st->srtt_sum_us, srtt);
		__sync_fetch_and_add(&st->rttvar_sum_us, mdev);
		st->srtt_us = srtt;
		st->rttvar_us = mdev;
	}
}

/* args[0] old state, args[1] new state. */
static __always_inline void sm_tcp_health_state(struct bpf_sock_ops *skops)
{
	struct sm_tcp_pair *dial;
	struct bpf_sock *sk;
	struct sm_tcp_sk *s;
	struct sm_tcp_stats *st;
	struct tcp_sock *tp;
	int err = 0;

	if (skops->args[1] != BPF_TCP_CLOSE || skops->family != SM_AF_INET)
		return;
	if (skops->args[0] == BPF_TCP_SYN_SENT) {
		/* Refused, unreachable or timed out before the agent could tag it. */
		dial = sm_tcp_find_dial(skops);
		st = dial ? sm_tcp_stats_of(dial) : 0;
		if (st)
			__sync_fetch_and_add(&st->failures, 1);
		return;
	}
	s = sm_tcp_resolve(skops, 0);
	if (!s || s->state != SM_TCP_RESOLVED)
		return;
	sk = skops->sk;
	tp = sk ? bpf_skc_to_tcp_sock(sk) : 0;
	if (tp)
		err = BPF_CORE_READ((struct sock *)tp, sk_err);
	/* A reset or a timeout ended it (a clean close leaves no error). */
	if (!err)
		return;
	st = sm_tcp_stats_of(&s->pair);
	if (st)
		__sync_fetch_and_add(&st->failures, 1);
}

#endif
