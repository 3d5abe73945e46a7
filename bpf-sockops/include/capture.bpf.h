/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The capture decision shared by connect4 and connect6 (which also sees IPv4
 * destinations, as ::ffff:a.b.c.d, from dual-stack sockets).
 */
#ifndef SOCKMESH_CAPTURE_BPF_H
#define SOCKMESH_CAPTURE_BPF_H

#include "maps.bpf.h"

static __always_inline int sm_is_meshed(void)
{
	__u64 id = bpf_get_current_cgroup_id();

	if (bpf_map_lookup_elem(&sm_pods, &id))
		return 1;
	for (int level = SM_MAX_CGROUP_DEPTH; level >= 1; level--) {
		id = bpf_get_current_ancestor_cgroup_id(level);
		if (id && bpf_map_lookup_elem(&sm_pods, &id))
			return 1;
	}
	return 0;
}

static __always_inline int sm_is_tcp(const struct bpf_sock_addr *ctx)
{
	return ctx->type == SOCK_STREAM && (ctx->protocol == IPPROTO_TCP || ctx->protocol == 0);
}

static __always_inline int sm_is_excluded4(const struct sm_config *cfg, __u32 dip, __u16 dport)
{
	struct sm_cidr4_key k = { .prefixlen = 32, .ip4 = dip };

	/* The proxy's own address: redirecting it would loop. */
	if (dip == cfg->proxy_ip4)
		return 1;
	/* Loopback is the workload's own netns, never another service. */
	if ((bpf_ntohl(dip) >> 24) == 127)
		return 1;
	if (bpf_map_lookup_elem(&sm_excl_ports, &dport))
		return 1;
	if (bpf_map_lookup_elem(&sm_excl_cidrs, &k))
		return 1;
	return 0;
}

static __always_inline int sm_is_excluded6(const struct sm_config *cfg, const __u32 *dip, __u16 dport)
{
	struct sm_cidr6_key k = { .prefixlen = 128 };

	if (dip[0] == cfg->proxy_ip6[0] && dip[1] == cfg->proxy_ip6[1] && dip[2] == cfg->proxy_ip6[2] &&
	    dip[3] == cfg->proxy_ip6[3])
		return 1;
	if (dip[0] == 0 && dip[1] == 0 && dip[2] == 0 && dip[3] == bpf_htonl(1)) /* ::1 */
		return 1;
	if (bpf_map_lookup_elem(&sm_excl_ports, &dport))
		return 1;
	k.ip6[0] = dip[0];
	k.ip6[1] = dip[1];
	k.ip6[2] = dip[2];
	k.ip6[3] = dip[3];
	if (bpf_map_lookup_elem(&sm_excl_cidrs6, &k))
		return 1;
	return 0;
}

/* Records the original IPv4 destination under the socket cookie; 0 on success.
 * Without a record the proxy could not route it, so the caller leaves the
 * connection alone on failure. */
static __always_inline int sm_remember4(void *ctx, __u32 dip, __u16 dport)
{
	struct sm_orig_dst orig = { .ip4 = dip, .port = dport };
	__u64 cookie = bpf_get_socket_cookie(ctx);

	if (bpf_map_update_elem(&sm_orig_by_cookie, &cookie, &orig, BPF_ANY)) {
		sm_count(SM_CNT_MAP_FULL);
		return -1;
	}
	return 0;
}

#endif
