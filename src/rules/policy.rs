//! The policy file of `lsm_monitor` (`attach --lsm --policy FILE`,
//! `lsm apply`, `lsm check`).
//!
//! ```json
//! { "watch": ["/etc", "/root/.ssh"],
//!   "deny": { "write": ["/etc/ssh", "/usr/bin"],
//!             "exec": ["/tmp", "/dev/shm"],
//!             "ptrace_other_users": true,
//!             "modules": true },
//!   "allow": { "uid": [0], "comm": ["apt"],
//!              "cgroup": ["/sys/fs/cgroup/system.slice/apt.service", 4242] } }
//! ```
//!
//! Every field is optional. `watch` lists path prefixes whose opens are
//! reported; `deny.write` prefixes under which opening for writing is
//! denied (and reported), `deny.exec` prefixes from which exec is denied;
//! `deny.ptrace_other_users` denies attaching ptrace to another user's
//! process, `deny.modules` loading kernel modules. Every exec is reported.
//! Processes whose real uid, comm, or cgroup (or one of its ancestors) is on
//! an `allow` list are never denied. Denials hold in enforce mode; in audit
//! mode they are reported with the verdict `audit`.
//!
//! A prefix covers the path itself and what is under it: `/etc` covers
//! `/etc` and `/etc/passwd`, never `/etcetera`. Prefixes are absolute and
//! written as the kernel reports paths (no `.`, `..` or `//`; a trailing
//! `/` is dropped), at most [`MAX_PREFIX_LEN`] bytes. A cgroup is a cgroup v2
//! directory, resolved to its id when the file is read, or the id itself.

mod lockout;
mod paths;

use std::fmt;
use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{load_file, object, optional, parse_document, Expected, RuleError};
use crate::kernel::{files, mounts};

pub use lockout::{probes as lockout_probes, Operator, Probe};

use crate::programs::lsm_monitor::skel::types::{lsm_limits, lsm_path_flags, lsm_policy_flags};

/// Bytes of a prefix: its two map keys, "P\0" and "P/", stay within the
/// key's path and a path's NUL.
pub const MAX_PREFIX_LEN: usize = lsm_limits::LSM_KEY_PATH_LEN.0 as usize - 2;
/// Path entries per generation of the `paths` map.
pub const MAX_PATH_ENTRIES: usize = lsm_limits::LSM_MAX_PATH_ENTRIES.0 as usize;
/// Entries of each allow-list.
pub const MAX_ALLOW: usize = lsm_limits::LSM_MAX_ALLOW.0 as usize;
/// Bytes of a comm the kernel keeps, without its NUL.
pub const MAX_COMM_LEN: usize = lsm_limits::LSM_COMM_LEN.0 as usize - 1;
/// Levels of a process's cgroup the program compares with the allow-list.
pub const MAX_CGROUP_DEPTH: usize = lsm_limits::LSM_MAX_CGROUP_DEPTH.0 as usize;

const WATCH: u32 = lsm_path_flags::LSM_PATH_WATCH.0;
const DENY_WRITE: u32 = lsm_path_flags::LSM_PATH_DENY_WRITE.0;
const DENY_EXEC: u32 = lsm_path_flags::LSM_PATH_DENY_EXEC.0;

/// A policy as read from its file; serializes back to the file format,
/// with each cgroup's id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub watch: Vec<String>,
    pub deny: Deny,
    pub allow: Allow,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Deny {
    pub write: Vec<String>,
    pub exec: Vec<String>,
    pub ptrace_other_users: bool,
    pub modules: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Allow {
    pub uid: Vec<u32>,
    pub comm: Vec<String>,
    pub cgroup: Vec<Cgroup>,
}

/// A cgroup of the allow-list; two entries are the same cgroup when their
/// ids are.
#[derive(Debug, Clone, Eq, Serialize)]
pub struct Cgroup {
    /// As written, when it was written as a directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub id: u64,
}

impl PartialEq for Cgroup {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

/// What the runtime writes into the idle generation of the maps.
pub struct CompiledPolicy {
    /// LSM_POLICY_* bits, never LSM_POLICY_ENFORCE (the runtime sets it).
    pub flags: u32,
    /// Closed under covering prefixes: each entry carries the flags of every
    /// prefix that covers it, as an LPM lookup finds the longest only.
    pub paths: Vec<PathEntry>,
    pub uids: Vec<u32>,
    /// NUL padded.
    pub comms: Vec<[u8; 16]>,
    /// cgroup v2 ids (inode numbers).
    pub cgroups: Vec<u64>,
}

/// `key` is "/etc\0" (the path itself), "/etc/" (what is under it), or "/".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathEntry {
    pub key: Vec<u8>,
    pub flags: u32,
}

/// What a process does to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Opened for reading only.
    Read,
    /// Opened for writing (or reading and writing).
    Write,
    Exec,
}

impl Access {
    pub const ALL: [Access; 3] = [Access::Read, Access::Write, Access::Exec];

    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Exec => "exec",
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The process an access is evaluated for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// Real uid.
    pub uid: u32,
    pub comm: String,
    /// Its cgroup and the ancestors, the root first.
    pub cgroups: Vec<u64>,
}

/// What the policy makes of an access, before the mode is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// A rule denies it, but the process is on an allow-list.
    Exempt,
    Denied,
}

impl Verdict {
    /// As `lsm check` shows it: a denial in audit mode is only reported.
    pub fn in_mode(self, enforce: bool) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Exempt => "exempt",
            Verdict::Denied if enforce => "denied",
            Verdict::Denied => "audit",
        }
    }
}

/// Reads and checks a policy file; errors start with its path.
pub fn load(path: &Path) -> Result<Policy, RuleError> {
    load_file(path, &files::LSM_POLICY, parse)
}

/// Parses and checks a policy file's text. Cgroup directories are resolved
/// to their ids here, so a missing one is reported with its field.
pub fn parse(text: &str) -> Result<Policy, RuleError> {
    policy(&parse_document(text)?)
}

impl Policy {
    pub fn compile(&self) -> anyhow::Result<CompiledPolicy> {
        let allow = &self.allow;
        let paths = paths::entries(&self.prefixes());
        let mut flags = 0;
        for (on, flag) in [
            (!paths.is_empty(), lsm_policy_flags::LSM_POLICY_PATHS),
            (
                self.deny.ptrace_other_users,
                lsm_policy_flags::LSM_POLICY_DENY_PTRACE_OTHER_USERS,
            ),
            (self.deny.modules, lsm_policy_flags::LSM_POLICY_DENY_MODULES),
            (
                !allow.uid.is_empty(),
                lsm_policy_flags::LSM_POLICY_ALLOW_UIDS,
            ),
            (
                !allow.comm.is_empty(),
                lsm_policy_flags::LSM_POLICY_ALLOW_COMMS,
            ),
            (
                !allow.cgroup.is_empty(),
                lsm_policy_flags::LSM_POLICY_ALLOW_CGROUPS,
            ),
        ] {
            if on {
                flags |= flag.0;
            }
        }
        Ok(CompiledPolicy {
            flags,
            paths,
            uids: allow.uid.clone(),
            comms: allow.comm.iter().map(|comm| comm_key(comm)).collect(),
            cgroups: allow.cgroup.iter().map(|cgroup| cgroup.id).collect(),
        })
    }

    /// Refuses, in enforce mode, a policy that would deny the operator what
    /// it takes to undo it (see [`lockout`]); audit mode denies nothing.
    /// `root` is the pin root in use.
    pub fn check_lockout(&self, enforce: bool, root: &Path) -> anyhow::Result<()> {
        if !enforce {
            return Ok(());
        }
        lockout::refuse_denied(&lockout::probes(self, &Operator::current(root)))
    }

    /// Every prefix of the file with the path flags of every list it is in.
    fn prefixes(&self) -> Vec<(&str, u32)> {
        let mut merged: Vec<(&str, u32)> = Vec::new();
        for (list, flag) in [
            (&self.watch, WATCH),
            (&self.deny.write, DENY_WRITE),
            (&self.deny.exec, DENY_EXEC),
        ] {
            for prefix in list {
                match merged.iter_mut().find(|(p, _)| p == prefix) {
                    Some((_, flags)) => *flags |= flag,
                    None => merged.push((prefix, flag)),
                }
            }
        }
        merged
    }

    /// The path flags of `path`: those of every prefix that covers it.
    pub fn path_flags(&self, path: &str) -> u32 {
        self.prefixes()
            .into_iter()
            .filter(|(prefix, _)| paths::covers(prefix, path))
            .fold(0, |flags, (_, flag)| flags | flag)
    }

    /// Whether the access makes an event; every exec does.
    pub fn reports(&self, access: Access, path: &str) -> bool {
        let flags = self.path_flags(path);
        match access {
            Access::Read => flags & WATCH != 0,
            Access::Write => flags & (WATCH | DENY_WRITE) != 0,
            Access::Exec => true,
        }
    }

    /// The rule that denies the access, as `deny.write "/etc"`: the longest
    /// prefix of its list that covers the path.
    pub fn denying_rule(&self, access: Access, path: &str) -> Option<String> {
        let list = match access {
            Access::Read => return None,
            Access::Write => &self.deny.write,
            Access::Exec => &self.deny.exec,
        };
        list.iter()
            .filter(|prefix| paths::covers(prefix, path))
            .max_by_key(|prefix| prefix.len())
            .map(|prefix| format!("deny.{access} \"{prefix}\""))
    }

    /// What the program decides for `subject` doing `access` on `path`: the
    /// path's flags, then the allow-lists by uid, comm, and cgroup with its
    /// ancestors (as deep as the program looks).
    pub fn evaluate(&self, access: Access, path: &str, subject: &Subject) -> Verdict {
        if self.denying_rule(access, path).is_none() {
            Verdict::Allowed
        } else if self.exempts(subject) {
            Verdict::Exempt
        } else {
            Verdict::Denied
        }
    }

    fn exempts(&self, subject: &Subject) -> bool {
        let allow = &self.allow;
        let comm = comm_key(&subject.comm);
        allow.uid.contains(&subject.uid)
            || allow.comm.iter().any(|listed| comm_key(listed) == comm)
            || subject
                .cgroups
                .iter()
                .take(MAX_CGROUP_DEPTH)
                .any(|id| allow.cgroup.iter().any(|cgroup| cgroup.id == *id))
    }

    /// The map entries the prefixes take.
    pub fn path_entries(&self) -> usize {
        paths::entry_count(self.prefixes().into_iter().map(|(prefix, _)| prefix))
    }
}

/// A comm as the kernel keeps it: at most 15 bytes and a NUL.
fn comm_key(comm: &str) -> [u8; 16] {
    let mut key = [0; 16];
    let bytes = &comm.as_bytes()[..comm.len().min(MAX_COMM_LEN)];
    key[..bytes.len()].copy_from_slice(bytes);
    key
}

const FILE: Expected = Expected {
    what: "an object like {\"watch\": [...], \"deny\": {...}, \"allow\": {...}}",
    hint: "a policy file is one JSON object with \"watch\", \"deny\" and \"allow\", each optional",
};
const DENY: Expected = Expected {
    what: "an object like {\"write\": [\"/etc\"], \"modules\": true}",
    hint: "\"deny\" has \"write\" and \"exec\" (lists of path prefixes), \"ptrace_other_users\" and \"modules\" (true or false)",
};
const ALLOW: Expected = Expected {
    what: "an object like {\"uid\": [0], \"comm\": [\"apt\"]}",
    hint: "\"allow\" has \"uid\", \"comm\" and \"cgroup\", each a list",
};
const LIST: Expected = Expected {
    what: "a list like [\"/etc\"]",
    hint: "write the entries in square brackets, even a single one",
};
const SWITCH: Expected = Expected {
    what: "true or false",
    hint: "write true to deny it, false (or leave the field out) to allow it",
};
const PREFIX: Expected = Expected {
    what: "a path prefix like \"/etc\"",
    hint: "write an absolute path; it covers the path itself and everything under it",
};
const NORMAL: &str = "the kernel reports resolved paths, without \".\", \"..\" or \"//\"; write the prefix the same way";
const UID: Expected = Expected {
    what: "a uid like 0 or 1000",
    hint:
        "write the numeric user id (`id -u NAME` prints it); the real uid of a process is compared",
};
const COMM: Expected = Expected {
    what: "a command name like \"apt\"",
    hint:
        "a comm is the name the kernel keeps for a process, as `ps -o comm` shows it: 1 to 15 bytes",
};
const CGROUP: Expected = Expected {
    what: "a cgroup v2 directory like \"/sys/fs/cgroup/system.slice/apt.service\" or a cgroup id",
    hint: "give a directory of the cgroup v2 hierarchy (its descendants count too), or its id (the directory's inode number)",
};

const FILE_FIELDS: [&str; 3] = ["watch", "deny", "allow"];
const DENY_FIELDS: [&str; 4] = ["write", "exec", "ptrace_other_users", "modules"];
const ALLOW_FIELDS: [&str; 3] = ["uid", "comm", "cgroup"];

fn policy(document: &Value) -> Result<Policy, RuleError> {
    let map = object(document, &FILE, &FILE_FIELDS)?;
    let policy = Policy {
        watch: list(map, "watch", prefix)?,
        deny: optional(map, "deny", deny)?.unwrap_or_default(),
        allow: optional(map, "allow", allow)?.unwrap_or_default(),
    };
    let entries = policy.path_entries();
    if entries > MAX_PATH_ENTRIES {
        return Err(RuleError::new(
            format!(
                "the prefixes take {entries} path entries, more than the {MAX_PATH_ENTRIES} a policy holds"
            ),
            "each prefix takes two entries (\"/\" one), counted once when it is in several lists; use fewer, shorter prefixes",
        ));
    }
    Ok(policy)
}

fn deny(value: &Value) -> Result<Deny, RuleError> {
    let map = object(value, &DENY, &DENY_FIELDS)?;
    Ok(Deny {
        write: list(map, "write", prefix)?,
        exec: list(map, "exec", prefix)?,
        ptrace_other_users: optional(map, "ptrace_other_users", switch)?.unwrap_or(false),
        modules: optional(map, "modules", switch)?.unwrap_or(false),
    })
}

fn allow(value: &Value) -> Result<Allow, RuleError> {
    let map = object(value, &ALLOW, &ALLOW_FIELDS)?;
    let allow = Allow {
        uid: list(map, "uid", uid)?,
        comm: list(map, "comm", comm)?,
        cgroup: list(map, "cgroup", cgroup)?,
    };
    for (name, len) in [
        ("uid", allow.uid.len()),
        ("comm", allow.comm.len()),
        ("cgroup", allow.cgroup.len()),
    ] {
        if len > MAX_ALLOW {
            return Err(RuleError::new(
                format!("{len} entries; an allow-list holds at most {MAX_ALLOW}"),
                "allow-list a common cgroup instead of many processes",
            )
            .in_field(name));
        }
    }
    Ok(allow)
}

/// An entry of a list, named in errors as it is shown in them.
trait Listed: PartialEq {
    fn label(&self) -> String;
}

impl Listed for String {
    fn label(&self) -> String {
        format!("\"{self}\"")
    }
}

impl Listed for u32 {
    fn label(&self) -> String {
        self.to_string()
    }
}

impl Listed for Cgroup {
    fn label(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Cgroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "cgroup \"{path}\" (id {})", self.id),
            None => write!(f, "cgroup id {}", self.id),
        }
    }
}

/// Field `name` of `map`, a list without repeats; an entry's errors name it
/// as `name[index]`. Absent, it is empty.
fn list<T: Listed>(
    map: &Map<String, Value>,
    name: &str,
    parse: impl Fn(&Value) -> Result<T, RuleError>,
) -> Result<Vec<T>, RuleError> {
    let Some(value) = map.get(name) else {
        return Ok(Vec::new());
    };
    let items = value
        .as_array()
        .ok_or_else(|| LIST.wrong(value).in_field(name))?;
    let mut parsed: Vec<T> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let at = |err: RuleError| err.in_field(&format!("{name}[{index}]"));
        let entry = parse(item).map_err(at)?;
        if let Some(first) = parsed.iter().position(|seen| *seen == entry) {
            return Err(at(RuleError::new(
                format!("{} is already in the list, at [{first}]", entry.label()),
                "remove one of them",
            )));
        }
        parsed.push(entry);
    }
    Ok(parsed)
}

fn switch(value: &Value) -> Result<bool, RuleError> {
    value.as_bool().ok_or_else(|| SWITCH.wrong(value))
}

fn prefix(value: &Value) -> Result<String, RuleError> {
    let written = value.as_str().ok_or_else(|| PREFIX.wrong(value))?;
    if !written.starts_with('/') {
        return Err(PREFIX.invalid(format!(
            "\"{written}\" is not an absolute path; relative paths never match"
        )));
    }
    if written.contains('\0') {
        return Err(PREFIX.invalid("the prefix contains a NUL byte".into()));
    }
    let normal = paths::normalize(written);
    let without_slash = match written.strip_suffix('/') {
        Some(stripped) if !stripped.is_empty() && !stripped.ends_with('/') => stripped,
        _ => written,
    };
    if normal != without_slash {
        return Err(RuleError::new(
            format!("\"{written}\" is not a normalized path; did you mean \"{normal}\"?"),
            NORMAL,
        ));
    }
    if normal.len() > MAX_PREFIX_LEN {
        return Err(RuleError::new(
            format!(
                "the prefix is {} bytes long; at most {MAX_PREFIX_LEN} bytes are matched",
                normal.len()
            ),
            "use a shorter prefix: one of its parent directories",
        ));
    }
    Ok(normal)
}

fn uid(value: &Value) -> Result<u32, RuleError> {
    value
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| UID.wrong(value))
}

fn comm(value: &Value) -> Result<String, RuleError> {
    let comm = value.as_str().ok_or_else(|| COMM.wrong(value))?;
    if comm.is_empty() || comm.contains('\0') {
        return Err(COMM.invalid(format!("\"{comm}\" is not a command name")));
    }
    if comm.len() > MAX_COMM_LEN {
        let kept = String::from_utf8_lossy(&comm.as_bytes()[..MAX_COMM_LEN]);
        return Err(RuleError::new(
            format!(
                "\"{comm}\" is {} bytes long; the kernel keeps the first {MAX_COMM_LEN} bytes of a command name",
                comm.len()
            ),
            format!("write \"{kept}\", as `ps -o comm` shows it"),
        ));
    }
    Ok(comm.to_owned())
}

fn cgroup(value: &Value) -> Result<Cgroup, RuleError> {
    if let Some(id) = value.as_u64().filter(|&id| id > 0) {
        return Ok(Cgroup { path: None, id });
    }
    let path = value.as_str().ok_or_else(|| CGROUP.wrong(value))?;
    if !path.starts_with('/') {
        return Err(CGROUP.invalid(format!("\"{path}\" is not an absolute path")));
    }
    let (_, id) = mounts::open_cgroup2(Path::new(path))
        .map_err(|why| CGROUP.invalid(format!("\"{path}\": {why}")))?;
    Ok(Cgroup {
        path: Some(path.to_owned()),
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;

    /// The cgroup2 directory a test may use: the hierarchy's root.
    fn cgroup2_root() -> PathBuf {
        mounts::mount_points("cgroup2")
            .into_iter()
            .next()
            .expect("a cgroup2 hierarchy is mounted")
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    fn hint(text: &str) -> String {
        parse(text).unwrap_err().hint().to_owned()
    }

    #[test]
    fn the_documented_example_parses() {
        let root = cgroup2_root();
        let text = format!(
            r#"{{ "watch": ["/etc", "/root/.ssh"],
                 "deny": {{ "write": ["/etc/ssh", "/usr/bin"], "exec": ["/tmp", "/dev/shm"],
                           "ptrace_other_users": true, "modules": true }},
                 "allow": {{ "uid": [0], "comm": ["apt"], "cgroup": ["{}", 4242] }} }}"#,
            root.display()
        );
        let policy = parse(&text).unwrap();
        assert_eq!(policy.watch, ["/etc", "/root/.ssh"]);
        assert_eq!(policy.deny.write, ["/etc/ssh", "/usr/bin"]);
        assert_eq!(policy.deny.exec, ["/tmp", "/dev/shm"]);
        assert!(policy.deny.ptrace_other_users && policy.deny.modules);
        assert_eq!(policy.allow.uid, [0]);
        assert_eq!(policy.allow.comm, ["apt"]);
        let root_id = std::fs::metadata(&root).unwrap().ino();
        assert_eq!(
            policy.allow.cgroup,
            [
                Cgroup {
                    path: Some(root.display().to_string()),
                    id: root_id
                },
                Cgroup {
                    path: None,
                    id: 4242
                }
            ]
        );
        assert_eq!(policy.path_entries(), 12);
        let json = serde_json::to_value(&policy).unwrap();
        assert_eq!(json["allow"]["cgroup"][1], serde_json::json!({"id": 4242}));
        assert_eq!(json["deny"]["modules"], true);
    }

    #[test]
    fn every_field_is_optional() {
        assert_eq!(parse("{}").unwrap(), Policy::default());
        assert_eq!(
            parse(r#"{"deny": {}, "allow": {}}"#).unwrap(),
            Policy::default()
        );
        let compiled = Policy::default().compile().unwrap();
        assert_eq!(compiled.flags, 0);
        assert!(compiled.paths.is_empty());
    }

    #[test]
    fn a_trailing_slash_is_dropped_but_the_root_stays() {
        let policy = parse(r#"{"watch": ["/etc/", "/"]}"#).unwrap();
        assert_eq!(policy.watch, ["/etc", "/"]);
    }

    #[test]
    fn prefixes_that_are_not_normalized_are_refused_with_the_normal_form() {
        let cases = [
            (
                "/etc/../tmp",
                "\"/etc/../tmp\" is not a normalized path; did you mean \"/tmp\"?",
            ),
            (
                "/etc/./ssh",
                "\"/etc/./ssh\" is not a normalized path; did you mean \"/etc/ssh\"?",
            ),
            (
                "/etc//ssh",
                "\"/etc//ssh\" is not a normalized path; did you mean \"/etc/ssh\"?",
            ),
            (
                "/etc//",
                "\"/etc//\" is not a normalized path; did you mean \"/etc\"?",
            ),
            ("//", "\"//\" is not a normalized path; did you mean \"/\"?"),
            (
                "/..",
                "\"/..\" is not a normalized path; did you mean \"/\"?",
            ),
        ];
        for (written, message) in cases {
            let text = format!(r#"{{"deny": {{"exec": ["/ok", "{written}"]}}}}"#);
            assert_eq!(
                error(&text),
                format!("field \"deny.exec[1]\": {message}"),
                "{written}"
            );
            assert_eq!(hint(&text), NORMAL);
        }
    }

    #[test]
    fn each_mistake_has_its_own_message() {
        let long = format!("/{}", "a".repeat(MAX_PREFIX_LEN));
        let cases = [
            (
                r#"[]"#.to_owned(),
                "expected an object like {\"watch\": [...], \"deny\": {...}, \"allow\": {...}}, found []",
            ),
            (
                r#"{"wach": []}"#.to_owned(),
                "field \"wach\": not a known field; did you mean \"watch\"?",
            ),
            (
                r#"{"watch": "/etc"}"#.to_owned(),
                "field \"watch\": expected a list like [\"/etc\"], found \"/etc\"",
            ),
            (
                r#"{"watch": ["etc"]}"#.to_owned(),
                "field \"watch[0]\": \"etc\" is not an absolute path; relative paths never match",
            ),
            (
                r#"{"watch": [""]}"#.to_owned(),
                "field \"watch[0]\": \"\" is not an absolute path; relative paths never match",
            ),
            (
                r#"{"watch": [7]}"#.to_owned(),
                "field \"watch[0]\": expected a path prefix like \"/etc\", found 7",
            ),
            (
                r#"{"watch": ["/e\u0000"]}"#.to_owned(),
                "field \"watch[0]\": the prefix contains a NUL byte",
            ),
            (
                format!(r#"{{"watch": ["{long}"]}}"#),
                "field \"watch[0]\": the prefix is 254 bytes long; at most 253 bytes are matched",
            ),
            (
                r#"{"watch": ["/etc", "/usr", "/etc/"]}"#.to_owned(),
                "field \"watch[2]\": \"/etc\" is already in the list, at [0]",
            ),
            (
                r#"{"deny": []}"#.to_owned(),
                "field \"deny\": expected an object like {\"write\": [\"/etc\"], \"modules\": true}, found []",
            ),
            (
                r#"{"deny": {"wirte": []}}"#.to_owned(),
                "field \"deny.wirte\": not a known field; did you mean \"write\"?",
            ),
            (
                r#"{"deny": {"modules": "yes"}}"#.to_owned(),
                "field \"deny.modules\": expected true or false, found \"yes\"",
            ),
            (
                r#"{"deny": {"ptrace_other_users": 1}}"#.to_owned(),
                "field \"deny.ptrace_other_users\": expected true or false, found 1",
            ),
            (
                r#"{"deny": {"write": ["/a", "/b", "b"]}}"#.to_owned(),
                "field \"deny.write[2]\": \"b\" is not an absolute path; relative paths never match",
            ),
            (
                r#"{"allow": {"user": [0]}}"#.to_owned(),
                "field \"allow.user\": not a known field",
            ),
            (
                r#"{"allow": {"uid": 0}}"#.to_owned(),
                "field \"allow.uid\": expected a list like [\"/etc\"], found 0",
            ),
            (
                r#"{"allow": {"uid": ["root"]}}"#.to_owned(),
                "field \"allow.uid[0]\": expected a uid like 0 or 1000, found \"root\"",
            ),
            (
                r#"{"allow": {"uid": [-1]}}"#.to_owned(),
                "field \"allow.uid[0]\": expected a uid like 0 or 1000, found -1",
            ),
            (
                r#"{"allow": {"uid": [4294967296]}}"#.to_owned(),
                "field \"allow.uid[0]\": expected a uid like 0 or 1000, found 4294967296",
            ),
            (
                r#"{"allow": {"uid": [0, 1000, 0]}}"#.to_owned(),
                "field \"allow.uid[2]\": 0 is already in the list, at [0]",
            ),
            (
                r#"{"allow": {"comm": [""]}}"#.to_owned(),
                "field \"allow.comm[0]\": \"\" is not a command name",
            ),
            (
                r#"{"allow": {"comm": ["systemd-journald"]}}"#.to_owned(),
                "field \"allow.comm[0]\": \"systemd-journald\" is 16 bytes long; the kernel keeps the first 15 bytes of a command name",
            ),
            (
                r#"{"allow": {"comm": ["apt", "apt"]}}"#.to_owned(),
                "field \"allow.comm[1]\": \"apt\" is already in the list, at [0]",
            ),
            (
                r#"{"allow": {"cgroup": ["system.slice"]}}"#.to_owned(),
                "field \"allow.cgroup[0]\": \"system.slice\" is not an absolute path",
            ),
            (
                r#"{"allow": {"cgroup": ["/proc"]}}"#.to_owned(),
                "field \"allow.cgroup[0]\": \"/proc\": not a directory of a cgroup v2 hierarchy",
            ),
            (
                r#"{"allow": {"cgroup": ["/sys/fs/cgroup/no-such-meshbpf-group"]}}"#.to_owned(),
                "field \"allow.cgroup[0]\": \"/sys/fs/cgroup/no-such-meshbpf-group\": No such file or directory (os error 2)",
            ),
            (
                r#"{"allow": {"cgroup": [0]}}"#.to_owned(),
                "field \"allow.cgroup[0]\": expected a cgroup v2 directory like \"/sys/fs/cgroup/system.slice/apt.service\" or a cgroup id, found 0",
            ),
            (
                r#"{"allow": {"cgroup": [12, 12]}}"#.to_owned(),
                "field \"allow.cgroup[1]\": cgroup id 12 is already in the list, at [0]",
            ),
        ];
        for (text, message) in cases {
            assert_eq!(error(&text), message, "{text}");
            assert!(!hint(&text).is_empty(), "{text} has a hint");
        }
    }

    #[test]
    fn a_cgroup_written_twice_as_path_and_id_is_a_repeat() {
        let root = cgroup2_root();
        let id = std::fs::metadata(&root).unwrap().ino();
        let text = format!(r#"{{"allow": {{"cgroup": [{id}, "{}"]}}}}"#, root.display());
        assert_eq!(
            error(&text),
            format!(
                "field \"allow.cgroup[1]\": cgroup \"{}\" (id {id}) is already in the list, at [0]",
                root.display()
            )
        );
    }

    #[test]
    fn a_long_comm_gets_its_kept_bytes_as_the_hint() {
        assert_eq!(
            hint(r#"{"allow": {"comm": ["systemd-journald"]}}"#),
            "write \"systemd-journal\", as `ps -o comm` shows it"
        );
        let fifteen = "x".repeat(MAX_COMM_LEN);
        assert!(parse(&format!(r#"{{"allow": {{"comm": ["{fifteen}"]}}}}"#)).is_ok());
    }

    fn prefixes(count: usize) -> String {
        let list: Vec<String> = (0..count).map(|i| format!("\"/p{i}\"")).collect();
        list.join(",")
    }

    #[test]
    fn the_path_entries_fit_the_map() {
        let fits = format!(r#"{{"watch": [{}]}}"#, prefixes(MAX_PATH_ENTRIES / 2));
        assert_eq!(parse(&fits).unwrap().path_entries(), MAX_PATH_ENTRIES);
        let over = format!(r#"{{"watch": [{}]}}"#, prefixes(MAX_PATH_ENTRIES / 2 + 1));
        assert_eq!(
            error(&over),
            "the prefixes take 514 path entries, more than the 512 a policy holds"
        );
        // A prefix in several lists is counted once; "/" takes one entry.
        let shared = format!(
            r#"{{"watch": ["/", {p}], "deny": {{"write": [{p}], "exec": [{p}]}}}}"#,
            p = prefixes(MAX_PATH_ENTRIES / 2 - 1)
        );
        assert_eq!(parse(&shared).unwrap().path_entries(), MAX_PATH_ENTRIES - 1);
    }

    #[test]
    fn allow_lists_have_a_limit() {
        let uids: Vec<String> = (0..=MAX_ALLOW).map(|i| i.to_string()).collect();
        let text = format!(r#"{{"allow": {{"uid": [{}]}}}}"#, uids.join(","));
        assert_eq!(
            error(&text),
            "field \"allow.uid\": 257 entries; an allow-list holds at most 256"
        );
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.json");
        std::fs::write(&path, r#"{"deny": {"exec": ["tmp"]}}"#).unwrap();
        assert_eq!(
            load(&path).unwrap_err().to_string(),
            format!(
                "{}: field \"deny.exec[0]\": \"tmp\" is not an absolute path; relative paths never match",
                path.display()
            )
        );
    }

    #[test]
    fn compile_sets_the_policy_flags_and_the_allow_lists() {
        let policy = parse(
            r#"{"deny": {"ptrace_other_users": true},
                "allow": {"uid": [0, 1000], "comm": ["apt", "a-very-long-one"], "cgroup": [77]}}"#,
        )
        .unwrap();
        let compiled = policy.compile().unwrap();
        assert_eq!(
            compiled.flags,
            lsm_policy_flags::LSM_POLICY_DENY_PTRACE_OTHER_USERS.0
                | lsm_policy_flags::LSM_POLICY_ALLOW_UIDS.0
                | lsm_policy_flags::LSM_POLICY_ALLOW_COMMS.0
                | lsm_policy_flags::LSM_POLICY_ALLOW_CGROUPS.0
        );
        assert_eq!(compiled.flags & lsm_policy_flags::LSM_POLICY_ENFORCE.0, 0);
        assert_eq!(compiled.uids, [0, 1000]);
        assert_eq!(&compiled.comms[0], b"apt\0\0\0\0\0\0\0\0\0\0\0\0\0");
        assert_eq!(&compiled.comms[1], b"a-very-long-one\0");
        assert_eq!(compiled.cgroups, [77]);
        let modules = parse(r#"{"deny": {"modules": true}}"#).unwrap();
        assert_eq!(
            modules.compile().unwrap().flags,
            lsm_policy_flags::LSM_POLICY_DENY_MODULES.0
        );
        let watch = parse(r#"{"watch": ["/etc"]}"#).unwrap();
        assert_eq!(
            watch.compile().unwrap().flags,
            lsm_policy_flags::LSM_POLICY_PATHS.0
        );
    }

    fn subject(uid: u32, comm: &str, cgroups: &[u64]) -> Subject {
        Subject {
            uid,
            comm: comm.into(),
            cgroups: cgroups.to_vec(),
        }
    }

    #[test]
    fn evaluate_applies_prefixes_then_allow_lists() {
        let policy = parse(
            r#"{"watch": ["/etc"], "deny": {"write": ["/etc/ssh"], "exec": ["/tmp"]},
                "allow": {"uid": [0], "comm": ["apt"], "cgroup": [40]}}"#,
        )
        .unwrap();
        let user = subject(1000, "bash", &[1, 30]);
        for (access, path, verdict) in [
            (Access::Write, "/etc/ssh/sshd_config", Verdict::Denied),
            (Access::Read, "/etc/ssh/sshd_config", Verdict::Allowed),
            (Access::Write, "/etc/passwd", Verdict::Allowed),
            (Access::Exec, "/tmp/x", Verdict::Denied),
            (Access::Exec, "/tmpx", Verdict::Allowed),
            (Access::Exec, "tmp/x", Verdict::Allowed),
        ] {
            assert_eq!(
                policy.evaluate(access, path, &user),
                verdict,
                "{access} {path}"
            );
        }
        for exempt in [
            subject(0, "bash", &[1]),
            subject(1000, "apt", &[1]),
            subject(1000, "bash", &[1, 40, 41]),
        ] {
            assert_eq!(
                policy.evaluate(Access::Exec, "/tmp/x", &exempt),
                Verdict::Exempt
            );
        }
        // The program compares the first 15 bytes of a comm, and cgroups
        // down to its depth only.
        let long = parse(
            r#"{"deny": {"exec": ["/"]}, "allow": {"comm": ["systemd-journal"], "cgroup": [99]}}"#,
        )
        .unwrap();
        let journald = subject(1000, "systemd-journald", &[1]);
        assert_eq!(
            long.evaluate(Access::Exec, "/x", &journald),
            Verdict::Exempt
        );
        let mut deep: Vec<u64> = (1..=MAX_CGROUP_DEPTH as u64).collect();
        deep.push(99);
        assert_eq!(
            long.evaluate(Access::Exec, "/x", &subject(1000, "sh", &deep)),
            Verdict::Denied
        );
        assert_eq!(
            policy.denying_rule(Access::Write, "/etc/ssh/x").as_deref(),
            Some("deny.write \"/etc/ssh\"")
        );
        assert_eq!(policy.denying_rule(Access::Read, "/etc/ssh/x"), None);
    }

    #[test]
    fn reports_follow_watch_and_write_denials() {
        let policy = parse(r#"{"watch": ["/etc"], "deny": {"write": ["/srv"]}}"#).unwrap();
        assert!(policy.reports(Access::Read, "/etc/hosts"));
        assert!(policy.reports(Access::Write, "/etc/hosts"));
        assert!(!policy.reports(Access::Read, "/srv/data"));
        assert!(policy.reports(Access::Write, "/srv/data"));
        assert!(!policy.reports(Access::Write, "/var/log/x"));
        assert!(policy.reports(Access::Exec, "/var/log/x"));
    }

    #[test]
    fn verdicts_in_each_mode() {
        assert_eq!(Verdict::Denied.in_mode(true), "denied");
        assert_eq!(Verdict::Denied.in_mode(false), "audit");
        assert_eq!(Verdict::Exempt.in_mode(true), "exempt");
        assert_eq!(Verdict::Allowed.in_mode(false), "allowed");
    }
}
