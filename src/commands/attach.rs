//! `meshbpf attach IFACE [--filter RULES] [--classes CLASSES]`: attach
//! xdp_counter or xdp_mesh_filter as a pinned bpf_link, or swap one for the
//! other, and tc_classifier with its QoS classes.

use anyhow::Result;
use serde::Serialize;

use crate::cli::InterfaceArgs;
use crate::error::Failure;
use crate::kernel::netdev;
use crate::kernel::pins::StateRoot;
use crate::kernel::xdp::XdpMode;
use crate::kernel::{bpffs, caps};
use crate::output::{self, Output, Report};
use crate::programs::tc_classifier::{self, classes};
use crate::rules::{self, compile};
use crate::state::interface::{self, ClassesOutcome, Flows, Outcome, Request};
use crate::state::saved_rules::SavedRules;
use crate::state::Attachment;

#[derive(Debug, Serialize)]
struct AttachReport {
    status: Outcome,
    #[serde(flatten)]
    attachment: Attachment,
    /// What the rules compiler noticed, such as rules that are never reached.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
    /// With --filter: the file the boot unit applies (see `filter apply`).
    #[serde(skip_serializing_if = "Option::is_none")]
    saved_to: Option<std::path::PathBuf>,
    /// tc_classifier's flow table, unless --no-flows.
    #[serde(skip_serializing_if = "Option::is_none")]
    flows: Option<tc_classifier::FlowTable>,
    /// Only with --classes.
    #[serde(skip_serializing_if = "Option::is_none")]
    classes: Option<ClassesOutcome>,
}

impl Report for AttachReport {
    fn render(&self) -> String {
        let a = &self.attachment;
        let mode = a.mode.map(XdpMode::as_str).unwrap_or("unknown");
        let ids = format!("prog id {}, link id {}", a.prog_id, a.link_id);
        let warnings: String = self
            .warnings
            .iter()
            .map(|w| format!("\nwarning: {w}"))
            .collect();
        let outcome = match self.status {
            Outcome::Attached => format!(
                "attached {} to {} in {mode} mode ({ids}); pinned at {}",
                a.program, a.interface, a.pin_path
            ),
            Outcome::AlreadyAttached => format!(
                "{} is already attached to {} in {mode} mode ({ids}) since {}; nothing changed",
                a.program, a.interface, a.attached_at
            ),
            Outcome::Swapped => format!(
                "{} now runs {} in {mode} mode ({ids}), swapped atomically",
                a.interface, a.program
            ),
            Outcome::RulesReplaced => format!(
                "replaced the rules of {} on {} atomically ({ids})",
                a.program, a.interface
            ),
        };
        let flows = match &self.flows {
            Some(t) => format!(
                "\n{} counts flows on {} ingress and egress ({}, up to {} flows)",
                t.program,
                a.interface,
                t.method.as_str(),
                output::count(t.max_flows as u64)
            ),
            None => String::new(),
        };
        let classes = match (self.classes, &self.flows) {
            (Some(how), Some(t)) => {
                let names: Vec<&str> = t
                    .classes
                    .iter()
                    .map(|c| c.class.as_str())
                    .filter(|&name| name != classes::UNCLASSIFIED)
                    .collect();
                let how = match how {
                    ClassesOutcome::Applied => "set",
                    ClassesOutcome::Replaced => "replaced atomically",
                };
                format!("\nQoS classes {how}: {}", names.join(", "))
            }
            _ => String::new(),
        };
        outcome + &flows + &classes + &warnings
    }
}

pub fn run(root: &StateRoot, saved: &SavedRules, out: &Output, args: &InterfaceArgs) -> Result<()> {
    let options = &args.options;
    // A bad rules file must fail before anything touches the kernel.
    let rules = options
        .filter
        .as_deref()
        .map(compile::load_rules)
        .transpose()
        .map_err(Failure::from)?;
    let class_rules = options
        .classes
        .as_deref()
        .map(|path| rules::classes::load(path).map_err(Failure::from))
        .transpose()?;
    let mut warnings = rules
        .as_ref()
        .map(|r| r.compiled.warnings.clone())
        .unwrap_or_default();
    let iface = netdev::resolve(&args.interface)?;
    caps::require("attach", &[caps::BPF, caps::NET_ADMIN])?;
    if let Some(mount_point) = bpffs::ensure_mounted(root.path())? {
        out.note(&format!("mounted bpffs at {}", mount_point.display()));
    }
    // After the bpffs check, whose error says how to mount it; before
    // anything is attached: without it the kernel refuses the by-id reads
    // that follow the pins.
    caps::require("attach", &[caps::SYS_ADMIN])?;
    let flows = (!options.no_flows).then_some(Flows {
        max_flows: options.max_flows,
        method: options.tc_method,
        classes: class_rules.as_ref(),
    });
    let done = interface::attach(
        root,
        &iface,
        &Request {
            mode: args.mode,
            rules: rules.as_ref(),
            flows,
            btf: args.btf.as_deref(),
        },
    )?;
    let saved_to = rules
        .as_ref()
        .and_then(|r| saved.record(&iface.name, &r.rules, &mut warnings));
    out.emit(&AttachReport {
        status: done.status,
        attachment: done.attachment,
        saved_to,
        warnings,
        flows: done.flows,
        classes: done.classes,
    })?;
    Ok(())
}
