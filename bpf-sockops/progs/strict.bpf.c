// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * cgroup_skb/ingress: strict mode. A meshed pod in strict mode accepts inbound
 * TCP only from its node proxy (which reaches local pods from the proxy
 * address, for same-node calls and tunnel deliveries alike), from loopback and
 * from itself. Anything else is plaintext that bypassed the mesh: another pod
 * dialing it directly, another node. Such a segment is dropped before the
 * listener sees it, so no connection is ever created.
 *
 * Why this hook: it is attached per cgroup like the rest of the dataplane, so
 * the pod is known exactly as connect4 knows it (the listener's cgroup id), and
 * it runs before the handshake instead of after it. sock_ops only sees the
 * connection once established and cannot abort it; sk_lookup could refuse with
 * a RST but attaches per network namespace, one link per pod, and runs before
 * any socket is chosen, so it cannot tell the pod by its cgroup. The price: cgroup_skb can pass or drop, never answer, so a
 * refused client sees its SYN go unanswered and fails by its own connect
 * timeout (or after tcp_syn_retries), not with ECONNREFUSED.
 *
 * Only segments addressed to a listening socket are judged: replies to the
 * pod's own outbound connections (e.g. to excluded destinations) and
 * connections already open are never touched, so switching a pod to strict
 * leaves them alone. Data that sk_msg splices between proxy and pod skips this
 * hook and need not pass it: the connection's handshake did, from the proxy.
 */
#include "maps.bpf.h"

#define SM_ETH_P_IP 0x0800
#define SM_ETH_P_IPV6 0x86DD
#define SM_TCP_LISTEN 10

/* The nearest enrolled cgroup of the receiving socket (a pod's containers live
 * in child cgroups of the pod cgroup), as sm_is_meshed does for connect4. */
static __always_inline struct sm_pod *sm_pod_of(struct __sk_buff *skb)
{
	__u64 id = bpf_skb_cgroup_id(skb);
	struct sm_pod *pod = bpf_map_lookup_elem(&sm_pods, &id);

	if (pod)
		return pod;
	for (int level = SM_MAX_CGROUP_DEPTH; level >= 1; level--) {
		id = bpf_skb_ancestor_cgroup_id(skb, level);
		if (!id)
			continue;
		pod = bpf_map_lookup_elem(&sm_pods, &id);
		if (pod)
			return pod;
	}
	return 0;
}

SEC("cgroup_skb/ingress")
int sm_strict(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;
	struct sm_config *cfg;
	struct sm_pod *pod;
	__u32 addrs[8];
	int allowed;

	if (!sk)
		return 1;
	sk = bpf_sk_fullsock(sk);
	if (!sk || sk->protocol != IPPROTO_TCP || sk->state != SM_TCP_LISTEN)
		return 1;
	pod = sm_pod_of(skb);
	if (!pod || pod->mode != SM_MODE_STRICT)
		return 1;

	cfg = sm_get_config();
	/* cgroup_skb sees the packet from its network header on. */
	if (skb->protocol == bpf_htons(SM_ETH_P_IP)) {
		/* iphdr: saddr at 12, daddr at 16 */
		if (bpf_skb_load_bytes(skb, 12, addrs, 8))
			return 1;
		allowed = sm_allowed4(cfg, addrs[0], addrs[1]);
	} else if (skb->protocol == bpf_htons(SM_ETH_P_IPV6)) {
		/* ipv6hdr: saddr at 8, daddr at 24 */
		if (bpf_skb_load_bytes(skb, 8, addrs, 32))
			return 1;
		allowed = sm_allowed6(cfg, &addrs[0], &addrs[4]);
	} else {
		return 1;
	}
	if (allowed)
		return 1;
	sm_count(SM_CNT_PLAINTEXT_REFUSED);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
