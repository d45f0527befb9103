// SPDX-License-Identifier: GPL-2.0
/* lsm_monitor: security events (exec, opens under watched paths, ptrace
 * attach, capability use, module loads) through one ring buffer, audited or
 * denied by a policy replaced atomically from userspace.
 *
 * Two program sets share the maps; userspace loads one. The BPF LSM set can
 * deny. The fallback set (sched_process_exec tracepoint, raw sys_enter)
 * runs where BPF LSM programs are refused and can only audit: it sees a
 * syscall's arguments, not what the kernel resolved them to. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "lsm_monitor.h"

char LICENSE[] SEC("license") = "GPL";

#define EPERM 1
/* include/linux/ptrace.h, include/uapi/linux/ptrace.h */
#define PTRACE_MODE_ATTACH 0x02
#define PTRACE_ATTACH	   16
#define PTRACE_SEIZE	   0x4206
/* include/linux/fs.h, include/uapi/asm-generic/fcntl.h */
#define FMODE_WRITE 0x2
#define O_ACCMODE   00000003
#define O_WRONLY    00000001
#define O_CREAT	    00000100
#define O_TRUNC	    00001000

/* Room for the longest path d_path and the user copy produce. */
#define SCRATCH_PATH_BYTES 4096

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	/* Userspace may resize it before load. */
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LSM_EVENT_TYPES);
	__type(key, __u32);
	__type(value, struct lsm_counters);
} counters SEC(".maps");

/* Slot 0: the generation of `policy` and of the tables' keys in use. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} active SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct lsm_policy);
} policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 2 * LSM_MAX_PATH_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lsm_path_key);
	__type(value, struct lsm_path_rule);
} paths SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * LSM_MAX_ALLOW);
	__type(key, struct lsm_uid_key);
	__type(value, __u8);
} allow_uids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * LSM_MAX_ALLOW);
	__type(key, struct lsm_comm_key);
	__type(value, __u8);
} allow_comms SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * LSM_MAX_ALLOW);
	__type(key, struct lsm_cgroup_key);
	__type(value, __u8);
} allow_cgroups SEC(".maps");

/* When a process last had an event for a capability: tgid << 32 | cap. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LSM_CAPABLE_TRACKED);
	__type(key, __u64);
	__type(value, __u64);
} capable_seen SEC(".maps");

/* A policy key whose path runs on into the overflow, so d_path and the
 * user copy write a whole path where the lookup reads its first bytes. */
struct path_scratch {
	struct lsm_path_key key;
	__u8 overflow[SCRATCH_PATH_BYTES - LSM_KEY_PATH_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct path_scratch);
} scratch SEC(".maps");

const volatile struct lsm_syscalls lsm_syscalls = {
	.open = -1,
	.openat = -1,
	.openat2 = -1,
	.creat = -1,
	.ptrace = -1,
	.init_module = -1,
	.finit_module = -1,
};

/* Referenced so the enums reach BTF and the skeleton's Rust types. */
const volatile enum lsm_limits lsm_limits_anchor = LSM_PATH_LEN;
const volatile enum lsm_event_type lsm_event_type_anchor = LSM_EVENT_EXEC;
const volatile enum lsm_verdict lsm_verdict_anchor = LSM_VERDICT_AUDIT;
const volatile enum lsm_hook lsm_hook_anchor = LSM_HOOK_FILE_OPEN;
const volatile enum lsm_event_flags lsm_event_flags_anchor = LSM_EVENT_TRUNCATED;
const volatile enum lsm_module_kind lsm_module_kind_anchor = LSM_MODULE_REQUEST;
const volatile enum lsm_policy_flags lsm_policy_flags_anchor = LSM_POLICY_ENFORCE;
const volatile enum lsm_path_flags lsm_path_flags_anchor = LSM_PATH_WATCH;
/* The ring buffer has no value type: this names the record for BTF. */
const volatile struct lsm_monitor_event *const lsm_monitor_event_anchor;

/* The policy in use, read once per event so that a replacement is seen
 * whole or not at all. */
struct decision {
	__u32 generation;
	__u32 flags;
};

static __always_inline bool current_policy(struct decision *d)
{
	__u32 zero = 0, *generation;
	struct lsm_policy *p;

	generation = bpf_map_lookup_elem(&active, &zero);
	if (!generation)
		return false;
	d->generation = *generation & 1;
	p = bpf_map_lookup_elem(&policy, &d->generation);
	if (!p)
		return false;
	d->flags = p->flags;
	return true;
}

static __always_inline struct path_scratch *get_scratch(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&scratch, &zero);
}

/* The flags of the longest policy prefix of the path in `s`, whose length
 * `len` counts the NUL. A path longer than the key is matched on its first
 * LSM_KEY_PATH_LEN bytes, which is exact for prefixes shorter than that. */
static __always_inline __u32 path_flags(struct path_scratch *s, long len, const struct decision *d)
{
	struct lsm_path_rule *rule;

	if (len <= 0)
		return 0;
	if (len > LSM_KEY_PATH_LEN)
		len = LSM_KEY_PATH_LEN;
	s->key.generation = d->generation;
	s->key.prefixlen = (1 + len) * 8;
	rule = bpf_map_lookup_elem(&paths, &s->key);
	return rule ? rule->flags : 0;
}

static __always_inline bool cgroup_allowed(const struct decision *d)
{
	struct lsm_cgroup_key key = { .generation = d->generation };
	int level;

	for (level = 0; level < LSM_MAX_CGROUP_DEPTH; level++) {
		key.cgroup_id = bpf_get_current_ancestor_cgroup_id(level);
		if (!key.cgroup_id)
			break;
		if (bpf_map_lookup_elem(&allow_cgroups, &key))
			return true;
	}
	return false;
}

static __always_inline bool subject_allowed(const struct decision *d, __u32 uid)
{
	if (d->flags & LSM_POLICY_ALLOW_UIDS) {
		struct lsm_uid_key key = { .generation = d->generation, .uid = uid };

		if (bpf_map_lookup_elem(&allow_uids, &key))
			return true;
	}
	if (d->flags & LSM_POLICY_ALLOW_COMMS) {
		struct lsm_comm_key key = { .generation = d->generation };

		bpf_get_current_comm(key.comm, sizeof(key.comm));
		if (bpf_map_lookup_elem(&allow_comms, &key))
			return true;
	}
	if (d->flags & LSM_POLICY_ALLOW_CGROUPS)
		return cgroup_allowed(d);
	return false;
}

static __always_inline __u32 verdict_of(bool policy_denies, const struct decision *d, __u32 uid,
					bool can_deny)
{
	if (!policy_denies || subject_allowed(d, uid))
		return LSM_VERDICT_ALLOWED;
	if (can_deny && (d->flags & LSM_POLICY_ENFORCE))
		return LSM_VERDICT_DENIED;
	return LSM_VERDICT_AUDIT;
}

static __always_inline struct lsm_counters *counters_of(__u32 type)
{
	return bpf_map_lookup_elem(&counters, &type);
}

/* Counts the event and its verdict, and reserves its record with the
 * fields every event has; NULL (counted as lost) when the buffer is full.
 * Never waits: a full buffer must not slow the process it reports on. */
static __always_inline struct lsm_monitor_event *begin_event(__u32 type, __u32 verdict, __u32 hook,
							     __u32 uid)
{
	struct lsm_counters *c = counters_of(type);
	struct task_struct *task;
	struct lsm_monitor_event *e;

	if (c) {
		c->events++;
		if (verdict == LSM_VERDICT_DENIED)
			c->denied++;
		else if (verdict == LSM_VERDICT_AUDIT)
			c->audited++;
	}
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		if (c)
			c->lost++;
		return NULL;
	}
	task = bpf_get_current_task_btf();
	e->ts_ns = bpf_ktime_get_boot_ns();
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->type = type;
	e->verdict = verdict;
	e->hook = hook;
	e->flags = 0;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->uid = uid;
	e->detail = 0;
	e->target_pid = 0;
	e->target_uid = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->target_comm[0] = 0;
	e->path[0] = 0;
	return e;
}

/* Copies the path of `s` (length `len` with the NUL, or an error) into
 * the event, flagging a cut. */
static __always_inline void set_path(struct lsm_monitor_event *e, struct path_scratch *s, long len)
{
	if (len <= 0)
		return;
	bpf_probe_read_kernel_str(e->path, sizeof(e->path), s->key.path);
	if (len > LSM_PATH_LEN)
		e->flags |= LSM_EVENT_TRUNCATED;
}

static __always_inline __u32 current_uid(void)
{
	return (__u32)bpf_get_current_uid_gid();
}

static __always_inline int verdict_ret(__u32 verdict)
{
	return verdict == LSM_VERDICT_DENIED ? -EPERM : 0;
}

/* An open under a watched prefix, or a write under a write-protected one. */
static __always_inline __u32 on_open(struct path_scratch *s, long len, bool write, __u32 open_flags,
				     __u32 hook, bool can_deny)
{
	struct decision d;
	struct lsm_monitor_event *e;
	__u32 flags, verdict, uid;

	if (!current_policy(&d))
		return LSM_VERDICT_ALLOWED;
	flags = path_flags(s, len, &d);
	if (!(flags & LSM_PATH_WATCH) && !(write && (flags & LSM_PATH_DENY_WRITE)))
		return LSM_VERDICT_ALLOWED;
	uid = current_uid();
	verdict = verdict_of(write && (flags & LSM_PATH_DENY_WRITE), &d, uid, can_deny);
	e = begin_event(LSM_EVENT_OPEN, verdict, hook, uid);
	if (e) {
		e->detail = open_flags;
		set_path(e, s, len);
		bpf_ringbuf_submit(e, 0);
	}
	return verdict;
}

static __always_inline __u32 on_exec(struct path_scratch *s, long len, __u32 hook, bool can_deny)
{
	struct decision d;
	struct lsm_monitor_event *e;
	__u32 verdict, uid;

	if (!current_policy(&d))
		return LSM_VERDICT_ALLOWED;
	uid = current_uid();
	verdict = verdict_of(path_flags(s, len, &d) & LSM_PATH_DENY_EXEC, &d, uid, can_deny);
	e = begin_event(LSM_EVENT_EXEC, verdict, hook, uid);
	if (e) {
		set_path(e, s, len);
		bpf_ringbuf_submit(e, 0);
	}
	return verdict;
}

/* A module load (`kind`) or request; `s` holds its file or name. */
static __always_inline __u32 on_module(struct path_scratch *s, long len, __u32 kind, __u32 hook,
				       bool can_deny)
{
	struct decision d;
	struct lsm_monitor_event *e;
	__u32 verdict, uid;

	if (!current_policy(&d))
		return LSM_VERDICT_ALLOWED;
	uid = current_uid();
	verdict = verdict_of(d.flags & LSM_POLICY_DENY_MODULES, &d, uid, can_deny);
	e = begin_event(LSM_EVENT_MODULE, verdict, hook, uid);
	if (e) {
		e->detail = kind;
		if (s)
			set_path(e, s, len);
		bpf_ringbuf_submit(e, 0);
	}
	return verdict;
}

/* A ptrace attach by the current task on `target_pid`; the tracee's uid
 * and comm are known to the LSM hook only. */
static __always_inline __u32 on_ptrace(struct task_struct *tracee, __u32 target_pid, __u32 detail,
				       __u32 hook, bool can_deny)
{
	struct decision d;
	struct lsm_monitor_event *e;
	__u32 verdict, uid, target_uid = 0;
	bool other = false;

	if (!current_policy(&d))
		return LSM_VERDICT_ALLOWED;
	uid = current_uid();
	if (tracee) {
		target_uid = BPF_CORE_READ(tracee, cred, uid.val);
		other = target_uid != uid;
	}
	verdict = verdict_of(other && (d.flags & LSM_POLICY_DENY_PTRACE_OTHER_USERS), &d, uid,
			     can_deny);
	e = begin_event(LSM_EVENT_PTRACE, verdict, hook, uid);
	if (e) {
		e->detail = detail;
		e->target_pid = target_pid;
		e->target_uid = target_uid;
		if (other)
			e->flags |= LSM_EVENT_OTHER_USER;
		if (tracee)
			BPF_CORE_READ_STR_INTO(&e->target_comm, tracee, comm);
		bpf_ringbuf_submit(e, 0);
	}
	return verdict;
}

SEC("lsm/file_open")
int BPF_PROG(lsm_open, struct file *file, int ret)
{
	struct path_scratch *s;
	long len;

	if (ret)
		return ret;
	s = get_scratch();
	if (!s)
		return 0;
	len = bpf_d_path(&file->f_path, (char *)s->key.path, SCRATCH_PATH_BYTES);
	return verdict_ret(on_open(s, len, file->f_mode & FMODE_WRITE, file->f_flags,
				   LSM_HOOK_FILE_OPEN, true));
}

SEC("lsm/bprm_check_security")
int BPF_PROG(lsm_exec, struct linux_binprm *bprm, int ret)
{
	struct path_scratch *s;
	long len;

	if (ret)
		return ret;
	s = get_scratch();
	if (!s)
		return 0;
	len = bpf_d_path(&bprm->file->f_path, (char *)s->key.path, SCRATCH_PATH_BYTES);
	return verdict_ret(on_exec(s, len, LSM_HOOK_BPRM_CHECK_SECURITY, true));
}

SEC("lsm/ptrace_access_check")
int BPF_PROG(lsm_ptrace, struct task_struct *child, unsigned int mode, int ret)
{
	/* Read-mode checks (ps reading /proc) are too many to report. */
	if (ret || !(mode & PTRACE_MODE_ATTACH))
		return ret;
	return verdict_ret(on_ptrace(child, child->tgid, mode, LSM_HOOK_PTRACE_ACCESS_CHECK, true));
}

SEC("lsm/capable")
int BPF_PROG(lsm_capable, const struct cred *cred, struct user_namespace *ns, int cap,
	     unsigned int opts, int ret)
{
	__u64 key = (bpf_get_current_pid_tgid() & ~0xFFFFFFFFULL) | (__u32)cap;
	__u64 now = bpf_ktime_get_boot_ns(), *last;
	struct lsm_counters *c;
	struct lsm_monitor_event *e;

	if (ret)
		return ret;
	last = bpf_map_lookup_elem(&capable_seen, &key);
	if (last && now - *last < LSM_CAPABLE_INTERVAL_NS) {
		c = counters_of(LSM_EVENT_CAPABLE);
		if (c)
			c->suppressed++;
		return 0;
	}
	bpf_map_update_elem(&capable_seen, &key, &now, BPF_ANY);
	e = begin_event(LSM_EVENT_CAPABLE, LSM_VERDICT_ALLOWED, LSM_HOOK_CAPABLE, current_uid());
	if (e) {
		e->detail = cap;
		bpf_ringbuf_submit(e, 0);
	}
	return 0;
}

SEC("lsm/kernel_read_file")
int BPF_PROG(lsm_read_file, struct file *file, enum kernel_read_file_id id, bool contents, int ret)
{
	struct path_scratch *s;
	long len;

	if (ret || id != READING_MODULE)
		return ret;
	s = get_scratch();
	if (!s)
		return 0;
	len = bpf_d_path(&file->f_path, (char *)s->key.path, SCRATCH_PATH_BYTES);
	return verdict_ret(
		on_module(s, len, LSM_MODULE_LOAD_FILE, LSM_HOOK_KERNEL_READ_FILE, true));
}

SEC("lsm/kernel_load_data")
int BPF_PROG(lsm_load_data, enum kernel_load_data_id id, bool contents, int ret)
{
	if (ret || id != LOADING_MODULE)
		return ret;
	return verdict_ret(
		on_module(NULL, 0, LSM_MODULE_LOAD_DATA, LSM_HOOK_KERNEL_LOAD_DATA, true));
}

SEC("lsm/kernel_module_request")
int BPF_PROG(lsm_mod_request, char *kmod_name, int ret)
{
	struct path_scratch *s;
	long len;

	if (ret)
		return ret;
	s = get_scratch();
	if (!s)
		return 0;
	len = bpf_probe_read_kernel_str(s->key.path, SCRATCH_PATH_BYTES, kmod_name);
	return verdict_ret(
		on_module(s, len, LSM_MODULE_REQUEST, LSM_HOOK_KERNEL_MODULE_REQUEST, true));
}

SEC("tp/sched/sched_process_exec")
int tp_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	struct path_scratch *s = get_scratch();
	unsigned int offset = ctx->__data_loc_filename & 0xFFFF;
	long len;

	if (!s)
		return 0;
	len = bpf_probe_read_kernel_str(s->key.path, SCRATCH_PATH_BYTES, (void *)ctx + offset);
	on_exec(s, len, LSM_HOOK_SCHED_PROCESS_EXEC, false);
	return 0;
}

#if defined(__TARGET_ARCH_x86)
/* arch/x86/include/asm/thread_info.h: set while a task runs an ia32
 * syscall, whose numbers are not the x86_64 ones in lsm_syscalls. */
#define LSM_TS_COMPAT 0x0002

static __always_inline bool compat_syscall(void)
{
	return bpf_get_current_task_btf()->thread_info.status & LSM_TS_COMPAT;
}
#else
static __always_inline bool compat_syscall(void)
{
	return false;
}
#endif

static __always_inline int sys_open(const char *user_path, __u32 open_flags)
{
	struct path_scratch *s = get_scratch();
	long len;

	if (!s)
		return 0;
	len = bpf_probe_read_user_str(s->key.path, SCRATCH_PATH_BYTES, user_path);
	on_open(s, len, (open_flags & O_ACCMODE) != 0, open_flags, LSM_HOOK_SYS_ENTER, false);
	return 0;
}

/* The basename of the module file behind descriptor `fd`: without d_path,
 * a raw tracepoint can still walk the file table to the dentry. */
static __always_inline int sys_finit_module(int fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct path_scratch *s = get_scratch();
	struct file **fds, *file = NULL;
	struct fdtable *fdt;
	long len = 0;

	if (!s)
		return 0;
	fdt = BPF_CORE_READ(task, files, fdt);
	if (fd >= 0 && (unsigned int)fd < BPF_CORE_READ(fdt, max_fds)) {
		fds = BPF_CORE_READ(fdt, fd);
		bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	}
	if (file)
		len = bpf_probe_read_kernel_str(s->key.path, SCRATCH_PATH_BYTES,
						BPF_CORE_READ(file, f_path.dentry, d_name.name));
	on_module(s, len, LSM_MODULE_LOAD_FILE, LSM_HOOK_SYS_ENTER, false);
	return 0;
}

SEC("raw_tp/sys_enter")
int tp_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	long id = ctx->args[1];

	if (id < 0 || compat_syscall())
		return 0;
	if (id == lsm_syscalls.openat)
		return sys_open((const char *)PT_REGS_PARM2_CORE_SYSCALL(regs),
				PT_REGS_PARM3_CORE_SYSCALL(regs));
	if (id == lsm_syscalls.openat2) {
		struct open_how *how = (struct open_how *)PT_REGS_PARM3_CORE_SYSCALL(regs);
		__u64 flags = 0;

		bpf_probe_read_user(&flags, sizeof(flags), &how->flags);
		return sys_open((const char *)PT_REGS_PARM2_CORE_SYSCALL(regs), flags);
	}
	if (id == lsm_syscalls.open)
		return sys_open((const char *)PT_REGS_PARM1_CORE_SYSCALL(regs),
				PT_REGS_PARM2_CORE_SYSCALL(regs));
	if (id == lsm_syscalls.creat)
		return sys_open((const char *)PT_REGS_PARM1_CORE_SYSCALL(regs),
				O_CREAT | O_WRONLY | O_TRUNC);
	if (id == lsm_syscalls.ptrace) {
		long request = PT_REGS_PARM1_CORE_SYSCALL(regs);

		if (request == PTRACE_ATTACH || request == PTRACE_SEIZE)
			on_ptrace(NULL, PT_REGS_PARM2_CORE_SYSCALL(regs), request,
				  LSM_HOOK_SYS_ENTER, false);
		return 0;
	}
	if (id == lsm_syscalls.finit_module)
		return sys_finit_module(PT_REGS_PARM1_CORE_SYSCALL(regs));
	if (id == lsm_syscalls.init_module)
		on_module(NULL, 0, LSM_MODULE_LOAD_DATA, LSM_HOOK_SYS_ENTER, false);
	return 0;
}
