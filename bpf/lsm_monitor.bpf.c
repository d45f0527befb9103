// SPDX-License-Identifier: GPL-2.0
/* lsm_monitor: security events (exec, opens under watched paths, ptrace
 * attach, capability use, module loads) through one ring buffer, audited or
 * denied by a policy replaced atomically from userspace.
 *
 * Two program sets share the maps; userspace loads one. The BPF LSM set can
 * deny. The fallback set (sched_process_exec tracepoint, raw sys_enter and
 * sys_exit) runs where BPF LSM programs are refused and can only audit: it
 * has no d_path, so it walks dentries to name files, and resolves the names
 * of failed opens itself. */
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
/* The fallback joins a directory and a name of up to LSM_RESOLVED_PATH_LEN
 * bytes each into `path`, so it has room for two; the masks keep every
 * index the verifier sees inside it. */
#define SCRATCH_REGION_BYTES (2 * LSM_RESOLVED_PATH_LEN)
#define REGION_MASK	     (SCRATCH_REGION_BYTES - 1)
#define RESOLVED_MASK	     (LSM_RESOLVED_PATH_LEN - 1)
#define STARTS_MASK	     (SCRATCH_REGION_BYTES / 2 - 1)
/* include/uapi/linux/limits.h, include/uapi/linux/fcntl.h */
#define NAME_MAX   255
#define AT_FDCWD   -100
#define DEV_FD	   "/dev/fd/"
#define DEV_FD_LEN 8

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

/* The state of the fallback's walk from a dentry up to the root. */
struct walk {
	struct dentry *dentry;
	struct vfsmount *vfsmnt;
	struct dentry *root_dentry;
	struct vfsmount *root_mnt;
	/* Where the name built so far starts in `walk`; it ends at
	 * LSM_RESOLVED_PATH_LEN. */
	__u32 start;
	__u32 reached_root;
};

/* The state of a path's normalisation. */
struct normalise {
	__u32 written;
	/* Where the component being copied starts (its '/'). */
	__u32 start;
	/* How many components are kept, in `starts`. */
	__u32 depth;
	__u32 done;
};

/* A policy key whose path runs on into the overflow, so d_path and the
 * user copy write a whole path where the lookup reads its first bytes. */
struct path_scratch {
	struct lsm_path_key key;
	__u8 overflow[SCRATCH_REGION_BYTES - LSM_KEY_PATH_LEN];
	/* The fallback's dentry walk writes names from the end backwards. */
	char walk[LSM_RESOLVED_PATH_LEN + NAME_MAX + 1];
	/* Where each component kept by normalisation starts in the path. */
	__u16 starts[SCRATCH_REGION_BYTES / 2];
	/* exec: the executed file, while the name it was run by is looked up. */
	char exe[LSM_PATH_LEN];
	struct walk walk_state;
	struct normalise norm;
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
	e->result = 0;
	e->pad = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->target_comm[0] = 0;
	e->path[0] = 0;
	return e;
}

/* Copies `path` (length `len` with the NUL, or an error) into the event,
 * flagging a cut. */
static __always_inline void set_path(struct lsm_monitor_event *e, const char *path, long len)
{
	if (len <= 0)
		return;
	bpf_probe_read_kernel_str(e->path, sizeof(e->path), path);
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

/* An open of the path in `s` under policy `d`, reported when the path is
 * watched or it writes under a write-protected prefix; `result` is the
 * syscall's where it is known. */
static __always_inline __u32 on_open(const struct decision *d, struct path_scratch *s, long len,
				     bool write, __u32 open_flags, __s32 result, __u32 hook,
				     bool can_deny)
{
	struct lsm_monitor_event *e;
	__u32 flags, verdict, uid;

	flags = path_flags(s, len, d);
	if (!(flags & LSM_PATH_WATCH) && !(write && (flags & LSM_PATH_DENY_WRITE)))
		return LSM_VERDICT_ALLOWED;
	uid = current_uid();
	verdict = verdict_of(write && (flags & LSM_PATH_DENY_WRITE), d, uid, can_deny);
	e = begin_event(LSM_EVENT_OPEN, verdict, hook, uid);
	if (e) {
		e->detail = open_flags;
		e->result = result;
		set_path(e, (const char *)s->key.path, len);
		bpf_ringbuf_submit(e, 0);
	}
	return verdict;
}

/* An exec of `path` under policy `d`, which denies it when `denied`. */
static __always_inline __u32 on_exec(const struct decision *d, const char *path, long len,
				     bool denied, __u32 hook, bool can_deny)
{
	struct lsm_monitor_event *e;
	__u32 verdict, uid;

	uid = current_uid();
	verdict = verdict_of(denied, d, uid, can_deny);
	e = begin_event(LSM_EVENT_EXEC, verdict, hook, uid);
	if (e) {
		set_path(e, path, len);
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
			set_path(e, (const char *)s->key.path, len);
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
	struct decision d;
	long len;

	if (ret)
		return ret;
	s = get_scratch();
	if (!s || !current_policy(&d))
		return 0;
	len = bpf_d_path(&file->f_path, (char *)s->key.path, SCRATCH_PATH_BYTES);
	return verdict_ret(on_open(&d, s, len, file->f_mode & FMODE_WRITE, file->f_flags, 0,
				   LSM_HOOK_FILE_OPEN, true));
}

SEC("lsm/bprm_check_security")
int BPF_PROG(lsm_exec, struct linux_binprm *bprm, int ret)
{
	struct path_scratch *s;
	struct decision d;
	long len;

	if (ret)
		return ret;
	s = get_scratch();
	if (!s || !current_policy(&d))
		return 0;
	len = bpf_d_path(&bprm->file->f_path, (char *)s->key.path, SCRATCH_PATH_BYTES);
	return verdict_ret(on_exec(&d, (const char *)s->key.path, len,
				   path_flags(s, len, &d) & LSM_PATH_DENY_EXEC,
				   LSM_HOOK_BPRM_CHECK_SECURITY, true));
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

/* The fallback's programs cannot call d_path: they resolve paths
 * themselves, the way d_path and path lookup would, into `s->key.path`.
 * Their loops are bpf_loop callbacks whose state lives in the scratch map,
 * where the verifier knows no value: state on the stack starts as known
 * constants, and the verifier would follow every iteration apart. */
struct loop_ctx {
	struct path_scratch *s;
};

static __always_inline struct mount *mount_of(struct vfsmount *vfsmnt)
{
	return (struct mount *)((char *)vfsmnt - bpf_core_field_offset(struct mount, mnt));
}

/* A dentry is named by walking up to the task's root: each step prepends
 * a name, or crosses from a mount's root to where it is mounted. */
static long walk_step(__u64 index, struct loop_ctx *ctx)
{
	struct path_scratch *s = ctx->s;
	struct walk *w = &s->walk_state;
	struct dentry *dentry = w->dentry, *parent;
	struct vfsmount *vfsmnt = w->vfsmnt;
	struct mount *mnt, *up;
	const unsigned char *name;
	__u32 len;

	if (dentry == w->root_dentry && vfsmnt == w->root_mnt)
		goto root;
	if (dentry == BPF_CORE_READ(vfsmnt, mnt_root)) {
		mnt = mount_of(vfsmnt);
		up = BPF_CORE_READ(mnt, mnt_parent);
		if (up == mnt)
			goto root;
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->vfsmnt =
			(struct vfsmount *)((char *)up + bpf_core_field_offset(struct mount, mnt));
		return 0;
	}
	parent = BPF_CORE_READ(dentry, d_parent);
	if (parent == dentry)
		goto root;
	len = BPF_CORE_READ(dentry, d_name.len);
	name = BPF_CORE_READ(dentry, d_name.name);
	/* Two bytes stay free: the leading '/' and the NUL of the result. */
	if (len > NAME_MAX || len + 2 > w->start)
		return 1;
	w->start -= len;
	bpf_probe_read_kernel(&s->walk[w->start & RESOLVED_MASK], len & NAME_MAX, name);
	w->start--;
	s->walk[w->start & RESOLVED_MASK] = '/';
	w->dentry = parent;
	return 0;
root:
	w->reached_root = true;
	return 1;
}

/* Writes the absolute path of `path` into s->key.path; its length with the
 * NUL, or -1 when it is longer than LSM_RESOLVED_PATH_LEN allows. */
static __always_inline long resolve_path(struct path_scratch *s, const struct path *path)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct walk *w = &s->walk_state;
	struct loop_ctx ctx = { .s = s };
	char *out = (char *)s->key.path;
	__u32 len;

	w->dentry = BPF_CORE_READ(path, dentry);
	w->vfsmnt = BPF_CORE_READ(path, mnt);
	w->root_dentry = BPF_CORE_READ(task, fs, root.dentry);
	w->root_mnt = BPF_CORE_READ(task, fs, root.mnt);
	w->start = LSM_RESOLVED_PATH_LEN;
	w->reached_root = false;
	bpf_loop(LSM_WALK_STEPS, walk_step, &ctx, 0);
	if (!w->reached_root || w->start > LSM_RESOLVED_PATH_LEN)
		return -1;
	len = LSM_RESOLVED_PATH_LEN - w->start;
	if (!len) {
		out[0] = '/';
		out[1] = 0;
		return 2;
	}
	bpf_probe_read_kernel(out, len & RESOLVED_MASK, &s->walk[w->start & RESOLVED_MASK]);
	out[len & RESOLVED_MASK] = 0;
	return len + 1;
}

/* Lexical normalisation of an absolute path in place, as path lookup
 * reads it without following symbolic links: empty and "." components go,
 * ".." removes the component before it (none above the root). The output
 * is never longer than what was read, so `written` never passes the byte
 * being read. */
static long normalise_step(__u64 index, struct loop_ctx *ctx)
{
	struct path_scratch *s = ctx->s;
	struct normalise *n = &s->norm;
	char *path = (char *)s->key.path;
	/* Byte 0 is the root's '/', kept. */
	char c = path[(index + 1) & REGION_MASK];
	__u32 len, start = n->start;

	if (c != '/' && c) {
		path[n->written & REGION_MASK] = c;
		n->written++;
		return 0;
	}
	len = n->written - start - 1;
	if (!len || (len == 1 && path[(start + 1) & REGION_MASK] == '.')) {
		n->written = start;
	} else if (len == 2 && path[(start + 1) & REGION_MASK] == '.' &&
		   path[(start + 2) & REGION_MASK] == '.') {
		/* At the root, ".." stays there: the component just goes. */
		n->written = start;
		if (n->depth) {
			n->depth--;
			n->written = s->starts[n->depth & STARTS_MASK];
		}
	} else {
		s->starts[n->depth & STARTS_MASK] = start;
		n->depth++;
	}
	if (!c) {
		n->done = true;
		return 1;
	}
	n->start = n->written;
	path[n->written & REGION_MASK] = '/';
	n->written++;
	return 0;
}

/* Normalises the absolute path in s->key.path of length `len` (with the
 * NUL); its new length. */
static __always_inline long normalise(struct path_scratch *s, long len)
{
	struct normalise *n = &s->norm;
	struct loop_ctx ctx = { .s = s };
	char *path = (char *)s->key.path;

	if (len < 2 || len > SCRATCH_REGION_BYTES)
		return len;
	n->written = 1;
	n->start = 0;
	n->depth = 0;
	n->done = false;
	bpf_loop(len - 1, normalise_step, &ctx, 0);
	if (!n->done)
		return -1;
	if (!n->written)
		n->written = 1;
	path[n->written & REGION_MASK] = 0;
	return n->written + 1;
}

static __always_inline struct file *file_of_fd(long fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct file **fds, *file = NULL;
	struct fdtable *fdt;

	fdt = BPF_CORE_READ(task, files, fdt);
	if (fd < 0 || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	return file;
}

/* Writes into s->key.path the file name `name` (user memory when `user`)
 * made absolute against directory `dirfd` (AT_FDCWD: the working
 * directory) and normalised; its length with the NUL, or -1. Symbolic
 * links are not followed: the name may not exist. */
static __always_inline long resolve_name(struct path_scratch *s, long dirfd, const char *name,
					 bool user)
{
	struct task_struct *task = bpf_get_current_task_btf();
	char *path = (char *)s->key.path;
	const struct path *dir;
	struct file *file;
	long base = 0, len;
	char first = 0;

	if (user)
		bpf_probe_read_user(&first, 1, name);
	else
		bpf_probe_read_kernel(&first, 1, name);
	if (first != '/') {
		if ((int)dirfd == AT_FDCWD) {
			dir = &BPF_CORE_READ(task, fs)->pwd;
		} else {
			file = file_of_fd((int)dirfd);
			if (!file)
				return -1;
			dir = &file->f_path;
		}
		base = resolve_path(s, dir);
		if (base <= 0)
			return -1;
		/* The NUL becomes the separator. */
		base--;
		path[base & RESOLVED_MASK] = '/';
		base++;
	}
	if (user)
		len = bpf_probe_read_user_str(&path[base & RESOLVED_MASK], LSM_RESOLVED_PATH_LEN,
					      name);
	else
		len = bpf_probe_read_kernel_str(&path[base & RESOLVED_MASK], LSM_RESOLVED_PATH_LEN,
						name);
	if (len <= 0)
		return -1;
	return normalise(s, base + len);
}

static __always_inline bool starts_with_dev_fd(const char *name)
{
	char prefix[DEV_FD_LEN] = {};
	const char dev_fd[] = DEV_FD;
	int i;

	bpf_probe_read_kernel(prefix, sizeof(prefix), name);
	for (i = 0; i < DEV_FD_LEN; i++)
		if (prefix[i] != dev_fd[i])
			return false;
	return true;
}

/* An exec is checked against both the name it was run by and the file the
 * kernel runs: they differ for a script (its interpreter runs), a symbolic
 * link, and execveat or fexecve, whose name is /dev/fd/N and says nothing.
 * The event names the name, unless only the file is denied or the name is
 * a descriptor's. */
SEC("tp/sched/sched_process_exec")
int tp_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	const char *filename = (void *)ctx + (ctx->__data_loc_filename & 0xFFFF);
	struct path_scratch *s = get_scratch();
	bool name_denied = false, exe_denied;
	struct decision d;
	long name_len = -1, exe_len = -1;
	struct file *exe;

	if (!s || !current_policy(&d))
		return 0;
	exe = BPF_CORE_READ(bpf_get_current_task_btf(), mm, exe_file);
	if (exe)
		exe_len = resolve_path(s, &exe->f_path);
	exe_denied = path_flags(s, exe_len, &d) & LSM_PATH_DENY_EXEC;
	if (exe_len > 0)
		bpf_probe_read_kernel_str(s->exe, sizeof(s->exe), s->key.path);
	if (!starts_with_dev_fd(filename)) {
		name_len = resolve_name(s, AT_FDCWD, filename, false);
		name_denied = path_flags(s, name_len, &d) & LSM_PATH_DENY_EXEC;
	}
	if (name_len > 0 && (name_denied || !exe_denied))
		on_exec(&d, (const char *)s->key.path, name_len, name_denied,
			LSM_HOOK_SCHED_PROCESS_EXEC, false);
	else
		on_exec(&d, s->exe, exe_len, exe_denied, LSM_HOOK_SCHED_PROCESS_EXEC, false);
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

/* At sys_exit the number is no longer an argument of the tracepoint. */
static __always_inline long syscall_nr(struct pt_regs *regs)
{
	return BPF_CORE_READ(regs, orig_ax);
}
#else
#error "lsm_monitor: add this architecture's compat check and syscall number register"
#endif

/* A module load's file, from the descriptor passed to finit_module. */
static __always_inline int sys_finit_module(int fd)
{
	struct path_scratch *s = get_scratch();
	struct file *file;
	long len = 0;

	if (!s)
		return 0;
	file = file_of_fd(fd);
	if (file)
		len = resolve_path(s, &file->f_path);
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

/* An open seen when it returns: a descriptor names the file the kernel
 * opened, exactly; a failure leaves only the name, resolved here. */
static __always_inline int sys_open(long ret, long dirfd, const char *name, __u32 open_flags)
{
	struct path_scratch *s = get_scratch();
	struct decision d;
	struct file *file;
	bool write;
	long len;

	if (!s || !current_policy(&d) || !(d.flags & LSM_POLICY_PATHS))
		return 0;
	if (ret >= 0) {
		file = file_of_fd(ret);
		if (!file)
			return 0;
		len = resolve_path(s, &file->f_path);
		write = BPF_CORE_READ(file, f_mode) & FMODE_WRITE;
	} else {
		len = resolve_name(s, dirfd, name, true);
		write = (open_flags & O_ACCMODE) != 0;
	}
	on_open(&d, s, len, write, open_flags, ret, LSM_HOOK_SYS_EXIT, false);
	return 0;
}

SEC("raw_tp/sys_exit")
int tp_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	long ret = ctx->args[1], id;

	if (compat_syscall())
		return 0;
	id = syscall_nr(regs);
	if (id < 0)
		return 0;
	if (id == lsm_syscalls.openat)
		return sys_open(ret, PT_REGS_PARM1_CORE_SYSCALL(regs),
				(const char *)PT_REGS_PARM2_CORE_SYSCALL(regs),
				PT_REGS_PARM3_CORE_SYSCALL(regs));
	if (id == lsm_syscalls.openat2) {
		struct open_how *how = (struct open_how *)PT_REGS_PARM3_CORE_SYSCALL(regs);
		__u64 flags = 0;

		bpf_probe_read_user(&flags, sizeof(flags), &how->flags);
		return sys_open(ret, PT_REGS_PARM1_CORE_SYSCALL(regs),
				(const char *)PT_REGS_PARM2_CORE_SYSCALL(regs), flags);
	}
	if (id == lsm_syscalls.open)
		return sys_open(ret, AT_FDCWD, (const char *)PT_REGS_PARM1_CORE_SYSCALL(regs),
				PT_REGS_PARM2_CORE_SYSCALL(regs));
	if (id == lsm_syscalls.creat)
		return sys_open(ret, AT_FDCWD, (const char *)PT_REGS_PARM1_CORE_SYSCALL(regs),
				O_CREAT | O_WRONLY | O_TRUNC);
	return 0;
}
