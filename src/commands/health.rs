//! `meshbpf health [--strict] [--fix]`: what meshbpf needs from this kernel
//! and machine, every hook probed for real, and meshbpf's own state.

use anyhow::Result;
use serde::Serialize;

use crate::cli::HealthArgs;
use crate::error::Reported;
use crate::health::hooks::{self, Hooks};
use crate::health::{attachments, host, loaded, system, Check, Fix, Overall, Status};
use crate::kernel::pins::StateRoot;
use crate::output::{self, Output, Report};
use crate::programs::capture;

#[derive(Debug, Serialize)]
struct HealthReport {
    status: Overall,
    checks: Vec<Check>,
    hooks: Hooks,
    /// What --fix did; absent without --fix.
    #[serde(skip_serializing_if = "Option::is_none")]
    fixes: Option<Vec<Fix>>,
}

pub fn run(root: &StateRoot, out: &Output, args: &HealthArgs) -> Result<()> {
    let fixes = if args.fix {
        // Mounts first: the state lives on bpffs.
        let mut fixes = system::fix_mounts(root);
        fixes.extend(attachments::remove_orphans(root)?);
        fixes.extend(host::fix(root)?);
        fixes.extend(loaded::fix(root)?);
        fixes.extend(capture::fix_stale(root)?);
        Some(fixes)
    } else {
        None
    };
    let mut checks = system::checks(root);
    checks.extend(attachments::checks(root, args.max_drop_percent));
    checks.extend(host::checks(root));
    checks.extend(loaded::checks(root));
    let hooks = hooks::probe_all();
    let report = HealthReport {
        status: Overall::of(&checks, hooks.all_available()),
        checks,
        hooks,
        fixes,
    };
    out.emit(&report)?;
    if args.strict && report.status == Overall::Fail {
        return Err(Reported.into());
    }
    Ok(())
}

impl Report for HealthReport {
    fn render(&self) -> String {
        let mut checks = output::table(&["check", "status", "detail"]);
        for check in &self.checks {
            checks.add_row(vec![
                check.title(),
                check.status.as_str().to_string(),
                check.detail.clone(),
            ]);
        }
        let hints: String = self
            .checks
            .iter()
            .filter(|c| c.status != Status::Ok)
            .filter_map(|c| Some(format!("\nhint ({}): {}", c.title(), c.hint.as_ref()?)))
            .collect();

        let mut hooks = output::table(&["hook", "available", "detail"]);
        for hook in &self.hooks.0 {
            let detail = match (&hook.stage, &hook.disables, &hook.fallback) {
                (Some(stage), Some(disables), Some(fallback)) => format!(
                    "refused at {}: {}\ndisables: {disables}\nfallback: {fallback}",
                    stage.as_str(),
                    hook.detail
                ),
                _ => hook.detail.clone(),
            };
            hooks.add_row(vec![
                hook.hook.name().to_string(),
                if hook.available { "yes" } else { "no" }.to_string(),
                detail,
            ]);
        }

        let fixes = match &self.fixes {
            None => String::new(),
            Some(fixes) if fixes.is_empty() => "\n\n--fix: nothing to fix".to_string(),
            Some(fixes) => {
                let lines: String = fixes
                    .iter()
                    .map(|f| {
                        let outcome = if f.done { "done" } else { "FAILED" };
                        format!("\n  {outcome}: {}", f.detail)
                    })
                    .collect();
                format!("\n\n--fix:{lines}")
            }
        };
        format!(
            "meshbpf health: {}\n{checks}{hints}\n\nhooks (probed by loading and attaching)\n{hooks}{fixes}",
            self.status.as_str()
        )
    }
}
