//! meshbpf on one interface as a whole: the XDP program (xdp_counter or
//! xdp_mesh_filter) and tc_classifier, attached, kept or swapped together,
//! and detached together, under the root's exclusive lock.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::{Attachment, LinkState};
use crate::error::{errno_of, Failure};
use crate::kernel::netdev::{self, Interface};
use crate::kernel::pins::{AttachmentDir, StateRoot};
use crate::kernel::tc::{self, TcMethod};
use crate::kernel::xdp::{self, XdpMode};
use crate::kernel::{bpffs, bpfobj, caps, probe};
use crate::programs::tc_classifier::classes;
use crate::programs::{tc_classifier, xdp_counter, xdp_mesh_filter};
use crate::rules::{classes::ClassRules, compile::LoadedRules};

#[derive(Debug, Serialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
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
pub enum ClassesOutcome {
    /// Set with a new attachment.
    Applied,
    /// Replaced atomically on the attachment there was.
    Replaced,
}

/// What to attach to an interface, checked and compiled beforehand.
pub struct Request<'a> {
    /// Native when `None`; an attachment in the other mode is an error.
    pub mode: Option<XdpMode>,
    /// xdp_mesh_filter with these rules; xdp_counter without.
    pub rules: Option<&'a LoadedRules>,
    /// tc_classifier, unless only the XDP program is wanted.
    pub flows: Option<Flows<'a>>,
    pub btf: Option<&'a Path>,
}

pub struct Flows<'a> {
    pub max_flows: u32,
    /// Probed when `None`: tcx where the kernel has it, netlink otherwise.
    pub method: Option<TcMethod>,
    pub classes: Option<&'a ClassRules>,
}

pub struct Attached {
    pub status: Outcome,
    pub attachment: Attachment,
    pub flows: Option<tc_classifier::FlowTable>,
    pub classes: Option<ClassesOutcome>,
}

/// Attaches, keeps, swaps or updates meshbpf on `iface`: all or nothing, an
/// XDP program this call attached is removed again when tc_classifier fails.
pub fn attach(root: &StateRoot, iface: &Interface, request: &Request) -> Result<Attached> {
    let _lock = root.lock()?;
    super::reconcile(&root.program_dirs(&iface.name)?)?;

    let (status, dir) = attach_xdp(root, iface, request)?;
    let (flows, classes) = match &request.flows {
        None => (None, None),
        Some(flows) => match attach_flows(root, iface, flows, request.btf) {
            Ok((table, classes)) => (Some(table), classes),
            Err(err) => {
                if status == Outcome::Attached {
                    dir.remove()?;
                }
                return Err(err);
            }
        },
    };
    Ok(Attached {
        status,
        attachment: super::inspect(&dir)?,
        flows,
        classes,
    })
}

/// The XDP half: attach, keep, swap, or replace the rules; returns what it
/// did and the attachment directory.
fn attach_xdp(
    root: &StateRoot,
    iface: &Interface,
    request: &Request,
) -> Result<(Outcome, AttachmentDir)> {
    let btf = request.btf;
    let rules = request.rules;
    if let Some(dir) = super::xdp_attachment(root, &iface.name)? {
        let existing = super::inspect(&dir)?;
        match existing.state {
            LinkState::Attached => {
                check_mode(&existing, request.mode)?;
                let status = match rules {
                    None => Outcome::AlreadyAttached,
                    Some(rules) if existing.program == xdp_mesh_filter::PROGRAM => {
                        let pinned = xdp_mesh_filter::PinnedMaps::open(&dir)?;
                        xdp_mesh_filter::apply(&pinned.maps(), &rules.rules, &rules.compiled)?;
                        Outcome::RulesReplaced
                    }
                    Some(rules) => {
                        let to = root.attachment(&iface.name, xdp_mesh_filter::PROGRAM);
                        super::swap(&dir, &to, || xdp_mesh_filter::install(&to, btf, &dir, &rules.rules, &rules.compiled))?;
                        Outcome::Swapped
                    }
                };
                let dir = super::xdp_attachment(root, &iface.name)?.unwrap_or(dir);
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

    let mode = request.mode.unwrap_or(XdpMode::Native);
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
/// with classes, its QoS classes, set or replaced.
fn attach_flows(
    root: &StateRoot,
    iface: &Interface,
    flows: &Flows,
    btf: Option<&Path>,
) -> Result<(tc_classifier::FlowTable, Option<ClassesOutcome>)> {
    let dir = root.attachment(&iface.name, tc_classifier::PROGRAM);
    let mut outcome = flows.classes.map(|_| ClassesOutcome::Applied);
    if dir.is_committed() {
        if let Some(rules) = flows.classes {
            let pinned = classes::PinnedClassMaps::open(&dir)?;
            classes::apply(&pinned.maps(), rules)?;
            outcome = Some(ClassesOutcome::Replaced);
        }
    } else {
        let method = match flows.method {
            Some(TcMethod::Tcx) if !probe::tcx_available(iface) => {
                return Err(tc::tcx_refused(iface).into())
            }
            Some(method) => method,
            None if probe::tcx_available(iface) => TcMethod::Tcx,
            None => TcMethod::Netlink,
        };
        if let Err(err) =
            tc_classifier::attach(&dir, iface, method, flows.max_flows, btf, flows.classes)
        {
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

/// A program that detach removed, with its ids when it was still attached.
#[derive(Debug, Serialize)]
pub struct Removed {
    pub program: String,
    pub prog_id: Option<u32>,
    pub link_id: Option<u32>,
}

/// An XDP program of another tool, seen and left in place.
#[derive(Debug, Serialize)]
pub struct ForeignProg {
    pub id: u32,
    pub name: String,
}

pub struct Detached {
    /// Empty when nothing of meshbpf's was there.
    pub removed: Vec<Removed>,
    pub foreign_xdp_prog: Option<ForeignProg>,
}

/// Removes every meshbpf attachment and pin of an interface, which may have
/// been deleted meanwhile; another tool's XDP program stays, and is named.
pub fn detach(root: &StateRoot, interface: &str) -> Result<Detached> {
    // Without a bpffs under the root there can be no pins to remove.
    let lock = if bpffs::is_on_bpffs(root.path()) {
        Some(root.lock()?)
    } else {
        None
    };
    let dirs = match lock {
        Some(_) => root.program_dirs(interface)?,
        None => Vec::new(),
    };
    let iface = match netdev::resolve(interface) {
        Ok(iface) => Some(iface),
        Err(err) if dirs.is_empty() => return Err(err),
        // Pins outlive their interface; removing them is what detach is for.
        Err(_) => None,
    };

    let mut removed = Vec::new();
    for dir in &dirs {
        let before = if dir.is_committed() {
            super::inspect(dir).ok()
        } else {
            None
        };
        dir.remove()?;
        removed.push(Removed {
            program: dir.program.clone(),
            prog_id: before.as_ref().map(|a| a.prog_id),
            link_id: before.as_ref().map(|a| a.link_id),
        });
    }

    let foreign_xdp_prog = match iface {
        Some(iface) => xdp::query(iface.index)?.map(|current| ForeignProg {
            id: current.prog_id,
            name: bpfobj::prog_info_by_id(current.prog_id)
                .map(|p| p.name)
                .unwrap_or_default(),
        }),
        None => None,
    };
    Ok(Detached {
        removed,
        foreign_xdp_prog,
    })
}
