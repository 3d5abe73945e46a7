/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Layouts shared by the kernel programs (progs/NAME.bpf.c) and the loader addon
 * (addon/src/): one definition, so both sides agree byte for byte. The TS
 * wrapper checks its encoders against the sizes the addon reports from here.
 *
 * Byte order: IPv4 addresses are kept in network order (as the kernel hands
 * them over in user_ip4/local_ip4/remote_ip4); ports are kept in host order,
 * because the kernel is inconsistent about port byte order across contexts.
 */
#ifndef SOCKMESH_H
#define SOCKMESH_H

#ifndef __VMLINUX_H__
#include <linux/types.h>

#endif

#define SM_MAX_CONNS 65536
#define SM_MAX_PODS 16384
#define SM_MAX_EXCLUDED_PORTS 1024
#define SM_MAX_EXCLUDED_CIDRS 1024

/* Key of the per-connection maps and of the sockhash: a TCP connection as one
 * of its ends sees it (src = that end's local address). */
struct sm_tuple4 {
	__u32 src_ip4;
	__u32 dst_ip4;
	__u16 src_port;
	__u16 dst_port;
};

/* Where a captured connection was really going. */
struct sm_orig_dst {
	__u32 ip4;
	__u16 port;
	__u16 flags; /* reserved, 0 */
};

/* IPv6 flavours: addresses as four network-order words (bpf_sock_addr.user_ip6). */
struct sm_tuple6 {
	__u32 src_ip6[4];
	__u32 dst_ip6[4];
	__u16 src_port;
	__u16 dst_port;
};

struct sm_orig_dst6 {
	__u32 ip6[4];
	__u16 port;
	__u16 flags; /* reserved, 0 */
};

/* Single entry (index 0) of sm_config: written by the agent, read by every hook. */
struct sm_config {
	__u32 proxy_ip4; /* 0 = not configured: nothing is redirected */
	__u16 proxy_port;
	__u8 accel;      /* 1 = sk_msg redirects between local peers */
	__u8 has_ip6;    /* 1 = proxy_ip6 is set: IPv6 connects are captured too */
	__u32 proxy_ip6[4];
};

/* Value of sm_pods: how a meshed workload is treated. Its size is also the pin
 * layout guard: pins of the older 4-byte membership value are refused. */
enum sm_pod_mode {
	SM_MODE_PERMISSIVE = 0, /* inbound plaintext from anywhere is accepted */
	SM_MODE_STRICT = 1,     /* inbound only through the node proxy, loopback or itself */
};

struct sm_pod {
	__u32 mode;  /* enum sm_pod_mode */
	__u32 flags; /* reserved, 0 */
};

/* LPM trie keys for excluded destination CIDRs. */
struct sm_cidr4_key {
	__u32 prefixlen;
	__u32 ip4;
};

struct sm_cidr6_key {
	__u32 prefixlen;
	__u32 ip6[4];
};

/* Indices of the per-CPU counter array. */
enum sm_counter {
	SM_CNT_CONNECT_REDIRECTED = 0,
	SM_CNT_CONN_TRACKED = 1,
	SM_CNT_MSG_REDIRECTED = 2,
	SM_CNT_FALLBACK = 3,
	SM_CNT_MAP_FULL = 4,
	SM_CNT_SOCK_ACCELERATED = 5,
	SM_CNT_PLAINTEXT_REFUSED = 6,
	SM_CNT_BACKPRESSURED = 7, /* sk_msg sent a message the TCP way: reader slow or TCP bytes unread */
	SM_CNT_INBOUND_CAPTURED = 8, /* sk_lookup handed plaintext for a permissive pod to the proxy */
	SM_CNT_INBOUND_REFUSED = 9,  /* ... or refused it: the proxy's listener for that pod is gone */
	SM_CNT_MAX = 16,
};

/* TCP health (include/tcp-health.bpf.h): kernel TCP statistics per workload
 * pair, for the connections the agent tags. */
#define SM_MAX_TCP_PAIRS 4096
#define SM_MAX_TCP_TAGS 65536
#define SM_TCP_WORKLOAD_NAME 128

/* Which hop of a meshed call a connection is. */
enum sm_tcp_leg {
	SM_LEG_UNKNOWN = 0,
	SM_LEG_TUNNEL = 1,    /* node agent -> node agent, mTLS on 15008 */
	SM_LEG_POD_PROXY = 2, /* captured pod -> its node proxy */
	SM_LEG_PROXY_POD = 3, /* node proxy -> destination pod on the same node */
};

/* Key of sm_tcp_pairs and value of sm_tcp_tags: workloads by the agent's ids
 * (0 = unknown). */
struct sm_tcp_pair {
	__u32 src_workload;
	__u32 dst_workload;
	__u32 leg; /* enum sm_tcp_leg */
	__u32 reserved;
};

/* Value of sm_tcp_pairs: counters since the pair was first seen (an LRU
 * eviction starts it again), RTTs in microseconds. */
struct sm_tcp_stats {
	__u64 connections; /* connections attributed to the pair */
	__u64 failures;    /* connect failed, or ended by a reset or a timeout */
	__u64 retransmits; /* segments retransmitted */
	__u64 rtos;        /* retransmission timeouts */
	__u64 rtt_samples;
	__u64 srtt_sum_us;   /* sum of the smoothed RTT at each sample */
	__u64 rttvar_sum_us; /* sum of the mean deviation (jitter) at each sample */
	__u32 srtt_us;       /* at the latest sample */
	__u32 rttvar_us;     /* at the latest sample */
};

/* Single entry (index 0) of sm_tcp_cfg. */
struct sm_tcp_cfg {
	__u32 enabled; /* 1 = connections get the RTT/retransmit/RTO/state callbacks */
	__u32 reserved;
};

/* Value of sm_tcp_workloads: "namespace/workload" of an id, NUL-padded. */
struct sm_tcp_workload {
	char name[SM_TCP_WORKLOAD_NAME];
};

/*
 * Kernel L4 authorization (include/policy.bpf.h). Two generations of rules
 * live side by side; a verdict reads one generation only, checked by that
 * generation's epoch (odd = being written), so a rule set is never seen half
 * loaded. Identity ids are the control plane's, 0 = an unauthenticated
 * (plaintext) caller.
 */
#define SM_MAX_POLICY_RULES 100000  /* per generation; the map holds two */
#define SM_MAX_POLICY_DESTS 65536   /* destination pod addresses, per generation */
#define SM_MAX_POLICY_COUNTERS 4096 /* policies with their own allowed/denied counters */
#define SM_POLICY_PLAINTEXT 0
#define SM_POLICY_ANY_PORT 0        /* a rule for every port the destination's policies do not name */

enum sm_policy_state_slot {
	SM_POLICY_ACTIVE = 0, /* which generation (0 or 1) verdicts read */
	SM_POLICY_EPOCH0 = 1, /* epoch of generation 0 */
	SM_POLICY_EPOCH1 = 2,
	SM_POLICY_STATE_SLOTS = 3,
};

enum sm_verdict {
	SM_VERDICT_PASS = 0, /* the kernel cannot decide: the proxy does */
	SM_VERDICT_ALLOW = 1,
	SM_VERDICT_DENY = 2,
};

struct sm_policy_key {
	__u32 gen;
	__u32 source; /* caller identity id */
	__u32 dest;   /* destination policy set id */
	__u16 port;   /* destination (pod) port, or SM_POLICY_ANY_PORT */
	__u16 pad;
};

struct sm_policy_verdict {
	__u32 verdict; /* enum sm_verdict */
	__u32 policy;  /* counter index */
};

struct sm_policy_dest_key {
	__u32 gen;
	__u32 ip4;
};

/* Value of sm_pol_sources (keyed by pod cgroup id): the pod's identity id in each generation. */
struct sm_policy_source {
	__u32 id[2];
};

struct sm_policy_count {
	__u64 allowed;
	__u64 denied;
};

#endif
