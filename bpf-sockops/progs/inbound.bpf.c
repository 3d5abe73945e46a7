// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * sk_lookup, attached to the network namespace of each permissive pod: a TCP
 * connection arriving for the pod from anywhere but the node proxy is handed
 * to the proxy's listener inside that netns (port 15006), which applies
 * authorization to the plaintext and relays what it allows to the pod. The
 * accepted socket keeps the pod's address and port as its local end, so the
 * original destination needs no map. No address is rewritten, no iptables.
 * Plaintext that L4 policy denies to an unauthenticated caller is dropped
 * here (the client gets a reset), before the proxy accepts it.
 */
#include "policy.bpf.h"

SEC("sk_lookup")
int sm_inbound(struct bpf_sk_lookup *ctx)
{
	struct sm_config *cfg;
	__u32 pod = ctx->local_ip4;
	struct bpf_sock *sk;
	long err;

	if (ctx->family != SM_AF_INET || ctx->protocol != IPPROTO_TCP)
		return SK_PASS;
	/* Only permissive pods the agent took over; everything else as usual. */
	if (!bpf_map_lookup_elem(&sm_inbound_pods, &pod))
		return SK_PASS;
	cfg = sm_get_config();
	if (sm_allowed4(cfg, ctx->remote_ip4, pod))
		return SK_PASS;
	if (sm_policy_verdict(0, pod, (__u16)ctx->local_port) == SM_VERDICT_DENY)
		return SK_DROP;
	sk = bpf_map_lookup_elem(&sm_inbound_listeners, &pod);
	if (!sk) {
		/* Fail closed: without the proxy, policy would not apply. */
		sm_count(SM_CNT_INBOUND_REFUSED);
		return SK_DROP;
	}
	err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	if (err) {
		sm_count(SM_CNT_INBOUND_REFUSED);
		return SK_DROP;
	}
	sm_count(SM_CNT_INBOUND_CAPTURED);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
