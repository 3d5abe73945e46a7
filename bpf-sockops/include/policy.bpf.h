/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Kernel L4 authorization: who (caller identity id) may reach what
 * (destination policy set, port), compiled by the agent from the same RBAC the
 * proxy enforces. Every lookup is a hash lookup, so a verdict costs the same
 * with 10 rules or 100 000. The kernel only ever denies what the proxy would
 * deny too; where the rules cannot tell (L7 conditions, unknown destination),
 * it passes and the proxy decides.
 *
 * Atomic swaps: the agent writes the generation verdicts do not read, bumping
 * that generation's epoch to odd first and to even when done, then flips the
 * active generation. A verdict reads the active generation and its epoch
 * before and after its lookups, and passes when the epoch moved or was odd:
 * it never mixes entries of two rule sets.
 */
#ifndef SOCKMESH_POLICY_BPF_H
#define SOCKMESH_POLICY_BPF_H

#include "maps.bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SM_POLICY_STATE_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_pol_state SEC(".maps");

/* Meshed pods' identity ids by cgroup id (one per generation in the value). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SM_MAX_PODS);
	__type(key, __u64);
	__type(value, struct sm_policy_source);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_pol_sources SEC(".maps");

/* Destination pod address -> its policy set id, per generation. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * SM_MAX_POLICY_DESTS);
	__type(key, struct sm_policy_dest_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_pol_dests SEC(".maps");

/* Room for two full generations: the next one is written before the last one goes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * SM_MAX_POLICY_RULES);
	__type(key, struct sm_policy_key);
	__type(value, struct sm_policy_verdict);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_pol_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SM_MAX_POLICY_COUNTERS);
	__type(key, __u32);
	__type(value, struct sm_policy_count);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_pol_counters SEC(".maps");

static __always_inline __u32 *sm_pol_slot(__u32 idx)
{
	return bpf_map_lookup_elem(&sm_pol_state, &idx);
}

/* The caller's identity id in generation `gen`, from the nearest enrolled cgroup; 0 = none. */
static __always_inline __u32 sm_pol_caller(__u32 gen)
{
	__u64 id = bpf_get_current_cgroup_id();
	struct sm_policy_source *src = bpf_map_lookup_elem(&sm_pol_sources, &id);

	for (int level = SM_MAX_CGROUP_DEPTH; level >= 1 && !src; level--) {
		id = bpf_get_current_ancestor_cgroup_id(level);
		if (id)
			src = bpf_map_lookup_elem(&sm_pol_sources, &id);
	}
	return src ? src->id[gen & 1] : 0;
}

/*
 * The verdict for (caller, destination address, port). `from_cgroup`: the
 * caller is the current task's pod (connect4); otherwise it is an
 * unauthenticated plaintext caller (sk_lookup). Counts what it decides.
 */
static __always_inline __u32 sm_policy_verdict(int from_cgroup, __u32 dip, __u16 dport)
{
	struct sm_policy_dest_key dk = {};
	struct sm_policy_key k = {};
	struct sm_policy_verdict *v;
	struct sm_policy_count *c;
	__u32 *active, *epoch, *dest;
	__u32 gen, e1, verdict, policy;

	active = sm_pol_slot(SM_POLICY_ACTIVE);
	if (!active)
		return SM_VERDICT_PASS;
	gen = *(volatile __u32 *)active & 1;
	epoch = sm_pol_slot(SM_POLICY_EPOCH0 + gen);
	if (!epoch)
		return SM_VERDICT_PASS;
	e1 = *(volatile __u32 *)epoch;
	if (e1 & 1)
		return SM_VERDICT_PASS;

	dk.gen = gen;
	dk.ip4 = dip;
	dest = bpf_map_lookup_elem(&sm_pol_dests, &dk);
	if (!dest)
		return SM_VERDICT_PASS;
	k.gen = gen;
	k.source = from_cgroup ? sm_pol_caller(gen) : SM_POLICY_PLAINTEXT;
	if (from_cgroup && !k.source)
		return SM_VERDICT_PASS;
	k.dest = *dest;
	k.port = dport;
	v = bpf_map_lookup_elem(&sm_pol_rules, &k);
	if (!v) {
		k.port = SM_POLICY_ANY_PORT;
		v = bpf_map_lookup_elem(&sm_pol_rules, &k);
	}
	if (!v)
		return SM_VERDICT_PASS;
	verdict = v->verdict;
	policy = v->policy;
	/* Entries written while we looked belong to another rule set: let the proxy decide. */
	if (*(volatile __u32 *)epoch != e1)
		return SM_VERDICT_PASS;

	c = bpf_map_lookup_elem(&sm_pol_counters, &policy);
	if (c) {
		if (verdict == SM_VERDICT_DENY)
			c->denied += 1;
		else if (verdict == SM_VERDICT_ALLOW)
			c->allowed += 1;
	}
	return verdict;
}

#endif
