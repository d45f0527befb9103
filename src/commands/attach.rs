//! `meshbpf attach IFACE [--filter RULES] [--classes CLASSES]`: attach
//! xdp_counter or xdp_mesh_filter as a pinned bpf_link, or swap one for the
//! other, and tc_classifier with its QoS classes.

use anyhow::Result;
use serde::Serialize;

use crate::cli::InterfaceArgs;
use crate::error::{errno_of, Failure};
use crate::kernel::netdev::{self, Interface};
use crate::kernel::pins::{AttachmentDir, StateRoot};
use crate::kernel::tc::{self, TcMethod};
use crate::kernel::xdp::{self, XdpMode};
use crate::kernel::{bpffs, bpfobj, caps};
use crate::output::{self, Output, Report};
use crate::programs::tc_classifier::classes;
use crate::programs::{tc_classifier, xdp_counter, xdp_mesh_filter};
use crate::rules::{self, classes::ClassRules, compile};
use crate::state::{self, Attachment, LinkState};

#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Attached,
    AlreadyAttached,
    /// The link now runs the other program, swapped atomically.
    Swapped,
    /// The filter stayed; its rule set was replaced atomically.
    RulesReplaced,
}

/// What happened to tc_classifier's QoS classes.
#[derive(Debug, Serialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum ClassesOutcome {
    /// Set with a new attachment.
    Applied,
    /// Replaced atomically on the attachment there was.
    Replaced,
}

#[derive(Debug, Serialize)]
struct AttachReport {
    status: Outcome,
    #[serde(flatten)]
    attachment: Attachment,
    /// What the rules compiler noticed, such as rules that are never reached.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
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

pub fn run(root: &StateRoot, out: &Output, args: &InterfaceArgs) -> Result<()> {
    let interface = args.interface.as_str();
    // A bad rules file must fail before anything touches the kernel.
    let rules = args
        .options
        .filter
        .as_deref()
        .map(compile::load_rules)
        .transpose()
        .map_err(Failure::from)?;
    let class_rules = args
        .options
        .classes
        .as_deref()
        .map(|path| rules::classes::load(path).map_err(Failure::from))
        .transpose()?;
    let warnings = rules
        .as_ref()
        .map(|r| r.compiled.warnings.clone())
        .unwrap_or_default();
    let iface = netdev::resolve(interface)?;
    caps::require("attach", &[caps::BPF, caps::NET_ADMIN])?;
    if let Some(mount_point) = bpffs::ensure_mounted(root.path())? {
        out.note(&format!("mounted bpffs at {}", mount_point.display()));
    }
    // After the bpffs check, whose error says how to mount it; before
    // anything is attached: without it the kernel refuses the by-id reads
    // that follow the pins.
    caps::require("attach", &[caps::SYS_ADMIN])?;
    let _lock = root.lock()?;
    state::reconcile(&root.program_dirs(&iface.name)?)?;

    let (status, dir) = attach_xdp(root, &iface, args, rules.as_ref())?;
    let (flows, classes) = if args.options.no_flows {
        (None, None)
    } else {
        match attach_flows(root, &iface, args, class_rules.as_ref()) {
            Ok((table, classes)) => (Some(table), classes),
            Err(err) => {
                // All or nothing: an XDP program this command attached goes too.
                if status == Outcome::Attached {
                    dir.remove()?;
                }
                return Err(err);
            }
        }
    };
    out.emit(&AttachReport {
        status,
        attachment: state::inspect(&dir)?,
        warnings,
        flows,
        classes,
    })?;
    Ok(())
}

/// The XDP half: attach, keep, swap, or replace the rules; returns what it
/// did and the attachment directory.
fn attach_xdp(
    root: &StateRoot,
    iface: &Interface,
    args: &InterfaceArgs,
    rules: Option<&compile::LoadedRules>,
) -> Result<(Outcome, AttachmentDir)> {
    let btf = args.btf.as_deref();
    if let Some(dir) = state::xdp_attachment(root, &iface.name)? {
        let existing = state::inspect(&dir)?;
        match existing.state {
            LinkState::Attached => {
                check_mode(&existing, args.mode)?;
                let status = match rules {
                    None => Outcome::AlreadyAttached,
                    Some(rules) if existing.program == xdp_mesh_filter::PROGRAM => {
                        let pinned = xdp_mesh_filter::PinnedMaps::open(&dir)?;
                        xdp_mesh_filter::apply(&pinned.maps(), &rules.rules, &rules.compiled)?;
                        Outcome::RulesReplaced
                    }
                    Some(rules) => {
                        let to = root.attachment(&iface.name, xdp_mesh_filter::PROGRAM);
                        state::swap(&dir, &to, || xdp_mesh_filter::install(&to, btf, &dir, &rules.rules, &rules.compiled))?;
                        Outcome::Swapped
                    }
                };
                let dir = state::xdp_attachment(root, &iface.name)?.unwrap_or(dir);
                return Ok((status, dir));
            }
            LinkState::Elsewhere => {
                return Err(Failure::new(format!(
                    "the pins at {} belong to a live attachment (link id {}) that is not on {} in this network namespace",
                    existing.pin_path, existing.link_id, iface.name
                ))
                .hint("it was attached from another network namespace; detach it there, or pick another --bpffs root here")
                .into())
            }
            // The interface it ran on was deleted: stale.
            LinkState::Defunct => dir.remove()?,
        }
    }
    if let Some(current) = xdp::query(iface.index)? {
        return Err(foreign_program(iface, current));
    }

    let mode = args.mode.unwrap_or(XdpMode::Native);
    let program = if rules.is_some() {
        xdp_mesh_filter::PROGRAM
    } else {
        xdp_counter::PROGRAM
    };
    let dir = root.attachment(&iface.name, program);
    let attached = match rules {
        None => xdp_counter::attach(&dir, iface, mode, btf),
        Some(rules) => {
            xdp_mesh_filter::attach(&dir, iface, mode, btf, &rules.rules, &rules.compiled)
        }
    };
    if let Err(err) = attached {
        // The link was never pinned, so it is already gone with its fd.
        if dir.exists() {
            dir.unpin()?;
        }
        return Err(explain_attach_error(err, iface));
    }
    Ok((Outcome::Attached, dir))
}

/// The TC half: tc_classifier on ingress and egress, unless already there;
/// with `class_rules`, its QoS classes, set or replaced.
fn attach_flows(
    root: &StateRoot,
    iface: &Interface,
    args: &InterfaceArgs,
    class_rules: Option<&ClassRules>,
) -> Result<(tc_classifier::FlowTable, Option<ClassesOutcome>)> {
    let dir = root.attachment(&iface.name, tc_classifier::PROGRAM);
    let mut outcome = class_rules.map(|_| ClassesOutcome::Applied);
    if dir.is_committed() {
        if let Some(rules) = class_rules {
            let pinned = classes::PinnedClassMaps::open(&dir)?;
            classes::apply(&pinned.maps(), rules)?;
            outcome = Some(ClassesOutcome::Replaced);
        }
    } else {
        let method = match args.options.tc_method {
            Some(TcMethod::Tcx) if !tc::tcx_available(iface) => {
                return Err(tc::tcx_refused(iface).into())
            }
            Some(method) => method,
            None if tc::tcx_available(iface) => TcMethod::Tcx,
            None => TcMethod::Netlink,
        };
        if let Err(err) = tc_classifier::attach(
            &dir,
            iface,
            method,
            args.options.max_flows,
            args.btf.as_deref(),
            class_rules,
        ) {
            if dir.exists() {
                dir.unpin()?;
            }
            return Err(err.context(format!("attaching tc_classifier to {}", iface.name)));
        }
    }
    Ok((tc_classifier::inspect(&dir)?, outcome))
}

fn check_mode(existing: &Attachment, requested: Option<XdpMode>) -> Result<()> {
    if let (Some(want), Some(have)) = (requested, existing.mode) {
        if want != have {
            return Err(Failure::new(format!(
                "{} is already attached to {} in {} mode, not {} mode",
                existing.program,
                existing.interface,
                have.as_str(),
                want.as_str()
            ))
            .hint(format!(
                "to change the mode: meshbpf detach {0} && meshbpf attach {0} --mode {1}",
                existing.interface,
                want.as_str()
            ))
            .into());
        }
    }
    Ok(())
}

fn foreign_program(iface: &Interface, current: xdp::Current) -> anyhow::Error {
    let name = bpfobj::prog_info_by_id(current.prog_id)
        .map(|p| p.name)
        .unwrap_or_else(|_| "?".into());
    let mode = current
        .mode
        .map(|m| format!(", {} mode", m.as_str()))
        .unwrap_or_default();
    Failure::new(format!(
        "{} already runs an XDP program that meshbpf did not attach: id {}, name '{name}'{mode}",
        iface.name, current.prog_id
    ))
    .hint(format!(
        "meshbpf never replaces another tool's program; remove it with the tool that attached it \
(for a plain netlink attachment: ip link set dev {} xdp off) and attach again",
        iface.name
    ))
    .into()
}

/// Another tool can attach between our check and our attach; the kernel then
/// refuses with EBUSY/EEXIST and we name the newcomer.
fn explain_attach_error(err: anyhow::Error, iface: &Interface) -> anyhow::Error {
    // Already explained (a verifier rejection, a missing driver feature).
    if err.downcast_ref::<Failure>().is_some() {
        return err;
    }
    match errno_of(&err) {
        Some(libc::EBUSY) | Some(libc::EEXIST) => match xdp::query(iface.index) {
            Ok(Some(current)) => foreign_program(iface, current),
            _ => err,
        },
        Some(libc::EPERM) => err.context(caps::explain_eperm(&format!(
            "attach XDP to {}",
            iface.name
        ))),
        _ => err,
    }
}
