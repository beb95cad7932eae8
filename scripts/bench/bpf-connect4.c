// SPDX-License-Identifier: GPL-2.0
/*
 * An experiment, not part of ldsaref (scripts/bench/bpf-connect.sh): what
 * steering TCP in `cgroup/connect4` would cost, with the rules in an LPM
 * trie keyed by profile cgroup and destination, and the mark set on the
 * socket with bpf_setsockopt(SO_MARK) before connect() looks up its route.
 * Ports and IPv6 are left out; deny refuses the connect (EPERM).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define SOL_SOCKET 1
#define SO_MARK 36
#define DENY 0xffffffffu

struct key4 {
	__u32 prefixlen; /* 64 + the rule's prefix length */
	__u64 cgid;	 /* the profile's cgroup (level 2); 0: the global rules */
	__u32 addr;	 /* network order */
} __attribute__((packed));

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct key4);
	__type(value, __u32);
	__uint(max_entries, 4000000);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} rules4 SEC(".maps");

static __always_inline __u32 *rule(__u64 cg, __u32 addr)
{
	struct key4 k = {.prefixlen = 96, .cgid = cg, .addr = addr};

	return bpf_map_lookup_elem(&rules4, &k);
}

SEC("cgroup/connect4")
int ldsaref_connect4(struct bpf_sock_addr *ctx)
{
	int mark = 0;
	__u32 *v;

	/* A mark the program set itself is left alone, as the table does. */
	if (bpf_getsockopt(ctx, SOL_SOCKET, SO_MARK, &mark, sizeof mark) == 0 && mark)
		return 1;
	/* The profile's rules, then the global ones. */
	v = rule(bpf_get_current_ancestor_cgroup_id(2), ctx->user_ip4);
	if (!v)
		v = rule(0, ctx->user_ip4);
	if (!v)
		return 1;
	if (*v == DENY)
		return 0;
	mark = *v;
	bpf_setsockopt(ctx, SOL_SOCKET, SO_MARK, &mark, sizeof mark);
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
