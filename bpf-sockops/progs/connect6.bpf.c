// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * cgroup/connect6: the IPv6 twin of connect4. A dual-stack socket reaching an
 * IPv4 address (::ffff:a.b.c.d) is captured exactly like connect4 would, to
 * the proxy's IPv4 listener; a native IPv6 destination goes to the proxy's
 * IPv6 address when one is configured.
 */
#include "capture.bpf.h"
#include "policy.bpf.h"

SEC("cgroup/connect6")
int sm_connect6(struct bpf_sock_addr *ctx)
{
	struct sm_config *cfg;
	struct sm_orig_dst6 orig = {};
	__u32 dip[4];
	__u16 dport;
	__u64 cookie;

	if (!sm_is_tcp(ctx))
		return 1;
	cfg = sm_get_config();
	if (!cfg || !cfg->proxy_port)
		return 1;
	dip[0] = ctx->user_ip6[0];
	dip[1] = ctx->user_ip6[1];
	dip[2] = ctx->user_ip6[2];
	dip[3] = ctx->user_ip6[3];
	dport = sm_port_from_be(ctx->user_port);

	if (sm_is_v4mapped(dip)) {
		if (!cfg->proxy_ip4 || !sm_is_meshed() || sm_is_excluded4(cfg, dip[3], dport))
			return 1;
		if (sm_policy_verdict(1, dip[3], dport) == SM_VERDICT_DENY)
			return 0;
		if (sm_remember4(ctx, dip[3], dport))
			return 1;
		ctx->user_ip6[3] = cfg->proxy_ip4;
	} else {
		if (!cfg->has_ip6 || !sm_is_meshed() || sm_is_excluded6(cfg, dip, dport))
			return 1;
		orig.ip6[0] = dip[0];
		orig.ip6[1] = dip[1];
		orig.ip6[2] = dip[2];
		orig.ip6[3] = dip[3];
		orig.port = dport;
		cookie = bpf_get_socket_cookie(ctx);
		if (bpf_map_update_elem(&sm_orig6_by_cookie, &cookie, &orig, BPF_ANY)) {
			sm_count(SM_CNT_MAP_FULL);
			return 1;
		}
		ctx->user_ip6[0] = cfg->proxy_ip6[0];
		ctx->user_ip6[1] = cfg->proxy_ip6[1];
		ctx->user_ip6[2] = cfg->proxy_ip6[2];
		ctx->user_ip6[3] = cfg->proxy_ip6[3];
	}
	ctx->user_port = bpf_htons(cfg->proxy_port);
	sm_count(SM_CNT_CONNECT_REDIRECTED);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
