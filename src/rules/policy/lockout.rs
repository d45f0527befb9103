//! The lock-out rule: an enforced policy must leave the operator a way back.
//!
//! Before a policy is enforced, these accesses are evaluated for the
//! operator (the real uid and cgroup of this process):
//! - exec of meshbpf itself (so `meshbpf detach --lsm` can run), of /bin/sh,
//!   of the user's $SHELL, and of sudo, su and sshd where they are
//!   installed (the ways back in as root), each as the canonical path the
//!   kernel reports. The exec check runs in the process that calls execve, which
//!   still has its parent's comm, so these are evaluated for the comm of
//!   meshbpf's parent (the shell or sudo that started it);
//! - writes to /dev/null, /dev/tty and /dev/pts/0 (a terminal), for the
//!   comm "meshbpf" and for the parent's;
//! - writes to the pin root in use (`--bpffs`), for meshbpf.
//!
//! A policy that denies any of them is refused, naming the rule.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Access, Policy, Subject, Verdict};
use crate::error::Failure;
use crate::kernel::{bpffs, mounts};

/// What meshbpf's own processes are called.
const OWN_COMM: &str = "meshbpf";
const TERMINALS: [&str; 3] = ["/dev/null", "/dev/tty", "/dev/pts/0"];
/// How an operator gets (back) in as root, and where they are installed.
const WAYS_IN: [&str; 3] = ["sudo", "su", "sshd"];
const BIN_DIRS: [&str; 6] = [
    "/usr/bin",
    "/usr/sbin",
    "/bin",
    "/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
];

/// Who runs meshbpf, and the programs the operator needs.
#[derive(Debug, Clone)]
pub struct Operator {
    pub uid: u32,
    /// The comm of the process that started meshbpf; empty when unknown.
    pub parent_comm: String,
    pub cgroups: Vec<u64>,
    /// Canonical paths: meshbpf, /bin/sh, $SHELL.
    pub exe: Option<String>,
    pub sh: Option<String>,
    pub shell: Option<String>,
    /// Canonical paths of the installed sudo, su and sshd, by name.
    pub ways_in: Vec<(&'static str, String)>,
    /// The pin root in use, resolved.
    pub pin_root: String,
}

impl Operator {
    /// The operator of this process, whose state lives at `root`.
    pub fn current(root: &Path) -> Self {
        let parent = nix::unistd::getppid();
        let parent_comm = fs::read_to_string(format!("/proc/{parent}/comm")).unwrap_or_default();
        Operator {
            uid: nix::unistd::getuid().as_raw(),
            parent_comm: parent_comm.trim_end().to_owned(),
            cgroups: mounts::own_cgroup_ids(),
            exe: std::env::current_exe().ok().and_then(|exe| canonical(&exe)),
            sh: canonical(Path::new("/bin/sh")),
            shell: std::env::var_os("SHELL").and_then(|shell| canonical(Path::new(&shell))),
            ways_in: WAYS_IN
                .iter()
                .filter_map(|&name| {
                    BIN_DIRS
                        .iter()
                        .find_map(|dir| canonical(&Path::new(dir).join(name)))
                        .map(|path| (name, path))
                })
                .collect(),
            pin_root: bpffs::resolve(root)
                .unwrap_or_else(|_| PathBuf::from(root))
                .display()
                .to_string(),
        }
    }

    fn subject(&self, comm: &str) -> Subject {
        Subject {
            uid: self.uid,
            comm: comm.to_owned(),
            cgroups: self.cgroups.clone(),
        }
    }
}

fn canonical(path: &Path) -> Option<String> {
    fs::canonicalize(path)
        .ok()
        .and_then(|path| path.to_str().map(str::to_owned))
}

/// One access the operator needs, and what the policy makes of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    pub access: Access,
    pub path: String,
    /// Why the operator needs it.
    pub what: &'static str,
    pub uid: u32,
    pub comm: String,
    #[serde(skip)]
    pub verdict: Verdict,
    /// The rule that denies it, exempt or not.
    pub rule: Option<String>,
}

pub fn probes(policy: &Policy, operator: &Operator) -> Vec<Probe> {
    let mut wanted: Vec<(Access, String, &'static str, &str)> = Vec::new();
    let parent = operator.parent_comm.as_str();
    for (path, what) in [
        (&operator.exe, "meshbpf itself"),
        (&operator.sh, "/bin/sh"),
        (&operator.shell, "the user's $SHELL"),
    ] {
        if let Some(path) = path {
            wanted.push((Access::Exec, path.clone(), what, parent));
        }
    }
    for (name, path) in &operator.ways_in {
        wanted.push((Access::Exec, path.clone(), name, parent));
    }
    let mut comms = vec![OWN_COMM];
    if parent != OWN_COMM {
        comms.push(parent);
    }
    for path in TERMINALS {
        for &comm in &comms {
            wanted.push((Access::Write, path.to_owned(), "a terminal", comm));
        }
    }
    wanted.push((
        Access::Write,
        operator.pin_root.clone(),
        "meshbpf's bpffs root",
        OWN_COMM,
    ));
    wanted
        .into_iter()
        .map(|(access, path, what, comm)| Probe {
            verdict: policy.evaluate(access, &path, &operator.subject(comm)),
            rule: policy.denying_rule(access, &path),
            access,
            path,
            what,
            uid: operator.uid,
            comm: comm.to_owned(),
        })
        .collect()
}

fn describe(probe: &Probe) -> String {
    let comm = if probe.comm.is_empty() {
        "an unknown comm".to_owned()
    } else {
        format!("comm \"{}\"", probe.comm)
    };
    format!(
        "{} denies {} of {} ({}) to uid {} with {comm}",
        probe.rule.as_deref().unwrap_or("the policy"),
        probe.access,
        probe.path,
        probe.what,
        probe.uid
    )
}

/// Fails, naming the first denied probe (and listing all of them in the
/// detail), when any is denied.
pub fn refuse_denied(probes: &[Probe]) -> anyhow::Result<()> {
    let denied: Vec<&Probe> = probes
        .iter()
        .filter(|probe| probe.verdict == Verdict::Denied)
        .collect();
    let Some(first) = denied.first() else {
        return Ok(());
    };
    let mut message = format!(
        "the policy would lock the operator out: {}",
        describe(first)
    );
    if denied.len() > 1 {
        message.push_str(&format!(" (and {} more)", denied.len() - 1));
    }
    let detail: Vec<String> = denied.iter().map(|probe| describe(probe)).collect();
    Err(Failure::new(message)
        .hint(format!(
            "allow-list the operator (\"allow\": {{\"uid\": [{}]}}, or the comm or cgroup it runs in), or narrow the rule; without --enforce the policy only audits",
            first.uid
        ))
        .detail(detail.join("\n"))
        .into())
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;
    use crate::error::explain;

    fn operator() -> Operator {
        Operator {
            uid: 1000,
            parent_comm: "bash".into(),
            cgroups: vec![1, 20, 21],
            exe: Some("/usr/local/bin/meshbpf".into()),
            sh: Some("/usr/bin/dash".into()),
            shell: Some("/usr/bin/zsh".into()),
            ways_in: Vec::new(),
            pin_root: "/sys/fs/bpf/meshbpf".into(),
        }
    }

    fn denied(text: &str) -> Vec<String> {
        probes(&parse(text).unwrap(), &operator())
            .iter()
            .filter(|probe| probe.verdict == Verdict::Denied)
            .map(describe)
            .collect()
    }

    #[test]
    fn the_probes_cover_execs_terminals_and_the_bpffs_root() {
        let all = probes(&Policy::default(), &operator());
        let shown: Vec<String> = all
            .iter()
            .map(|p| format!("{} {} {}", p.access, p.path, p.comm))
            .collect();
        assert_eq!(
            shown,
            [
                "exec /usr/local/bin/meshbpf bash",
                "exec /usr/bin/dash bash",
                "exec /usr/bin/zsh bash",
                "write /dev/null meshbpf",
                "write /dev/null bash",
                "write /dev/tty meshbpf",
                "write /dev/tty bash",
                "write /dev/pts/0 meshbpf",
                "write /dev/pts/0 bash",
                "write /sys/fs/bpf/meshbpf meshbpf",
            ]
        );
        assert!(all.iter().all(|p| p.verdict == Verdict::Allowed));
    }

    #[test]
    fn a_policy_that_denies_nothing_the_operator_needs_passes() {
        let text = r#"{"watch": ["/"], "deny": {"write": ["/etc", "/usr"], "exec": ["/tmp", "/dev/shm"],
                       "ptrace_other_users": true, "modules": true}}"#;
        assert_eq!(denied(text), Vec::<String>::new());
    }

    #[test]
    fn denials_name_the_rule_and_the_access() {
        assert_eq!(
            denied(r#"{"deny": {"exec": ["/usr/local"]}}"#),
            ["deny.exec \"/usr/local\" denies exec of /usr/local/bin/meshbpf (meshbpf itself) to uid 1000 with comm \"bash\""]
        );
        assert_eq!(
            denied(r#"{"deny": {"write": ["/dev/pts"]}}"#),
            [
                "deny.write \"/dev/pts\" denies write of /dev/pts/0 (a terminal) to uid 1000 with comm \"meshbpf\"",
                "deny.write \"/dev/pts\" denies write of /dev/pts/0 (a terminal) to uid 1000 with comm \"bash\"",
            ]
        );
        assert_eq!(
            denied(r#"{"deny": {"write": ["/sys/fs/bpf"]}}"#),
            ["deny.write \"/sys/fs/bpf\" denies write of /sys/fs/bpf/meshbpf (meshbpf's bpffs root) to uid 1000 with comm \"meshbpf\""]
        );
        assert_eq!(
            denied(r#"{"deny": {"exec": ["/"], "write": ["/"]}}"#).len(),
            10
        );
    }

    #[test]
    fn allow_lists_exempt_the_operator() {
        for allow in [
            r#""uid": [1000]"#,
            r#""comm": ["bash", "meshbpf"]"#,
            r#""cgroup": [20]"#,
        ] {
            let text =
                format!(r#"{{"deny": {{"exec": ["/"], "write": ["/"]}}, "allow": {{{allow}}}}}"#);
            assert_eq!(denied(&text), Vec::<String>::new(), "{allow}");
        }
        // meshbpf's comm does not exempt the shell that starts it.
        let only_own = r#"{"deny": {"exec": ["/usr"]}, "allow": {"comm": ["meshbpf"]}}"#;
        assert_eq!(denied(only_own).len(), 3);
    }

    #[test]
    fn the_refusal_names_the_first_denial_and_lists_all() {
        let policy = parse(r#"{"deny": {"exec": ["/usr/bin"]}}"#).unwrap();
        let err = refuse_denied(&probes(&policy, &operator())).unwrap_err();
        let explained = explain(&err);
        assert_eq!(
            explained.message,
            "the policy would lock the operator out: deny.exec \"/usr/bin\" denies exec of /usr/bin/dash (/bin/sh) to uid 1000 with comm \"bash\" (and 1 more)"
        );
        assert_eq!(
            explained.detail.as_deref(),
            Some("deny.exec \"/usr/bin\" denies exec of /usr/bin/dash (/bin/sh) to uid 1000 with comm \"bash\"\n\
                  deny.exec \"/usr/bin\" denies exec of /usr/bin/zsh (the user's $SHELL) to uid 1000 with comm \"bash\"")
        );
        assert!(explained
            .hint
            .unwrap()
            .starts_with("allow-list the operator (\"allow\": {\"uid\": [1000]}"));
    }

    #[test]
    fn denying_sudo_su_or_sshd_and_the_root_in_use_is_refused() {
        let operator = Operator {
            ways_in: vec![
                ("sudo", "/usr/bin/sudo".into()),
                ("su", "/usr/bin/su".into()),
                ("sshd", "/usr/sbin/sshd".into()),
            ],
            pin_root: "/sys/fs/bpf/other".into(),
            ..operator()
        };
        let denied = |text: &str| -> Vec<String> {
            probes(&parse(text).unwrap(), &operator)
                .iter()
                .filter(|probe| probe.verdict == Verdict::Denied)
                .map(describe)
                .collect()
        };
        assert_eq!(
            denied(r#"{"deny": {"exec": ["/usr/bin/sudo", "/usr/bin/su", "/usr/sbin"]}}"#),
            [
                "deny.exec \"/usr/bin/sudo\" denies exec of /usr/bin/sudo (sudo) to uid 1000 with comm \"bash\"",
                "deny.exec \"/usr/bin/su\" denies exec of /usr/bin/su (su) to uid 1000 with comm \"bash\"",
                "deny.exec \"/usr/sbin\" denies exec of /usr/sbin/sshd (sshd) to uid 1000 with comm \"bash\"",
            ]
        );
        assert_eq!(
            denied(r#"{"deny": {"write": ["/sys/fs/bpf/other"]}}"#),
            ["deny.write \"/sys/fs/bpf/other\" denies write of /sys/fs/bpf/other (meshbpf's bpffs root) to uid 1000 with comm \"meshbpf\""]
        );
        // The default root is not the one in use.
        assert_eq!(
            denied(r#"{"deny": {"write": ["/sys/fs/bpf/meshbpf"]}}"#),
            Vec::<String>::new()
        );
    }

    #[test]
    fn audit_mode_never_refuses() {
        let policy = parse(r#"{"deny": {"exec": ["/"], "write": ["/"]}}"#).unwrap();
        let root = Path::new("/sys/fs/bpf/meshbpf");
        assert!(policy.check_lockout(false, root).is_ok());
        let err = policy.check_lockout(true, root).unwrap_err();
        assert!(err.to_string().starts_with(
            "the policy would lock the operator out: deny.exec \"/\" denies exec of "
        ));
    }
}
