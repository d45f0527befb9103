//! `meshbpf lsm check`: lsm_monitor's policies, checked without attaching;
//! `lsm apply` (in `lsm_monitor`) replaces the attached monitor's policy.

use std::fs;
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use crate::cli::LsmCheckArgs;
use crate::error::Failure;
use crate::kernel::pins::StateRoot;
use crate::output::{self, Output, Report};
use crate::rules::policy::{self, Access, Allow, Operator, Policy, Probe, Verdict};

#[derive(Debug, Serialize)]
struct CheckReport {
    policy: PathBuf,
    mode: &'static str,
    /// Always true: a refused policy is an error.
    accepted: bool,
    #[serde(flatten)]
    rules: Policy,
    path_entries: usize,
    lockout_probes: Vec<ProbeRow>,
    warnings: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    paths: Vec<PathVerdicts>,
}

#[derive(Debug, Serialize)]
struct ProbeRow {
    #[serde(flatten)]
    probe: Probe,
    verdict: &'static str,
}

/// What the policy makes of each access to a path, for a process on no
/// allow-list.
#[derive(Debug, Serialize)]
struct PathVerdicts {
    path: String,
    read: AccessVerdict,
    write: AccessVerdict,
    exec: AccessVerdict,
}

#[derive(Debug, Serialize)]
struct AccessVerdict {
    reported: bool,
    verdict: &'static str,
    rule: Option<String>,
}

pub fn check(root: &StateRoot, out: &Output, args: &LsmCheckArgs) -> Result<()> {
    let rules = policy::load(&args.policy).map_err(Failure::from)?;
    rules.compile()?;
    rules.check_lockout(args.enforce, root.path())?;
    let lockout_probes = policy::lockout_probes(&rules, &Operator::current(root.path()))
        .into_iter()
        .map(|probe| ProbeRow {
            verdict: probe.verdict.in_mode(args.enforce),
            probe,
        })
        .collect();
    let paths = args
        .path
        .iter()
        .map(|path| path_verdicts(&rules, path, args.enforce))
        .collect();
    out.emit(&CheckReport {
        policy: args.policy.clone(),
        mode: if args.enforce { "enforce" } else { "audit" },
        accepted: true,
        path_entries: rules.path_entries(),
        lockout_probes,
        warnings: symlinked_prefixes(&rules),
        paths,
        rules,
    })?;
    Ok(())
}

fn path_verdicts(rules: &Policy, path: &str, enforce: bool) -> PathVerdicts {
    let verdict = |access: Access| {
        let rule = rules.denying_rule(access, path);
        AccessVerdict {
            reported: rules.reports(access, path),
            verdict: match rule {
                Some(_) => Verdict::Denied,
                None => Verdict::Allowed,
            }
            .in_mode(enforce),
            rule,
        }
    };
    PathVerdicts {
        path: path.to_owned(),
        read: verdict(Access::Read),
        write: verdict(Access::Write),
        exec: verdict(Access::Exec),
    }
}

/// The BPF LSM hooks see resolved paths: a prefix that runs through a
/// symbolic link matches only what the tracepoint fallback sees as written.
fn symlinked_prefixes(rules: &Policy) -> Vec<String> {
    let mut seen: Vec<&String> = Vec::new();
    let all = rules
        .watch
        .iter()
        .chain(&rules.deny.write)
        .chain(&rules.deny.exec);
    all.filter_map(|prefix| {
        if seen.contains(&prefix) {
            return None;
        }
        seen.push(prefix);
        let resolved = fs::canonicalize(prefix).ok()?;
        let resolved = resolved.to_str()?;
        (resolved != prefix).then(|| {
            format!(
                "\"{prefix}\" resolves to \"{resolved}\": the LSM hooks see resolved paths, so write \"{resolved}\" (or both)"
            )
        })
    })
    .collect()
}

impl Report for CheckReport {
    fn render(&self) -> String {
        let rules = &self.rules;
        let mut text = format!(
            "{} · {} mode · accepted · {} path entries\n",
            self.policy.display(),
            self.mode,
            self.path_entries
        );
        let denial = if self.mode == "enforce" {
            "denied"
        } else {
            "audit (reported, not denied)"
        };
        let mut table = output::table(&["rule", "prefixes", "verdict"]);
        let joined = |list: &[String]| list.join(", ");
        if !rules.watch.is_empty() {
            table.add_row(vec![
                "watch: opens reported".to_owned(),
                joined(&rules.watch),
                "allowed".to_owned(),
            ]);
        }
        for (name, list) in [
            ("deny write", &rules.deny.write),
            ("deny exec", &rules.deny.exec),
        ] {
            if !list.is_empty() {
                table.add_row(vec![name.to_owned(), joined(list), denial.to_owned()]);
            }
        }
        for (name, on) in [
            (
                "deny ptrace of other users' processes",
                rules.deny.ptrace_other_users,
            ),
            ("deny module loading", rules.deny.modules),
        ] {
            if on {
                table.add_row(vec![name.to_owned(), String::new(), denial.to_owned()]);
            }
        }
        text.push_str(&table.to_string());
        text.push_str(&format!(
            "\nevery exec is reported · never denied: {}\n",
            allowed(&rules.allow)
        ));
        let mut probes =
            output::table(&["lock-out probe", "path", "uid", "comm", "verdict", "rule"]);
        for row in &self.lockout_probes {
            let p = &row.probe;
            probes.add_row(vec![
                format!("{} ({})", p.access, p.what),
                p.path.clone(),
                p.uid.to_string(),
                p.comm.clone(),
                row.verdict.to_owned(),
                p.rule.clone().unwrap_or_default(),
            ]);
        }
        text.push_str(&probes.to_string());
        if !self.paths.is_empty() {
            let mut paths = output::table(&["path", "read", "write", "exec"]);
            let cell = |v: &AccessVerdict| {
                let reported = if v.reported {
                    "reported"
                } else {
                    "not reported"
                };
                format!("{} · {reported}", v.verdict)
            };
            for p in &self.paths {
                paths.add_row(vec![
                    p.path.clone(),
                    cell(&p.read),
                    cell(&p.write),
                    cell(&p.exec),
                ]);
            }
            text.push('\n');
            text.push_str(&paths.to_string());
        }
        for warning in &self.warnings {
            text.push_str(&format!("\nwarning: {warning}"));
        }
        text
    }
}

fn allowed(allow: &Allow) -> String {
    let mut parts: Vec<String> = Vec::new();
    parts.extend(allow.uid.iter().map(|uid| format!("uid {uid}")));
    parts.extend(allow.comm.iter().map(|comm| format!("comm {comm}")));
    parts.extend(allow.cgroup.iter().map(|cgroup| cgroup.to_string()));
    if parts.is_empty() {
        "nobody (no allow-list)".to_owned()
    } else {
        parts.join(" · ")
    }
}
