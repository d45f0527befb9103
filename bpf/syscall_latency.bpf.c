// SPDX-License-Identifier: GPL-2.0
/* syscall_latency: log2 latency histograms per syscall (raw_syscalls
 * sys_enter to sys_exit, through tp_btf or raw_tp) or of one kernel function
 * (fentry/fexit or kprobe/kretprobe). Userspace loads only the pair of
 * programs of the method it chose. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "syscall_latency.h"

/* A start time per task: a syscall may sleep and resume on another CPU.
 * Task storage hangs off the task itself, so no hash lookup or delete. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct latency_start);
} starts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LAT_MAX_SYSCALLS);
	__type(key, __u32);
	__type(value, struct latency_hist);
} hists SEC(".maps");

/* Slot 0 holds the cgroup of --cgroup. */
struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} cgroup_filter SEC(".maps");

const volatile struct latency_config lat_config = {};

/* Referenced so the enums reach BTF and the skeleton's Rust types. */
const volatile enum latency_limits latency_limits_anchor = LAT_BUCKETS;
const volatile enum latency_filters latency_filters_anchor = LAT_FILTER_PID;

/* floor(log2(v)) without loops or a count-leading-zeros instruction. */
static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r, shift;

	r = (v > 0xFFFFFFFFULL) << 5;
	v >>= r;
	shift = (v > 0xFFFF) << 4;
	v >>= shift;
	r |= shift;
	shift = (v > 0xFF) << 3;
	v >>= shift;
	r |= shift;
	shift = (v > 0xF) << 2;
	v >>= shift;
	r |= shift;
	shift = (v > 0x3) << 1;
	v >>= shift;
	r |= shift;
	return r | (__u32)(v >> 1);
}

/* Filters on the task, cheapest first; `lat_config` is frozen .rodata, so the
 * verifier knows which are off and drops their code. */
static __always_inline bool task_passes(void)
{
	if (lat_config.filters & LAT_FILTER_PID) {
		if ((__u32)(bpf_get_current_pid_tgid() >> 32) != lat_config.pid)
			return false;
	}
	if (lat_config.filters & LAT_FILTER_COMM) {
		__u64 comm[LAT_COMM_LEN / 8] = {};
		const volatile __u64 *want = (const volatile __u64 *)lat_config.comm;

		bpf_get_current_comm(comm, sizeof(comm));
		if (comm[0] != want[0] || comm[1] != want[1])
			return false;
	}
	if (lat_config.filters & LAT_FILTER_CGROUP) {
		if (bpf_current_task_under_cgroup(&cgroup_filter, 0) != 1)
			return false;
	}
	return true;
}

#if defined(__TARGET_ARCH_x86)
/* arch/x86/include/asm/thread_info.h: set while a task runs an ia32
 * syscall, whose numbers are not the x86_64 ones the histograms use. */
#define LAT_TS_COMPAT 0x0002

static __always_inline bool compat_syscall(void)
{
	return bpf_get_current_task_btf()->thread_info.status & LAT_TS_COMPAT;
}
#else
static __always_inline bool compat_syscall(void)
{
	return false;
}
#endif

static __always_inline int on_enter(__u32 nr)
{
	struct latency_start *start;

	if (lat_config.filters & LAT_FILTER_SYSCALLS) {
		__u32 word = nr / 64;

		/* Bound-check the very register that indexes, or clang checks
		 * a copy the verifier does not link to it. */
		barrier_var(word);
		if (word >= LAT_MAX_SYSCALLS / 64)
			return 0;
		if (!(lat_config.syscall_mask[word] & (1ULL << (nr % 64))))
			return 0;
	}
	if (!task_passes())
		return 0;
	start = bpf_task_storage_get(&starts, bpf_get_current_task_btf(), 0,
				     BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!start)
		return 0;
	start->nr = nr;
	start->start_ns = bpf_ktime_get_ns();
	return 0;
}

static __always_inline int on_sys_enter(long id)
{
	if (compat_syscall())
		return 0;
	return on_enter(id);
}

static __always_inline int on_exit(void)
{
	struct latency_start *start;
	struct latency_hist *hist;
	/* 64 bits wide, so the clamp below is a 64-bit compare: a 32-bit one
	 * leaves a zero-extension after it whose bounds 6.1's verifier loses. */
	__u64 delta, bucket;

	/* Cheaper than the storage lookup that would find nothing. */
	if (lat_config.filters & LAT_FILTER_PID) {
		if ((__u32)(bpf_get_current_pid_tgid() >> 32) != lat_config.pid)
			return 0;
	}
	start = bpf_task_storage_get(&starts, bpf_get_current_task_btf(), 0, 0);
	if (!start || !start->start_ns)
		return 0;
	delta = bpf_ktime_get_ns() - start->start_ns;
	start->start_ns = 0;
	hist = bpf_map_lookup_elem(&hists, &start->nr);
	if (!hist)
		return 0;
	bucket = log2_u64(delta);
	if (bucket >= LAT_BUCKETS)
		bucket = LAT_BUCKETS - 1;
	hist->count++;
	hist->total_ns += delta;
	hist->buckets[bucket]++;
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(lat_enter_btf, struct pt_regs *regs, long id)
{
	return on_sys_enter(id);
}

SEC("tp_btf/sys_exit")
int BPF_PROG(lat_exit_btf, struct pt_regs *regs, long ret)
{
	return on_exit();
}

SEC("raw_tp/sys_enter")
int BPF_PROG(lat_enter_raw, struct pt_regs *regs, long id)
{
	return on_sys_enter(id);
}

SEC("raw_tp/sys_exit")
int BPF_PROG(lat_exit_raw, struct pt_regs *regs, long ret)
{
	return on_exit();
}

/* Per-function latency: the target is set by userspace before load
 * (fentry/fexit) or at attach (kprobe/kretprobe); it counts in slot 0. */
SEC("fentry")
int BPF_PROG(lat_fentry)
{
	return on_enter(0);
}

SEC("fexit")
int BPF_PROG(lat_fexit)
{
	return on_exit();
}

SEC("kprobe")
int BPF_KPROBE(lat_kprobe)
{
	return on_enter(0);
}

SEC("kretprobe")
int BPF_KRETPROBE(lat_kretprobe)
{
	return on_exit();
}

char LICENSE[] SEC("license") = "GPL";
