/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Map definitions shared by every hook. Each hook is its own object file; the
 * maps are pinned by name under the node's bpffs directory, so the loader's
 * first object creates them and every later object (and every later agent
 * process) reuses the same kernel maps.
 */
#ifndef SOCKMESH_MAPS_BPF_H
#define SOCKMESH_MAPS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "sockmesh.h"

#define SM_AF_INET 2

/* Meshed workloads, keyed by cgroup v2 id. Why cgroup id and not netns cookie:
 * connect4 runs in the caller's task context, where the cgroup is exactly
 * "which workload is this" whatever netns it shares (a hostNetwork pod shares
 * the node netns with the proxy, yet must be told apart from it); the agent
 * learns pod cgroups from the runtime, and the node proxy sits in a system
 * cgroup that is never enrolled, so it can never be redirected by mistake. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SM_MAX_PODS);
	__type(key, __u64);
	__type(value, struct sm_pod);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_pods SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sm_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SM_MAX_EXCLUDED_PORTS);
	__type(key, __u16);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_excl_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, SM_MAX_EXCLUDED_CIDRS);
	__type(key, struct sm_cidr4_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_excl_cidrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, SM_MAX_EXCLUDED_CIDRS);
	__type(key, struct sm_cidr6_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_excl_cidrs6 SEC(".maps");

/* connect4 -> sockops hand-off, keyed by socket cookie. Entries live from
 * connect() until the handshake ends (or fails: sockops cleans up on close). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SM_MAX_CONNS);
	__type(key, __u64);
	__type(value, struct sm_orig_dst);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_orig_by_cookie SEC(".maps");

/* What the proxy reads: original destination by the connection's 4-tuple as
 * the app's socket sees it (= peer/local of the proxy's accepted socket). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SM_MAX_CONNS);
	__type(key, struct sm_tuple4);
	__type(value, struct sm_orig_dst);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_orig_by_tuple SEC(".maps");

/* The IPv6 counterparts of the two maps above (connect6). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SM_MAX_CONNS);
	__type(key, __u64);
	__type(value, struct sm_orig_dst6);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_orig6_by_cookie SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SM_MAX_CONNS);
	__type(key, struct sm_tuple6);
	__type(value, struct sm_orig_dst6);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_orig6_by_tuple SEC(".maps");

/* Local sockets with a local peer, keyed by their own 4-tuple; sk_msg looks
 * up the reversed tuple to find the peer. The kernel drops a socket from a
 * sockhash when it closes. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, SM_MAX_CONNS);
	__type(key, struct sm_tuple4);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_sockhash SEC(".maps");

/* The same for native IPv6 sockets. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, SM_MAX_CONNS);
	__type(key, struct sm_tuple6);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_sockhash6 SEC(".maps");

/* Permissive pods whose inbound plaintext the proxy takes (sk_lookup), keyed by
 * pod IPv4 address (network order). Separate from the listener sockhash so a
 * pod whose listener is gone (agent restarting) is refused, not let through. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SM_MAX_PODS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_inbound_pods SEC(".maps");

/* The proxy's listening socket inside each such pod's netns, by pod IPv4. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, SM_MAX_PODS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_inbound_listeners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SM_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_counters SEC(".maps");

static __always_inline void sm_count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&sm_counters, &idx);

	if (v)
		*v += 1;
}

static __always_inline struct sm_config *sm_get_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&sm_config, &zero);
}

/* How far up the cgroup tree a pod's membership reaches: containers of a pod
 * live in child cgroups of the pod cgroup. */
#define SM_MAX_CGROUP_DEPTH 16

/* Who reaches a meshed pod without being captured or checked: the proxy (it
 * delivers what it allowed), loopback and the pod itself. */
static __always_inline int sm_allowed4(const struct sm_config *cfg, __u32 saddr, __u32 daddr)
{
	if (saddr == daddr) /* the pod itself */
		return 1;
	if ((bpf_ntohl(saddr) >> 24) == 127)
		return 1;
	/* 0 = no proxy configured: strict pods then only talk to themselves. */
	return cfg && cfg->proxy_ip4 && saddr == cfg->proxy_ip4;
}

static __always_inline int sm_allowed6(const struct sm_config *cfg, const __u32 *s, const __u32 *d)
{
	if (s[0] == d[0] && s[1] == d[1] && s[2] == d[2] && s[3] == d[3])
		return 1;
	if (s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == bpf_htonl(1)) /* ::1 */
		return 1;
	return cfg && cfg->has_ip6 && s[0] == cfg->proxy_ip6[0] && s[1] == cfg->proxy_ip6[1] &&
	       s[2] == cfg->proxy_ip6[2] && s[3] == cfg->proxy_ip6[3];
}

/* Host-order port from a context field documented as "network byte order".
 * Older kernels hand remote ports over as be16 shifted into the upper half of
 * a u32, newer ones as a plain be16: accept both. */
static __always_inline __u16 sm_port_from_be(__u32 raw)
{
	if (raw > 0xffff)
		return (__u16)bpf_ntohl(raw);
	return bpf_ntohs((__u16)raw);
}

/* ::ffff:a.b.c.d, as a dual-stack (AF_INET6) socket sees an IPv4 peer. */
static __always_inline int sm_is_v4mapped(const __u32 *ip6)
{
	return ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0x0000ffff);
}

#endif
