//! Reading lsm_monitor's ring buffer from its pin: one reader at a time,
//! records decoded into [`Event`]s with the schema `meshbpf events` prints.

use std::fs::File;
use std::time::Duration;

use anyhow::{Context, Result};
use libbpf_rs::MapHandle;
use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;

use super::counters::{self, EventCounts};
use super::skel::types::{
    lsm_event_flags, lsm_event_type, lsm_hook, lsm_module_kind, lsm_monitor_event, lsm_verdict,
};
use super::{Method, COUNTERS_MAP, EVENTS_MAP};
use crate::error::Failure;
use crate::kernel::clock::{self, BootAnchor};
use crate::kernel::pins::AttachmentDir;
use crate::kernel::pod::plain_data;
use crate::kernel::ringbuf::TypedRing;
use crate::programs::maps;

plain_data!(lsm_monitor_event);

/// One security event, as `events -j` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// RFC 3339 with nanoseconds.
    pub time: String,
    /// CLOCK_BOOTTIME ns, as the kernel stamped it.
    pub ts_ns: u64,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub verdict: &'static str,
    pub method: Method,
    pub hook: &'static str,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    #[serde(flatten)]
    pub detail: Detail,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// What an event type adds to the common fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Detail {
    Exec {
        path: String,
    },
    Open {
        path: String,
        flags: Vec<String>,
        access: &'static str,
        /// What the syscall returned, where the hook saw it return
        /// (sys_exit): `ok`, or the errno's name.
        #[serde(skip_serializing_if = "Option::is_none")]
        result: Option<String>,
    },
    Ptrace {
        target_pid: u32,
        /// Known to the LSM hook only.
        target_uid: Option<u32>,
        target_comm: Option<String>,
        /// PTRACE_MODE_* names (LSM).
        #[serde(skip_serializing_if = "Option::is_none")]
        mode: Option<Vec<&'static str>>,
        /// The ptrace(2) request (fallback).
        #[serde(skip_serializing_if = "Option::is_none")]
        request: Option<&'static str>,
        other_user: bool,
    },
    Capable {
        capability: u32,
        capability_name: String,
    },
    Module {
        module_kind: &'static str,
        /// The file or the requested name.
        #[serde(skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
}

/// Event type names, bound to the C enum so that a renumbering in the
/// shared header cannot silently shift them.
pub const EVENT_TYPES: [(lsm_event_type, &str); 5] = [
    (lsm_event_type::LSM_EVENT_EXEC, "exec"),
    (lsm_event_type::LSM_EVENT_OPEN, "open"),
    (lsm_event_type::LSM_EVENT_PTRACE, "ptrace"),
    (lsm_event_type::LSM_EVENT_CAPABLE, "capable"),
    (lsm_event_type::LSM_EVENT_MODULE, "module"),
];

/// `--type exec,open`: the event types to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTypes(Vec<&'static str>);

impl EventTypes {
    pub fn contains(&self, kind: &str) -> bool {
        self.0.contains(&kind)
    }
}

/// Parses a comma-separated list of event types, for clap.
pub fn parse_types(text: &str) -> Result<EventTypes, String> {
    let names: Vec<&str> = EVENT_TYPES.iter().map(|(_, name)| *name).collect();
    let mut types = Vec::new();
    for given in text.split(',').map(str::trim) {
        let Some(name) = names.iter().find(|name| **name == given) else {
            return Err(format!(
                "'{given}' is not an event type (valid: {})",
                names.join(", ")
            ));
        };
        types.push(*name);
    }
    Ok(EventTypes(types))
}

/// Hook names, bound to the C enum, with the method each belongs to.
const HOOKS: [(lsm_hook, &str, Method); 10] = [
    (lsm_hook::LSM_HOOK_FILE_OPEN, "file_open", Method::Lsm),
    (
        lsm_hook::LSM_HOOK_BPRM_CHECK_SECURITY,
        "bprm_check_security",
        Method::Lsm,
    ),
    (
        lsm_hook::LSM_HOOK_PTRACE_ACCESS_CHECK,
        "ptrace_access_check",
        Method::Lsm,
    ),
    (lsm_hook::LSM_HOOK_CAPABLE, "capable", Method::Lsm),
    (
        lsm_hook::LSM_HOOK_KERNEL_READ_FILE,
        "kernel_read_file",
        Method::Lsm,
    ),
    (
        lsm_hook::LSM_HOOK_KERNEL_LOAD_DATA,
        "kernel_load_data",
        Method::Lsm,
    ),
    (
        lsm_hook::LSM_HOOK_KERNEL_MODULE_REQUEST,
        "kernel_module_request",
        Method::Lsm,
    ),
    (
        lsm_hook::LSM_HOOK_SCHED_PROCESS_EXEC,
        "sched_process_exec",
        Method::Tracepoint,
    ),
    (
        lsm_hook::LSM_HOOK_SYS_ENTER,
        "sys_enter",
        Method::Tracepoint,
    ),
    (lsm_hook::LSM_HOOK_SYS_EXIT, "sys_exit", Method::Tracepoint),
];

const VERDICTS: [(lsm_verdict, &str); 3] = [
    (lsm_verdict::LSM_VERDICT_ALLOWED, "allowed"),
    (lsm_verdict::LSM_VERDICT_DENIED, "denied"),
    (lsm_verdict::LSM_VERDICT_AUDIT, "audit"),
];

const MODULE_KINDS: [(lsm_module_kind, &str); 3] = [
    (lsm_module_kind::LSM_MODULE_LOAD_FILE, "load_file"),
    (lsm_module_kind::LSM_MODULE_LOAD_DATA, "load_data"),
    (lsm_module_kind::LSM_MODULE_REQUEST, "request"),
];

/// include/linux/ptrace.h
const PTRACE_MODES: [(u32, &str); 5] = [
    (0x01, "read"),
    (0x02, "attach"),
    (0x04, "noaudit"),
    (0x08, "fscreds"),
    (0x10, "realcreds"),
];

/// include/uapi/linux/ptrace.h
const PTRACE_REQUESTS: [(u32, &str); 2] = [(16, "PTRACE_ATTACH"), (0x4206, "PTRACE_SEIZE")];

/// include/uapi/linux/capability.h, by number.
const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The kernel's O_LARGEFILE, which it sets on every open by a 64-bit
/// process; the C library's headers there call it 0.
#[cfg(target_arch = "aarch64")]
const O_LARGEFILE: libc::c_int = 0o400000;
#[cfg(not(target_arch = "aarch64"))]
const O_LARGEFILE: libc::c_int = 0o100000;

/// Open flags by name, for this architecture. Multi-bit flags come before
/// the single bits they contain (O_SYNC holds O_DSYNC, O_TMPFILE holds
/// O_DIRECTORY); each name takes its bits, so none is named twice.
const OPEN_FLAGS: [(libc::c_int, &str); 17] = [
    (libc::O_SYNC, "O_SYNC"),
    (libc::O_DSYNC, "O_DSYNC"),
    (libc::O_TMPFILE, "O_TMPFILE"),
    (libc::O_DIRECTORY, "O_DIRECTORY"),
    (libc::O_CREAT, "O_CREAT"),
    (libc::O_EXCL, "O_EXCL"),
    (libc::O_NOCTTY, "O_NOCTTY"),
    (libc::O_TRUNC, "O_TRUNC"),
    (libc::O_APPEND, "O_APPEND"),
    (libc::O_NONBLOCK, "O_NONBLOCK"),
    (libc::O_ASYNC, "O_ASYNC"),
    (libc::O_DIRECT, "O_DIRECT"),
    (O_LARGEFILE, "O_LARGEFILE"),
    (libc::O_NOFOLLOW, "O_NOFOLLOW"),
    (libc::O_NOATIME, "O_NOATIME"),
    (libc::O_CLOEXEC, "O_CLOEXEC"),
    (libc::O_PATH, "O_PATH"),
];

/// `O_WRONLY|O_CREAT|...` as names: the access mode first, then every
/// known flag, then what no name covers in hex (the kernel's own f_flags
/// bits such as __FMODE_EXEC).
pub fn open_flag_names(flags: u32) -> Vec<String> {
    let mut names = vec![match flags & libc::O_ACCMODE as u32 {
        0 => "O_RDONLY",
        1 => "O_WRONLY",
        2 => "O_RDWR",
        _ => "O_ACCMODE",
    }
    .to_string()];
    let mut rest = flags & !(libc::O_ACCMODE as u32);
    for (mask, name) in OPEN_FLAGS {
        let mask = mask as u32;
        if rest & mask == mask {
            names.push(name.to_string());
            rest &= !mask;
        }
    }
    if rest != 0 {
        names.push(format!("{rest:#x}"));
    }
    names
}

fn access(flags: u32) -> &'static str {
    match flags & libc::O_ACCMODE as u32 {
        0 => "read",
        1 => "write",
        _ => "read_write",
    }
}

pub fn capability_name(cap: u32) -> String {
    CAPABILITIES
        .get(cap as usize)
        .map_or_else(|| format!("CAP_{cap}"), |name| name.to_string())
}

/// A NUL-terminated C string of the record.
fn text(bytes: &[i8]) -> String {
    let bytes: Vec<u8> = bytes
        .iter()
        .map(|&b| b as u8)
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn bad(what: &str, value: u32) -> anyhow::Error {
    Failure::new(format!(
        "lsm_monitor's ring buffer holds an event with an unknown {what} {value}"
    ))
    .hint("the attached lsm_monitor is not this meshbpf's: meshbpf detach --lsm, then attach --lsm")
    .into()
}

/// `ok` for a descriptor, else the errno's name (`ENOENT`).
fn syscall_result(result: i32) -> String {
    if result >= 0 {
        "ok".into()
    } else {
        format!("{:?}", nix::errno::Errno::from_raw(-result))
    }
}

/// Decodes one record; `anchor` turns its boot-time stamp into wall time.
pub fn decode(raw: &lsm_monitor_event, anchor: &BootAnchor) -> Result<Event> {
    let (_, hook, method) = *HOOKS
        .iter()
        .find(|(h, _, _)| h.0 == raw.hook)
        .ok_or_else(|| bad("hook", raw.hook))?;
    let kind = EVENT_TYPES
        .iter()
        .find(|(t, _)| t.0 == raw.r#type)
        .map(|(_, name)| *name)
        .ok_or_else(|| bad("type", raw.r#type))?;
    let verdict = VERDICTS
        .iter()
        .find(|(v, _)| v.0 == raw.verdict)
        .map(|(_, name)| *name)
        .ok_or_else(|| bad("verdict", raw.verdict))?;
    let path = text(&raw.path);
    let lsm = method == Method::Lsm;
    let detail = match kind {
        "exec" => Detail::Exec { path },
        "open" => Detail::Open {
            path,
            flags: open_flag_names(raw.detail),
            access: access(raw.detail),
            result: (raw.hook == lsm_hook::LSM_HOOK_SYS_EXIT.0).then(|| syscall_result(raw.result)),
        },
        "ptrace" => Detail::Ptrace {
            target_pid: raw.target_pid,
            target_uid: lsm.then_some(raw.target_uid),
            target_comm: lsm.then(|| text(&raw.target_comm)),
            mode: lsm.then(|| {
                PTRACE_MODES
                    .iter()
                    .filter(|(bit, _)| raw.detail & bit != 0)
                    .map(|(_, name)| *name)
                    .collect()
            }),
            request: if lsm {
                None
            } else {
                Some(
                    PTRACE_REQUESTS
                        .iter()
                        .find(|(nr, _)| *nr == raw.detail)
                        .map(|(_, name)| *name)
                        .ok_or_else(|| bad("ptrace request", raw.detail))?,
                )
            },
            other_user: raw.flags & lsm_event_flags::LSM_EVENT_OTHER_USER.0 != 0,
        },
        "capable" => Detail::Capable {
            capability: raw.detail,
            capability_name: capability_name(raw.detail),
        },
        _ => Detail::Module {
            module_kind: MODULE_KINDS
                .iter()
                .find(|(k, _)| k.0 == raw.detail)
                .map(|(_, name)| *name)
                .ok_or_else(|| bad("module kind", raw.detail))?,
            path: (!path.is_empty()).then_some(path),
        },
    };
    Ok(Event {
        time: clock::rfc3339_nanos(anchor.wall(raw.ts_ns)),
        ts_ns: raw.ts_ns,
        kind,
        verdict,
        method,
        hook,
        pid: raw.pid,
        ppid: raw.ppid,
        uid: raw.uid,
        comm: text(&raw.comm),
        cgroup_id: raw.cgroup_id,
        detail,
        truncated: raw.flags & lsm_event_flags::LSM_EVENT_TRUNCATED.0 != 0,
    })
}

/// The ring buffer of an attachment, open for reading.
pub struct Reader {
    ring: TypedRing<lsm_monitor_event>,
    counters: MapHandle,
    dir: AttachmentDir,
    /// Held while reading: a ring buffer has one consumer position, and two
    /// readers would each see a random half of the events.
    _lock: Flock<File>,
}

impl Reader {
    /// Opens the pinned ring buffer of `dir`; fails when another reader
    /// has it.
    pub fn open(dir: &AttachmentDir) -> Result<Reader> {
        let lock = lock_reader(dir)?;
        let ring = TypedRing::open(&dir.map(EVENTS_MAP))?;
        let counters = maps::open_pinned_map(dir, COUNTERS_MAP)?;
        Ok(Reader {
            ring,
            counters,
            dir: dir.clone(),
            _lock: lock,
        })
    }

    /// Whether the attachment still pins the ring buffer this reads: after
    /// a detach (and maybe a new attach), no event can come any more.
    pub fn still_attached(&self) -> Result<bool> {
        Ok(self.dir.is_committed()
            && self
                .ring
                .pinned_at(&self.dir.map(EVENTS_MAP))
                .context("checking that lsm_monitor is still attached")?)
    }

    /// Takes up to `max` records that are in the buffer now, without
    /// waiting; an empty batch means the buffer is drained.
    pub fn take(&mut self, max: usize) -> Result<Vec<lsm_monitor_event>> {
        self.ring
            .take(max)
            .context("reading lsm_monitor's ring buffer")
    }

    /// Waits up to `timeout` for records to arrive; a signal (Ctrl-C) cuts
    /// the wait short.
    pub fn wait(&self, timeout: Duration) -> Result<()> {
        // Not the ring buffer's own poll: it consumes everything that
        // arrives while it runs, where `take` reads in bounded batches.
        self.ring
            .wait(timeout)
            .context("waiting for lsm_monitor's events")
    }

    /// The kernel's counters, lost events included.
    pub fn counters(&self) -> Result<EventCounts> {
        counters::read(&self.counters)
    }
}

/// bpffs refuses open() on a ring buffer's pin (EIO), so the reader lock is
/// taken on the attachment's directory.
fn lock_reader(dir: &AttachmentDir) -> Result<Flock<File>> {
    let file = File::open(&dir.path).with_context(|| format!("opening {}", dir.path.display()))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == nix::errno::Errno::EWOULDBLOCK {
            Failure::new(format!(
                "another `meshbpf events` is reading {}: a ring buffer has one reader",
                dir.map(EVENTS_MAP).display()
            ))
            .hint(format!(
                "stop the other reader (fuser -v {} names it), or read from it",
                dir.path.display()
            ))
            .into()
        } else {
            anyhow::Error::from(errno).context(format!("locking {}", dir.path.display()))
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn record(kind: u32, hook: lsm_hook, detail: u32, path: &str) -> lsm_monitor_event {
        let mut raw = lsm_monitor_event {
            ts_ns: 7_000_000_123,
            cgroup_id: 4242,
            r#type: kind,
            verdict: 0,
            hook: hook.0,
            pid: 100,
            ppid: 1,
            uid: 1000,
            detail,
            ..lsm_monitor_event::default()
        };
        for (slot, byte) in raw.comm.iter_mut().zip(b"cat") {
            *slot = *byte as i8;
        }
        for (slot, byte) in raw.path.iter_mut().zip(path.bytes()) {
            *slot = byte as i8;
        }
        raw
    }

    fn anchor() -> BootAnchor {
        BootAnchor {
            boottime_ns: 7_000_000_000,
            wall: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
        }
    }

    fn json(raw: &lsm_monitor_event) -> serde_json::Value {
        serde_json::to_value(decode(raw, &anchor()).unwrap()).unwrap()
    }

    #[test]
    fn an_open_from_the_fallback_has_every_field() {
        let flags = (libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC) as u32;
        let mut raw = record(1, lsm_hook::LSM_HOOK_SYS_EXIT, flags, "/tmp/w/f");
        raw.result = -libc::ENOENT;
        assert_eq!(
            json(&raw),
            serde_json::json!({
                "time": "2027-01-15T08:00:00.000000123Z",
                "ts_ns": 7_000_000_123u64,
                "type": "open",
                "verdict": "allowed",
                "method": "tracepoint",
                "hook": "sys_exit",
                "pid": 100,
                "ppid": 1,
                "uid": 1000,
                "comm": "cat",
                "cgroup_id": 4242,
                "path": "/tmp/w/f",
                "flags": ["O_WRONLY", "O_CREAT", "O_TRUNC"],
                "access": "write",
                "result": "ENOENT",
            })
        );
        raw.result = 3;
        assert_eq!(json(&raw)["result"], "ok");
        raw.hook = lsm_hook::LSM_HOOK_FILE_OPEN.0;
        assert_eq!(json(&raw).get("result"), None);
    }

    #[test]
    fn open_flags_are_named_once_each() {
        assert_eq!(open_flag_names(0), ["O_RDONLY"]);
        assert_eq!(
            open_flag_names((libc::O_RDWR | libc::O_SYNC | libc::O_CLOEXEC) as u32),
            ["O_RDWR", "O_SYNC", "O_CLOEXEC"]
        );
        assert_eq!(
            open_flag_names((libc::O_RDONLY | libc::O_DIRECTORY) as u32),
            ["O_RDONLY", "O_DIRECTORY"]
        );
        assert_eq!(
            open_flag_names((libc::O_WRONLY | libc::O_TMPFILE) as u32),
            ["O_WRONLY", "O_TMPFILE"]
        );
        // __FMODE_EXEC, which the kernel keeps in f_flags.
        assert_eq!(open_flag_names(0x20), ["O_RDONLY", "0x20"]);
        assert_eq!(access(0), "read");
        assert_eq!(access(libc::O_WRONLY as u32), "write");
        assert_eq!(access(libc::O_RDWR as u32), "read_write");
    }

    #[test]
    fn exec_events_carry_the_path_and_the_truncation() {
        let mut raw = record(0, lsm_hook::LSM_HOOK_SCHED_PROCESS_EXEC, 0, "/usr/bin/true");
        let event = json(&raw);
        assert_eq!(event["type"], "exec");
        assert_eq!(event["hook"], "sched_process_exec");
        assert_eq!(event["method"], "tracepoint");
        assert_eq!(event["path"], "/usr/bin/true");
        assert_eq!(event.get("truncated"), None);
        assert_eq!(event.get("flags"), None);
        raw.flags = lsm_event_flags::LSM_EVENT_TRUNCATED.0;
        raw.hook = lsm_hook::LSM_HOOK_BPRM_CHECK_SECURITY.0;
        raw.verdict = 1;
        let event = json(&raw);
        assert_eq!(event["truncated"], true);
        assert_eq!(event["method"], "lsm");
        assert_eq!(event["verdict"], "denied");
    }

    #[test]
    fn ptrace_events_say_what_each_method_knows() {
        let mut raw = record(2, lsm_hook::LSM_HOOK_PTRACE_ACCESS_CHECK, 0x12, "");
        raw.target_pid = 200;
        raw.target_uid = 0;
        raw.flags = lsm_event_flags::LSM_EVENT_OTHER_USER.0;
        for (slot, byte) in raw.target_comm.iter_mut().zip(b"sshd") {
            *slot = *byte as i8;
        }
        let event = json(&raw);
        assert_eq!(event["target_pid"], 200);
        assert_eq!(event["target_uid"], 0);
        assert_eq!(event["target_comm"], "sshd");
        assert_eq!(event["mode"], serde_json::json!(["attach", "realcreds"]));
        assert_eq!(event.get("request"), None);
        assert_eq!(event["other_user"], true);

        let mut raw = record(2, lsm_hook::LSM_HOOK_SYS_ENTER, 0x4206, "");
        raw.target_pid = 300;
        let event = json(&raw);
        assert_eq!(event["target_uid"], serde_json::Value::Null);
        assert_eq!(event["target_comm"], serde_json::Value::Null);
        assert_eq!(event["request"], "PTRACE_SEIZE");
        assert_eq!(event.get("mode"), None);
        assert_eq!(event["other_user"], false);
    }

    #[test]
    fn capabilities_and_modules_are_named() {
        let event = json(&record(3, lsm_hook::LSM_HOOK_CAPABLE, 21, ""));
        assert_eq!(event["capability"], 21);
        assert_eq!(event["capability_name"], "CAP_SYS_ADMIN");
        assert_eq!(capability_name(0), "CAP_CHOWN");
        assert_eq!(capability_name(40), "CAP_CHECKPOINT_RESTORE");
        assert_eq!(capability_name(41), "CAP_41");

        let event = json(&record(4, lsm_hook::LSM_HOOK_KERNEL_LOAD_DATA, 1, ""));
        assert_eq!(event["module_kind"], "load_data");
        assert_eq!(event.get("path"), None);
        let event = json(&record(
            4,
            lsm_hook::LSM_HOOK_KERNEL_MODULE_REQUEST,
            2,
            "net-pf-38",
        ));
        assert_eq!(event["module_kind"], "request");
        assert_eq!(event["path"], "net-pf-38");
    }

    #[test]
    fn unknown_values_are_refused_by_name() {
        let mut raw = record(9, lsm_hook::LSM_HOOK_SYS_ENTER, 0, "");
        let err = decode(&raw, &anchor()).unwrap_err().to_string();
        assert_eq!(
            err,
            "lsm_monitor's ring buffer holds an event with an unknown type 9"
        );
        raw.r#type = 0;
        raw.hook = 99;
        let err = decode(&raw, &anchor()).unwrap_err().to_string();
        assert!(err.ends_with("unknown hook 99"), "{err}");
    }

    #[test]
    fn type_lists_name_what_is_wrong() {
        let types = parse_types("exec, open").unwrap();
        assert!(types.contains("exec") && types.contains("open"));
        assert!(!types.contains("ptrace"));
        assert_eq!(
            parse_types("exec,opens").unwrap_err(),
            "'opens' is not an event type (valid: exec, open, ptrace, capable, module)"
        );
        assert!(parse_types("").is_err());
    }

    #[test]
    fn every_type_hook_and_module_kind_has_a_name_in_slot_order() {
        assert_eq!(
            EVENT_TYPES.len(),
            lsm_event_type::LSM_EVENT_TYPES.0 as usize
        );
        for (i, (kind, _)) in EVENT_TYPES.iter().enumerate() {
            assert_eq!(kind.0 as usize, i);
        }
        for (i, (hook, _, _)) in HOOKS.iter().enumerate() {
            assert_eq!(hook.0 as usize, i);
        }
        for (i, (kind, _)) in MODULE_KINDS.iter().enumerate() {
            assert_eq!(kind.0 as usize, i);
        }
    }
}
