// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * sk_msg on sm_sockhash and sm_sockhash6: hand each sendmsg straight to the peer socket's
 * receive queue when the peer is in the sockhash too. Whatever goes wrong, the
 * message takes the normal TCP path: acceleration must never break a connection.
 */
#include "maps.bpf.h"

SEC("sk_msg")
int sm_redir(struct sk_msg_md *msg)
{
	struct sm_config *cfg;
	struct sm_tuple4 peer = {};
	struct sm_tuple6 peer6 = {};
	__u32 family = msg->family;
	__u16 lport = (__u16)msg->local_port;
	__u16 rport = sm_port_from_be(msg->remote_port);
	long ret;

	cfg = sm_get_config();
	if (!cfg || !cfg->accel)
		return SK_PASS;

	/* The peer's own key is our tuple reversed. */
	if (family == SM_AF_INET) {
		peer.src_ip4 = msg->remote_ip4;
		peer.dst_ip4 = msg->local_ip4;
	} else {
		/* Each context field is read once, at a constant offset (see sockops). */
		peer6.src_ip6[0] = msg->remote_ip6[0];
		peer6.src_ip6[1] = msg->remote_ip6[1];
		peer6.src_ip6[2] = msg->remote_ip6[2];
		peer6.src_ip6[3] = msg->remote_ip6[3];
		peer6.dst_ip6[0] = msg->local_ip6[0];
		peer6.dst_ip6[1] = msg->local_ip6[1];
		peer6.dst_ip6[2] = msg->local_ip6[2];
		peer6.dst_ip6[3] = msg->local_ip6[3];
		peer6.src_port = rport;
		peer6.dst_port = lport;
		if (!sm_is_v4mapped(peer6.src_ip6) || !sm_is_v4mapped(peer6.dst_ip6)) {
			ret = bpf_msg_redirect_hash(msg, &sm_sockhash6, &peer6, BPF_F_INGRESS);
			goto out;
		}
		/* A dual-stack socket with an IPv4 peer lives in the IPv4 sockhash. */
		peer.src_ip4 = peer6.src_ip6[3];
		peer.dst_ip4 = peer6.dst_ip6[3];
	}
	peer.src_port = rport;
	peer.dst_port = lport;
	ret = bpf_msg_redirect_hash(msg, &sm_sockhash, &peer, BPF_F_INGRESS);
out:
	if (ret == SK_PASS)
		sm_count(SM_CNT_MSG_REDIRECTED);
	else
		sm_count(SM_CNT_FALLBACK);
	/* On failure no redirect was recorded: SK_PASS sends it the normal way. */
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
