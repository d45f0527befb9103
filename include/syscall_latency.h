/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Layout shared by syscall_latency and meshbpf's Rust side, which reads it
 * through the skeleton's generated types.
 */
#ifndef MESHBPF_SYSCALL_LATENCY_H
#define MESHBPF_SYSCALL_LATENCY_H

enum latency_limits {
	/* Histogram slots: syscall numbers below this (x86_64 and aarch64 stay
	 * under 512); per-function latency uses slot 0. */
	LAT_MAX_SYSCALLS = 512,
	/* log2 buckets: bucket b counts latencies in [2^b, 2^(b+1)) ns, bucket 0
	 * also counts 0 ns, the last one everything from 2^39 ns (9 minutes). */
	LAT_BUCKETS = 40,
	LAT_COMM_LEN = 16,
};

/* Which filters are on; the verifier drops the code of those that are off. */
enum latency_filters {
	LAT_FILTER_SYSCALLS = 1 << 0,
	LAT_FILTER_PID = 1 << 1,
	LAT_FILTER_COMM = 1 << 2,
	LAT_FILTER_CGROUP = 1 << 3,
};

/* Set in .rodata before load; read back from the pinned .rodata by stats. */
struct latency_config {
	__u32 filters;
	/* A process (thread group) id. */
	__u32 pid;
	char comm[LAT_COMM_LEN];
	/* What --cgroup named (its inode), for stats; the program tests
	 * membership through the cgroup_filter map. */
	__u64 cgroup_id;
	/* Bit nr set: syscall nr is traced. */
	__u64 syscall_mask[LAT_MAX_SYSCALLS / 64];
};

/* One histogram slot of a per-CPU array: summed over CPUs by the reader. */
struct latency_hist {
	__u64 count;
	__u64 total_ns;
	__u64 buckets[LAT_BUCKETS];
};

/* Task-local: when the current syscall or call started, and which. */
struct latency_start {
	__u64 start_ns;
	__u32 nr;
	__u32 pad;
};

#endif /* MESHBPF_SYSCALL_LATENCY_H */
