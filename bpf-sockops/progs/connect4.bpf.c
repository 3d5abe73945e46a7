// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * cgroup/connect4: catch a meshed workload's outbound TCP connect() and send it
 * to the node proxy's outbound listener, remembering where it was going.
 */
#include "capture.bpf.h"
#include "policy.bpf.h"

SEC("cgroup/connect4")
int sm_connect4(struct bpf_sock_addr *ctx)
{
	struct sm_config *cfg;
	__u32 dip;
	__u16 dport;

	if (!sm_is_tcp(ctx))
		return 1;
	cfg = sm_get_config();
	if (!cfg || !cfg->proxy_ip4 || !cfg->proxy_port)
		return 1;
	if (!sm_is_meshed())
		return 1;

	dip = ctx->user_ip4;
	dport = sm_port_from_be(ctx->user_port);
	if (sm_is_excluded4(cfg, dip, dport))
		return 1;
	if (sm_policy_verdict(1, dip, dport) == SM_VERDICT_DENY)
		return 0;
	if (sm_remember4(ctx, dip, dport))
		return 1;
	ctx->user_ip4 = cfg->proxy_ip4;
	ctx->user_port = bpf_htons(cfg->proxy_port);
	sm_count(SM_CNT_CONNECT_REDIRECTED);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
