// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * sk_msg on sm_sockhash and sm_sockhash6: hand each sendmsg straight to the peer
 * socket's receive queue when the peer is in the sockhash too and keeps up.
 * Whatever goes wrong, the message takes the normal TCP path: acceleration
 * must never break a connection.
 *
 * Backpressure. A redirect into the peer's queue (BPF_F_INGRESS) is not bound
 * by TCP's window: a reader that falls behind would let the writer queue
 * without limit, until the kernel refuses with ENOMEM. So a message is only
 * redirected while what the peer holds unread stays within its receive
 * buffer (TCP's own rule for accepting data) and TCP is not under memory
 * pressure; otherwise it goes the TCP way, where the window and the send
 * buffer make write() block as usual. Order: the reader drains its sk_msg
 * queue before its TCP queue, so once a byte went the TCP way, no message is
 * redirected again until the peer has read every TCP byte of this direction
 * (its copied_seq caught up with our write_seq; redirected bytes move neither).
 *
 * Half-close. A read returns bytes from one queue only, sk_msg first: with
 * bytes waiting in both, the read of the sk_msg queue's tail comes back short
 * although TCP bytes follow. libuv (Node) takes a short read together with
 * POLLHUP as end of stream, and POLLHUP is up once the reader has shut down
 * its sending side and our FIN has arrived, so it would drop the TCP tail.
 * Hence, once the peer has half-closed (it is no longer ESTABLISHED), a
 * message joins the peer's unread sk_msg bytes rather than going the TCP way,
 * up to SM_HALF_CLOSED_RCVBUFS receive buffers: the answer to "request,
 * half-close, read the reply" stays in one queue. Beyond that (a half-closed
 * reader that stopped reading, the agent itself while its other side is slow)
 * the message goes the TCP way after all: memory stays bounded, and the
 * short-read hazard comes back for that connection only.
 */
#include "maps.bpf.h"
#include <bpf/bpf_core_read.h>

#define SM_HALF_CLOSED_RCVBUFS 4

static __always_inline int sm_peer_keeps_up(struct sk_msg_md *msg)
{
	/* The program's context is the kernel's struct sk_msg; sk_redir is the
	 * peer bpf_msg_redirect_hash just found (the program may not hold a
	 * reference to a looked-up socket, so it reads the one the kernel holds). */
	struct sk_msg *kmsg = (struct sk_msg *)msg;
	struct sock *peer = BPF_CORE_READ(kmsg, sk_redir);
	struct sock *self = BPF_CORE_READ(kmsg, sk);
	unsigned long *pressure, under = 0;
	struct sk_psock *psock;
	__u64 queued = 0, rmem;
	int rcvbuf;

	if (!peer || !self)
		return 0;
	if (BPF_CORE_READ((struct tcp_sock *)self, write_seq) != BPF_CORE_READ((struct tcp_sock *)peer, copied_seq))
		return 0;
	/* Under TCP memory pressure the kernel refuses redirects (ENOMEM, a
	 * failed write); TCP itself copes by shrinking windows. */
	pressure = BPF_CORE_READ(peer, __sk_common.skc_prot, memory_pressure);
	if (pressure && (bpf_probe_read_kernel(&under, sizeof(under), pressure) || under))
		return 0;
	/* sk_user_data carries flags in its low bits (SK_USER_DATA_PSOCK ...). */
	psock = (struct sk_psock *)((unsigned long)BPF_CORE_READ(peer, sk_user_data) & ~7UL);
	if (psock)
		queued = (__u32)BPF_CORE_READ(psock, msg_tot_len);
	rcvbuf = BPF_CORE_READ(peer, sk_rcvbuf);
	if (rcvbuf <= 0)
		return 0;
	if (queued && BPF_CORE_READ(peer, __sk_common.skc_state) != BPF_TCP_ESTABLISHED)
		return queued + msg->size <= (__u64)rcvbuf * SM_HALF_CLOSED_RCVBUFS;
	/* Newer kernels also charge queued messages to sk_rmem_alloc. */
	rmem = (__u32)BPF_CORE_READ(peer, sk_backlog.rmem_alloc.counter);
	if (rmem > queued)
		queued = rmem;
	return queued + msg->size <= (__u64)rcvbuf;
}

/* Redirects to the peer at peer_key, or sends the TCP way. Once a redirect is
 * recorded it cannot be cleared; redirecting to our own egress (own_key) is
 * how a message is sent the normal way after all. */
static __always_inline void sm_redirect(struct sk_msg_md *msg, void *map, void *peer_key, void *own_key)
{
	if (bpf_msg_redirect_hash(msg, map, peer_key, BPF_F_INGRESS) != SK_PASS) {
		/* No peer: nothing was recorded, SK_PASS sends it the normal way. */
		sm_count(SM_CNT_FALLBACK);
		return;
	}
	if (sm_peer_keeps_up(msg)) {
		sm_count(SM_CNT_MSG_REDIRECTED);
		return;
	}
	if (bpf_msg_redirect_hash(msg, map, own_key, 0) == SK_PASS)
		sm_count(SM_CNT_BACKPRESSURED);
	else
		sm_count(SM_CNT_MSG_REDIRECTED); /* not in the map any more: the redirect stands */
}

SEC("sk_msg")
int sm_redir(struct sk_msg_md *msg)
{
	struct sm_config *cfg;
	struct sm_tuple4 peer = {}, own = {};
	struct sm_tuple6 peer6 = {}, own6 = {};
	__u32 family = msg->family;
	__u16 lport = (__u16)msg->local_port;
	__u16 rport = sm_port_from_be(msg->remote_port);

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
			__builtin_memcpy(own6.src_ip6, peer6.dst_ip6, sizeof(own6.src_ip6));
			__builtin_memcpy(own6.dst_ip6, peer6.src_ip6, sizeof(own6.dst_ip6));
			own6.src_port = lport;
			own6.dst_port = rport;
			sm_redirect(msg, &sm_sockhash6, &peer6, &own6);
			return SK_PASS;
		}
		/* A dual-stack socket with an IPv4 peer lives in the IPv4 sockhash. */
		peer.src_ip4 = peer6.src_ip6[3];
		peer.dst_ip4 = peer6.dst_ip6[3];
	}
	peer.src_port = rport;
	peer.dst_port = lport;
	own.src_ip4 = peer.dst_ip4;
	own.dst_ip4 = peer.src_ip4;
	own.src_port = lport;
	own.dst_port = rport;
	sm_redirect(msg, &sm_sockhash, &peer, &own);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
