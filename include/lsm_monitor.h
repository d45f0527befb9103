/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Layout shared by lsm_monitor and meshbpf's Rust side, which reads it
 * through the skeleton's generated types: the event of the ring buffer,
 * the per-type counters and the policy maps.
 */
#ifndef MESHBPF_LSM_MONITOR_H
#define MESHBPF_LSM_MONITOR_H

enum lsm_limits {
	LSM_COMM_LEN = 16,
	/* Bytes of a path an event carries, NUL included; longer paths are
	 * cut and flagged with LSM_EVENT_TRUNCATED. */
	LSM_PATH_LEN = 256,
	/* Bytes of path in a policy key after the generation byte: prefixes
	 * match within the first LSM_KEY_PATH_LEN bytes of a path. */
	LSM_KEY_PATH_LEN = 255,
	/* Entries per generation of each policy table. */
	LSM_MAX_PATH_ENTRIES = 512,
	LSM_MAX_ALLOW = 256,
	/* Cgroup ancestors checked against the cgroup allow-list. */
	LSM_MAX_CGROUP_DEPTH = 16,
	/* capable(): at most one event per process and capability per this
	 * many ns; every check is still counted. */
	LSM_CAPABLE_INTERVAL_NS = 1000000000,
	LSM_CAPABLE_TRACKED = 8192,
	/* The fallback resolves paths itself (it has no d_path): the most
	 * bytes of a path it builds, NUL included, and the most steps its
	 * walk from a dentry up to the root takes (a name or a mount each). */
	LSM_RESOLVED_PATH_LEN = 4096,
	LSM_WALK_STEPS = 4096,
};

enum lsm_event_type {
	LSM_EVENT_EXEC = 0,
	LSM_EVENT_OPEN = 1,
	LSM_EVENT_PTRACE = 2,
	LSM_EVENT_CAPABLE = 3,
	LSM_EVENT_MODULE = 4,
	LSM_EVENT_TYPES = 5,
};

enum lsm_verdict {
	LSM_VERDICT_ALLOWED = 0,
	LSM_VERDICT_DENIED = 1,
	/* The policy denies it, but the monitor only audits. */
	LSM_VERDICT_AUDIT = 2,
};

/* Which hook produced an event; the method follows from it. */
enum lsm_hook {
	LSM_HOOK_FILE_OPEN = 0,
	LSM_HOOK_BPRM_CHECK_SECURITY = 1,
	LSM_HOOK_PTRACE_ACCESS_CHECK = 2,
	LSM_HOOK_CAPABLE = 3,
	LSM_HOOK_KERNEL_READ_FILE = 4,
	LSM_HOOK_KERNEL_LOAD_DATA = 5,
	LSM_HOOK_KERNEL_MODULE_REQUEST = 6,
	/* The tracepoint fallback. */
	LSM_HOOK_SCHED_PROCESS_EXEC = 7,
	LSM_HOOK_SYS_ENTER = 8,
	/* An open seen when it returns, with its result. */
	LSM_HOOK_SYS_EXIT = 9,
};

enum lsm_event_flags {
	LSM_EVENT_TRUNCATED = 1 << 0,
	/* ptrace: the tracee's uid differs from the tracer's. */
	LSM_EVENT_OTHER_USER = 1 << 1,
};

/* What `detail` of a module event is. */
enum lsm_module_kind {
	LSM_MODULE_LOAD_FILE = 0,
	LSM_MODULE_LOAD_DATA = 1,
	LSM_MODULE_REQUEST = 2,
};

/* One record of the ring buffer. */
struct lsm_monitor_event {
	/* CLOCK_BOOTTIME ns. */
	__u64 ts_ns;
	__u64 cgroup_id;
	__u32 type;
	__u32 verdict;
	__u32 hook;
	__u32 flags;
	/* Thread group ids, and the real uid. */
	__u32 pid;
	__u32 ppid;
	__u32 uid;
	/* open: the open flags (O_*); exec: 0; ptrace: the PTRACE_MODE_*
	 * mask (LSM) or the request (syscall); capable: the capability;
	 * module: enum lsm_module_kind. */
	__u32 detail;
	/* ptrace: the tracee (uid and comm are unknown to the fallback). */
	__u32 target_pid;
	__u32 target_uid;
	/* LSM_HOOK_SYS_EXIT: what the syscall returned (a descriptor, or
	 * -errno); 0 from the other hooks. */
	__s32 result;
	__u32 pad;
	char comm[LSM_COMM_LEN];
	char target_comm[LSM_COMM_LEN];
	/* open, exec, module load: the file; module request: the name. */
	char path[LSM_PATH_LEN];
};

/* Per event type, in a per-CPU array summed by the reader. */
struct lsm_counters {
	/* Events that qualified: delivered to the ring buffer or lost. */
	__u64 events;
	/* The ring buffer was full: the event is gone. */
	__u64 lost;
	__u64 denied;
	/* Would have been denied in enforce mode. */
	__u64 audited;
	/* capable() checks folded into an earlier event of the same process
	 * and capability. */
	__u64 suppressed;
};

enum lsm_policy_flags {
	LSM_POLICY_ENFORCE = 1 << 0,
	LSM_POLICY_DENY_PTRACE_OTHER_USERS = 1 << 1,
	LSM_POLICY_DENY_MODULES = 1 << 2,
	/* Allow-lists that have entries; the others cost no lookup. */
	LSM_POLICY_ALLOW_UIDS = 1 << 3,
	LSM_POLICY_ALLOW_COMMS = 1 << 4,
	LSM_POLICY_ALLOW_CGROUPS = 1 << 5,
	/* The policy names paths (watch, deny.write, deny.exec): without
	 * any, the fallback resolves no open's path. */
	LSM_POLICY_PATHS = 1 << 6,
};

/* Slot g of the `policy` array is generation g; `active` names the one in
 * use. A replacement writes the idle generation, then flips `active`. */
struct lsm_policy {
	__u32 flags;
	__u32 pad;
};

enum lsm_path_flags {
	/* Opens are reported. */
	LSM_PATH_WATCH = 1 << 0,
	LSM_PATH_DENY_WRITE = 1 << 1,
	LSM_PATH_DENY_EXEC = 1 << 2,
};

/* LPM trie key: the generation byte, then the path. A prefix "/etc"
 * becomes two entries, "/etc\0" (the file itself) and "/etc/" (what is
 * under it), so "/etcetera" never matches. Each entry carries the flags of
 * every prefix that covers it, as the longest match is the only one found. */
struct lsm_path_key {
	__u32 prefixlen;
	__u8 generation;
	__u8 path[LSM_KEY_PATH_LEN];
};

struct lsm_path_rule {
	__u32 flags;
	__u32 pad;
};

struct lsm_uid_key {
	__u32 generation;
	__u32 uid;
};

struct lsm_comm_key {
	__u32 generation;
	char comm[LSM_COMM_LEN];
};

struct lsm_cgroup_key {
	__u32 generation;
	__u32 pad;
	__u64 cgroup_id;
};

/* Syscall numbers the fallback watches at sys_enter, set in .rodata from
 * meshbpf's tables for the architecture; -1 where it has none. */
struct lsm_syscalls {
	__s32 open;
	__s32 openat;
	__s32 openat2;
	__s32 creat;
	__s32 ptrace;
	__s32 init_module;
	__s32 finit_module;
	__s32 pad;
};

#endif /* MESHBPF_LSM_MONITOR_H */
