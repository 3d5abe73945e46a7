// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Test-only loss injector (this kernel has no netem): a tc classifier for
 * clsact (ingress or egress) that drops a share of the TCP packets to or from one port,
 * so one connection of a link suffers loss while its neighbours do not.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define ETH_P_IP 0x0800

struct loss_cfg {
	__u16 port;        /* host order; 0 = drop nothing */
	__u16 per_mille;   /* share of that port's packets to drop */
	__u32 reserved;
	__u64 dropped;
	__u64 seen;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct loss_cfg);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_test_loss SEC(".maps");

SEC("tc")
int sm_test_drop(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct loss_cfg *cfg = bpf_map_lookup_elem(&sm_test_loss, &zero);
	struct iphdr ip;
	__u16 ports[2];

	if (!cfg || !cfg->port || skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr), &ip, sizeof(ip)) || ip.protocol != 6 /* TCP */)
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + ip.ihl * 4, ports, sizeof(ports)))
		return TC_ACT_OK;
	if (bpf_ntohs(ports[0]) != cfg->port && bpf_ntohs(ports[1]) != cfg->port)
		return TC_ACT_OK;
	__sync_fetch_and_add(&cfg->seen, 1);
	if (bpf_get_prandom_u32() % 1000 >= cfg->per_mille)
		return TC_ACT_OK;
	__sync_fetch_and_add(&cfg->dropped, 1);
	return TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
