//! meshbpf on one interface as a whole: the XDP program (xdp_counter or
//! xdp_mesh_filter) and tc_classifier, attached, kept or swapped together,
//! and detached together, under the root's exclusive lock.
//!
//! # Invariant
//!
//! An interface is attached exactly when one XDP program directory pins its
//! link, that link runs the program pinned beside it (swaps: see
//! [`crate::state`]), and, if a `tc_classifier` directory exists, it is
//! hooked on both ingress and egress as its pins say (tcx links, or the
//! clsact filters its `clsact` records name). The XDP link pin is the commit
//! point of the pair: it is pinned after tc_classifier is whole and
//! detached before tc_classifier is touched, so tc_classifier without an
//! XDP link is never a state meshbpf leaves on purpose: it is an
//! interrupted attach or detach, and it is removed.
//!
//! # `attach IF` (fresh, with flows)
//!
//! | step | a kill after it leaves | the next command / `health --fix` |
//! |---|---|---|
//! | 1. [`reconcile`] | the old state, settled | — |
//! | 2. tc: load, pin programs and maps | tc uncommitted | sweep it |
//! | 3a. tcx: create both links (fds), pin `link_egress`, then `link` | tc uncommitted, its egress link pinned | sweep it: unpinning releases the link |
//! | 3b. netlink: pin the `clsact` records, then add both filters | tc recorded, hooked on 0-2 hooks, no XDP | remove it: the recorded filters are deleted |
//! | 4. XDP: load, create the link (fd), pin program and maps | tc alone; the XDP link died with the process | remove tc (roll back) |
//! | 5. pin the XDP `link`: **the commit** | the new state | — |
//!
//! `health` names each leftover ("tc_classifier is hooked on eth0 without
//! meshbpf's XDP program: an interrupted attach or detach; run meshbpf
//! attach eth0, or meshbpf detach eth0 or meshbpf health --fix"), and both
//! `attach` and `--fix` settle it with [`reconcile`] before anything else.
//! On an attachment that exists, `attach` adds tc_classifier (steps 2-3; a
//! kill leaves the old XDP attachment plus a leftover tc that is removed),
//! replaces the filter's rules or the QoS classes atomically (one map write
//! flips a generation), or swaps the XDP program ([`crate::state`]).
//!
//! # `detach IF`
//!
//! | step | a kill after it leaves | the next command / `health --fix` |
//! |---|---|---|
//! | 1. detach the XDP link, unpin its directory | tc alone (or a defunct XDP link pin, or a link-less XDP directory) | remove it all (roll forward) |
//! | 2. detach tc's links or delete its recorded filters, unpin | tc recorded with 0-2 hooks, no XDP | remove it |
//! | 3. remove other programs' directories (`attach --object`) | those | `detach` again |
//!
//! Every step is re-runnable: a link already detached, a filter or a qdisc
//! already gone are no error, and a filter at meshbpf's handle and priority
//! that runs a program meshbpf did not record is another tool's: it is
//! named and left alone, never replaced or deleted.
//!
//! # Readers
//!
//! `stats`, `filter show`, `flows` and `list` hold the shared lock and never
//! change anything: they report the program the kernel runs (the XDP link's
//! own info, not the directory its pin sits in) and say "interrupted" where
//! the pins and the kernel disagree; [`leftovers`] is what `health` reports.

use std::fs;
use std::os::fd::AsFd;
use std::path::Path;
use std::thread;

use anyhow::{anyhow, Context, Result};
use serde::Serialize;

use super::{Attachment, LinkState, Runs};
use crate::error::{errno_of, Failure};
use crate::kernel::netdev::{self, Interface};
use crate::kernel::pins::{AttachmentDir, StateRoot};
use crate::kernel::tc::TcMethod;
use crate::kernel::xdp::{self, XdpMode};
use crate::kernel::{bpffs, bpfobj, caps};
use crate::programs::tc_classifier::classes;
use crate::programs::xdp_mesh_filter::{confirm, Publish};
use crate::programs::{self, tc_classifier, xdp_counter, xdp_mesh_filter};
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
    /// When `None`: tcx where the kernel takes a link, netlink otherwise.
    pub method: Option<TcMethod>,
    pub classes: Option<&'a ClassRules>,
}

pub struct Attached {
    pub status: Outcome,
    pub attachment: Attachment,
    pub flows: Option<tc_classifier::FlowTable>,
    pub classes: Option<ClassesOutcome>,
}

/// Attaches, keeps, swaps or updates meshbpf on `iface`: all or nothing.
/// tc_classifier is hooked before the XDP link is pinned (the commit), and
/// removed again when this call hooked it and the XDP half fails.
pub fn attach(root: &StateRoot, iface: &Interface, request: &Request) -> Result<Attached> {
    let _lock = root.lock()?;
    reconcile(root, &iface.name)?;

    let existing = existing_xdp(root, iface, request.mode)?;
    let tc_dir = root.attachment(&iface.name, tc_classifier::PROGRAM);
    let ((fresh_tc, classes), xdp) = match (&request.flows, existing) {
        (Some(flows), None) => attach_both(root, iface, request, flows, &tc_dir)?,
        (flows, existing) => {
            let tc = match flows {
                None => (false, None),
                Some(flows) => attach_flows(&tc_dir, iface, flows, request.btf)?,
            };
            (
                tc,
                attach_xdp(root, iface, request, existing, &mut || Ok(())),
            )
        }
    };
    let (status, dir) = match xdp {
        Ok(done) => done,
        Err(err) => {
            if fresh_tc {
                tc_dir.remove()?;
            }
            return Err(err);
        }
    };
    let flows = match request.flows {
        Some(_) => Some(tc_classifier::inspect(&tc_dir)?),
        None => None,
    };
    Ok(Attached {
        status,
        attachment: super::inspect(&dir)?,
        flows,
        classes,
    })
}

/// What [`attach_flows`] returns.
type FlowsDone = (bool, Option<ClassesOutcome>);

/// A fresh attachment of both halves, in the commit order of a sequential
/// one: tc_classifier is loaded and hooked on a second thread while this
/// one loads the XDP program (and fills the filter's rules), whose link is
/// created only once tc_classifier is whole. Each tcx link waits for an RCU
/// grace period, in which the verifier has the CPU to itself. A tc failure
/// is the error; the XDP half's outcome is returned for the caller to act
/// on, as in the sequential order.
fn attach_both(
    root: &StateRoot,
    iface: &Interface,
    request: &Request,
    flows: &Flows,
    tc_dir: &AttachmentDir,
) -> Result<(FlowsDone, Result<(Outcome, AttachmentDir)>)> {
    thread::scope(|scope| {
        let mut tc = Some(scope.spawn(|| attach_flows(tc_dir, iface, flows, request.btf)));
        let mut tc_done = None;
        let xdp = attach_xdp(root, iface, request, None, &mut || {
            let done = join(&mut tc);
            let hooked = done.is_ok();
            tc_done = Some(done);
            match hooked {
                true => Ok(()),
                false => Err(anyhow!("tc_classifier was not attached")),
            }
        });
        let tc_done = match tc_done {
            Some(done) => done,
            // The XDP half failed before it waited.
            None => join(&mut tc),
        };
        Ok((tc_done?, xdp))
    })
}

fn join<T>(handle: &mut Option<thread::ScopedJoinHandle<'_, T>>) -> T {
    let handle = handle.take().expect("the tc thread is joined once");
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// meshbpf's XDP attachment that `attach` keeps, checked against the
/// request; None when there is none and no other tool's program is there.
fn existing_xdp(
    root: &StateRoot,
    iface: &Interface,
    mode: Option<XdpMode>,
) -> Result<Option<AttachmentDir>> {
    if let Some(dir) = super::xdp_attachment(root, &iface.name)? {
        let existing = super::inspect(&dir)?;
        match existing.state {
            LinkState::Attached => {
                check_mode(&existing, mode)?;
                return Ok(Some(dir));
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
    Ok(None)
}

/// The XDP half: keep, swap, replace the rules, or attach afresh (whose
/// link pin commits the interface); returns what it did and the attachment
/// directory.
fn attach_xdp(
    root: &StateRoot,
    iface: &Interface,
    request: &Request,
    existing: Option<AttachmentDir>,
    ready: &mut dyn FnMut() -> Result<()>,
) -> Result<(Outcome, AttachmentDir)> {
    let btf = request.btf;
    let rules = request.rules;
    if let Some(dir) = existing {
        let status = match rules {
            None => Outcome::AlreadyAttached,
            Some(rules) if dir.program == xdp_mesh_filter::PROGRAM => {
                let pinned = xdp_mesh_filter::PinnedMaps::open(&dir)?;
                let maps = pinned.maps();
                confirm::refuse_if_pending(&maps, &iface.name, "replace the rules of")?;
                xdp_mesh_filter::apply(&maps, &rules.rules, &rules.compiled, Publish::Now)?;
                Outcome::RulesReplaced
            }
            Some(rules) => {
                let to = root.attachment(&iface.name, xdp_mesh_filter::PROGRAM);
                super::swap(&dir, &to, || {
                    xdp_mesh_filter::install(&to, btf, &dir, &rules.rules, &rules.compiled)
                })?;
                Outcome::Swapped
            }
        };
        let dir = super::xdp_attachment(root, &iface.name)?.unwrap_or(dir);
        return Ok((status, dir));
    }

    let mode = request.mode.unwrap_or(XdpMode::Native);
    let program = if rules.is_some() {
        xdp_mesh_filter::PROGRAM
    } else {
        xdp_counter::PROGRAM
    };
    let dir = root.attachment(&iface.name, program);
    let attached = match rules {
        None => xdp_counter::attach(&dir, iface, mode, btf, ready),
        Some(rules) => {
            xdp_mesh_filter::attach(&dir, iface, mode, btf, &rules.rules, &rules.compiled, ready)
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

/// The TC half: tc_classifier on ingress and egress, unless it already runs
/// there whole; with classes, its QoS classes, set or replaced. Says
/// whether this call hooked it.
fn attach_flows(
    dir: &AttachmentDir,
    iface: &Interface,
    flows: &Flows,
    btf: Option<&Path>,
) -> Result<(bool, Option<ClassesOutcome>)> {
    if dir.is_committed() {
        match tc_classifier::missing_hooks(dir, iface)? {
            None => {
                let Some(rules) = flows.classes else {
                    return Ok((false, None));
                };
                let pinned = classes::PinnedClassMaps::open(dir)?;
                classes::apply(&pinned.maps(), rules)?;
                return Ok((false, Some(ClassesOutcome::Replaced)));
            }
            // Its pins say more than the kernel runs: hook it afresh.
            Some(why) => {
                log::warn!("tc_classifier on {}: {why}; attaching it again", iface.name);
                dir.remove()?;
            }
        }
    } else if dir.exists() {
        dir.remove()?;
    }
    if let Err(err) = tc_classifier::attach(
        dir,
        iface,
        flows.method,
        flows.max_flows,
        btf,
        flows.classes,
    ) {
        if dir.exists() {
            dir.remove()?;
        }
        return Err(err.context(format!("attaching tc_classifier to {}", iface.name)));
    }
    Ok((true, flows.classes.map(|_| ClassesOutcome::Applied)))
}

/// What an interrupted command left on an interface: the pins and the
/// kernel disagree, and [`reconcile`] settles it.
#[derive(Debug)]
pub struct Leftover {
    pub dir: AttachmentDir,
    pub kind: LeftoverKind,
}

#[derive(Debug)]
pub enum LeftoverKind {
    /// The link pinned in `dir` runs the program pinned in `to`: finished
    /// by moving the pin.
    UnfinishedSwap { to: AttachmentDir, prog_id: u32 },
    /// The link runs a program no pin holds: swapped back.
    StrandedSwap { prog_id: u32 },
    /// Pins without a commit: removed, with whatever of them still runs.
    Uncommitted,
    /// tc_classifier hooked without meshbpf's XDP program: removed.
    FlowsWithoutXdp,
    /// tc_classifier not hooked as its pins say: removed.
    FlowsIncomplete(String),
}

impl Leftover {
    /// What `health` says about it.
    pub fn describe(&self) -> String {
        let d = &self.dir;
        match &self.kind {
            LeftoverKind::UnfinishedSwap { to, prog_id } => super::unfinished_swap(d, to, *prog_id),
            LeftoverKind::StrandedSwap { prog_id } => super::stranded_swap(d, *prog_id),
            LeftoverKind::Uncommitted => format!(
                "orphaned pins at {}: no link pin: a command was interrupted before it committed",
                d.path.display()
            ),
            LeftoverKind::FlowsWithoutXdp => format!(
                "interrupted attach or detach of {}: tc_classifier is hooked without meshbpf's XDP program",
                d.interface
            ),
            LeftoverKind::FlowsIncomplete(why) => format!(
                "tc_classifier on {} is not hooked as its pins say: {why}",
                d.interface
            ),
        }
    }

    /// What to run.
    pub fn hint(&self) -> String {
        let iface = &self.dir.interface;
        match &self.kind {
            LeftoverKind::UnfinishedSwap { to, .. } if to.program == xdp_counter::PROGRAM => format!(
                "run meshbpf filter remove {iface} or meshbpf health --fix to finish the swap"
            ),
            LeftoverKind::UnfinishedSwap { .. } => format!(
                "run meshbpf filter apply {iface} RULES.json or meshbpf health --fix to finish the swap"
            ),
            LeftoverKind::StrandedSwap { .. } => format!(
                "run meshbpf health --fix to swap {} back, or meshbpf detach {iface}",
                self.dir.program
            ),
            LeftoverKind::FlowsWithoutXdp | LeftoverKind::FlowsIncomplete(_) => format!(
                "run meshbpf attach {iface} to attach it whole, or meshbpf detach {iface} or meshbpf health --fix to remove tc_classifier"
            ),
            LeftoverKind::Uncommitted => format!(
                "meshbpf health --fix removes them (so does meshbpf detach {iface})"
            ),
        }
    }

    /// Rolls forward or back to a state the invariant allows; says what it
    /// did, as `health --fix` reports it (an action name and a sentence).
    fn settle(&self) -> Result<(&'static str, String)> {
        let d = &self.dir;
        match &self.kind {
            LeftoverKind::UnfinishedSwap { to, .. } => {
                super::finish_move(d, to)?;
                Ok((
                    "finish_swap",
                    format!(
                        "finished the swap of {} → {} on {}",
                        d.program, to.program, d.interface
                    ),
                ))
            }
            LeftoverKind::StrandedSwap { prog_id } => {
                super::restore_link(d, *prog_id)?;
                Ok((
                    "finish_swap",
                    format!(
                        "swapped {} back onto {} (the link ran program {prog_id}, which no pin held)",
                        d.program, d.interface
                    ),
                ))
            }
            LeftoverKind::Uncommitted => {
                d.remove()?;
                Ok((
                    "remove_orphan",
                    format!(
                        "removed the orphaned pins of {} on {} at {} (no link pin: a command was interrupted before it committed)",
                        d.program,
                        d.interface,
                        d.path.display()
                    ),
                ))
            }
            LeftoverKind::FlowsWithoutXdp | LeftoverKind::FlowsIncomplete(_) => {
                d.remove()?;
                Ok((
                    "remove_interrupted",
                    format!("removed tc_classifier: {}", self.describe()),
                ))
            }
        }
    }
}

fn is_xdp(dir: &AttachmentDir) -> bool {
    programs::XDP_PROGRAMS.contains(&dir.program.as_str())
}

/// Everything on `interface` that breaks the invariant, swaps first: the
/// pins against the kernel's own view (link info, tc filters).
pub fn leftovers(root: &StateRoot, interface: &str) -> Result<Vec<Leftover>> {
    let dirs = root.program_dirs(interface)?;
    let mut found = Vec::new();
    let mut targets = Vec::new();
    let mut xdp_committed = false;
    let mut xdp_defunct = false;
    let mut here = None;
    for dir in dirs.iter().filter(|d| is_xdp(d) && d.link().exists()) {
        let link = bpfobj::link_info(bpfobj::open_pinned(&dir.link())?.as_fd())?;
        // A detached link (interface deleted, or detach killed before the
        // unpin) commits nothing; health's liveness names it defunct.
        if link.ifindex == 0 {
            xdp_defunct = true;
            continue;
        }
        xdp_committed = true;
        if link.ifindex != 0 && netdev::name_of(link.ifindex).as_deref() == Some(interface) {
            here = Some(Interface {
                name: interface.to_string(),
                index: link.ifindex,
            });
        }
        let kind = match super::runs(dir, link.prog_id) {
            Runs::Own => continue,
            Runs::Sibling(to) => {
                targets.push(to.path.clone());
                LeftoverKind::UnfinishedSwap {
                    to,
                    prog_id: link.prog_id,
                }
            }
            Runs::Unpinned if dir.prog().exists() => LeftoverKind::StrandedSwap {
                prog_id: link.prog_id,
            },
            // Nothing to go back to: detach removes it.
            Runs::Unpinned => continue,
        };
        found.push(Leftover {
            dir: dir.clone(),
            kind,
        });
    }
    for dir in dirs
        .iter()
        .filter(|d| !d.is_committed() && !targets.contains(&d.path))
    {
        found.push(Leftover {
            dir: dir.clone(),
            kind: LeftoverKind::Uncommitted,
        });
    }
    if let Some(tc) = dirs
        .iter()
        .find(|d| d.program == tc_classifier::PROGRAM && d.is_committed())
    {
        let kind = match &here {
            // Its interface was deleted: health's liveness calls both orphaned.
            _ if !xdp_committed && xdp_defunct && !tc_live(tc, interface)? => None,
            _ if !xdp_committed => Some(LeftoverKind::FlowsWithoutXdp),
            Some(iface) => {
                tc_classifier::missing_hooks(tc, iface)?.map(LeftoverKind::FlowsIncomplete)
            }
            // On an interface elsewhere, or gone: health's liveness says.
            None => None,
        };
        if let Some(kind) = kind {
            found.push(Leftover {
                dir: tc.clone(),
                kind,
            });
        }
    }
    Ok(found)
}

/// Whether tc_classifier's hooks can still run: a tcx link on an
/// interface, or netlink filters on an interface of that name here.
fn tc_live(tc: &AttachmentDir, interface: &str) -> Result<bool> {
    if tc.link().exists() {
        let link = bpfobj::link_info(bpfobj::open_pinned(&tc.link())?.as_fd())?;
        return Ok(link.ifindex != 0);
    }
    Ok(netdev::resolve(interface).is_ok())
}

/// Settles every leftover of `interface`, so that the old state or the new
/// one stands; returns what was done. Run under the exclusive lock, by
/// every change of an interface and by `health --fix`.
pub fn reconcile(root: &StateRoot, interface: &str) -> Result<Vec<(&'static str, String)>> {
    let mut done = Vec::new();
    for leftover in leftovers(root, interface)? {
        let (action, what) = leftover.settle()?;
        log::info!("{what}");
        done.push((action, what));
    }
    Ok(done)
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

    let mut dirs = dirs;
    // The XDP link commits the pair, so it goes first; tc_classifier next.
    dirs.sort_by_key(|d| match d.program.as_str() {
        _ if is_xdp(d) && d.link().exists() => 0,
        _ if is_xdp(d) => 1,
        tc_classifier::PROGRAM => 2,
        _ => 3,
    });
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
    // Removing the last program directory removes the interface's own; a
    // detach killed in between leaves it empty for this one.
    let iface_dir = root.interface_dir(interface);
    if lock.is_some() && iface_dir.is_dir() && root.program_dirs(interface)?.is_empty() {
        fs::remove_dir(&iface_dir).with_context(|| format!("removing {}", iface_dir.display()))?;
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
