//! The read model that `stats`, `serve` and `stats --prometheus` share:
//! every attachment as its pins and the kernel describe it right now, with
//! its counters and how its programs ran. Nothing is cached: each call reads
//! the maps and the kernel's program info again.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::{Serialize, Serializer};

use crate::error::Interrupted;
use crate::interrupt;
use crate::kernel::pins::{AttachmentDir, StateRoot};
use crate::kernel::runstats::{RunStats, StatsEnabled};
use crate::kernel::{bpfobj, netdev};
use crate::programs::tc_classifier::{self, FlowTable};
use crate::programs::xdp_counter::traffic::{self, Traffic};
use crate::programs::xdp_mesh_filter::confirm::{self, Confirmation};
use crate::programs::xdp_mesh_filter::{self, FilterCounters, PinnedMaps};
use crate::programs::{self, HostReport, Scope, XDP_PROGRAMS};
use crate::state::{self, Attachment};

#[derive(Debug, Serialize)]
pub struct AttachmentStats {
    #[serde(flatten)]
    pub attachment: Attachment,
    #[serde(flatten)]
    pub traffic: Traffic,
    /// Verdicts, rate-limited and SYN-dropped counters when the filter runs.
    #[serde(flatten)]
    pub filter: Option<FilterCounters>,
    /// The filter's last `apply --confirm`, if there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmation: Option<Confirmation>,
    /// tc_classifier's flow table on the same interface, if attached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flows: Option<FlowTable>,
    pub runtime: Runtime,
}

/// How often and how long the interface's programs ran.
#[derive(Debug, Serialize)]
pub struct Runtime {
    /// The --sample window; null for the kernel's totals since each load.
    pub sampled_ns: Option<u64>,
    pub programs: Vec<ProgramRuntime>,
}

#[derive(Debug, Serialize)]
pub struct ProgramRuntime {
    pub program: String,
    /// The hook an interface program runs on (`xdp`, `tc_ingress`...); for
    /// a host-wide one, the kernel's name of the program.
    pub hook: String,
    pub prog_id: u32,
    #[serde(flatten)]
    pub stats: RunStats,
    /// Null when it did not run.
    pub avg_run_time_ns: Option<u64>,
}

/// A program of an attachment, by the hook it runs on.
struct Running {
    program: String,
    hook: String,
    prog_id: u32,
}

/// The XDP program the link runs, and tc_classifier's two if attached.
fn running(root: &StateRoot, xdp: &Attachment) -> Result<Vec<Running>> {
    let mut programs = vec![Running {
        program: xdp.program.clone(),
        hook: "xdp".into(),
        prog_id: xdp.prog_id,
    }];
    if let Some(tc) = hooked_tc(root, &xdp.interface)? {
        for (pin, hook) in [
            (tc_classifier::PROG_INGRESS_PIN, "tc_ingress"),
            (tc_classifier::PROG_EGRESS_PIN, "tc_egress"),
        ] {
            let prog = bpfobj::open_pinned(&tc.pin(pin))?;
            programs.push(Running {
                program: tc_classifier::PROGRAM.to_string(),
                hook: hook.into(),
                prog_id: bpfobj::prog_info(prog.as_fd())?.id,
            });
        }
    }
    Ok(programs)
}

/// A --sample window: statistics stay enabled until it is dropped, after
/// the programs were read a second time.
pub struct Window {
    _enabled: StatsEnabled,
    before: HashMap<u32, RunStats>,
    elapsed: Duration,
}

/// Enables run-time statistics, reads every program, waits, and hands back
/// the first reading. No lock is held while waiting, so attach and detach
/// are not held up by a long window.
pub fn sample(root: &StateRoot, length: Duration) -> Result<Window> {
    let enabled = StatsEnabled::enable()?;
    interrupt::install()?;
    let mut before = HashMap::new();
    {
        let _lock = root.lock_shared()?;
        for dir in xdp_dirs(root)? {
            for program in running(root, &state::inspect(&dir)?)? {
                before.insert(program.prog_id, RunStats::of(program.prog_id)?);
            }
        }
        for program in host(root, None)?.iter().flat_map(|h| &h.runtime.programs) {
            before.insert(program.prog_id, RunStats::of(program.prog_id)?);
        }
    }
    log::info!(
        "run-time statistics enabled; sampling {} programs for {length:?}",
        before.len()
    );
    let started = Instant::now();
    if interrupt::sleep_until(started + length) {
        return Err(Interrupted.into());
    }
    Ok(Window {
        _enabled: enabled,
        before,
        elapsed: started.elapsed(),
    })
}

/// How the programs of an interface attachment ran.
pub fn runtime(root: &StateRoot, xdp: &Attachment, window: Option<&Window>) -> Result<Runtime> {
    runtime_of(running(root, xdp)?, window)
}

fn runtime_of(programs: Vec<Running>, window: Option<&Window>) -> Result<Runtime> {
    let programs = programs
        .into_iter()
        .map(|p| {
            let now = RunStats::of(p.prog_id)?;
            // A program loaded during the window counted from zero.
            let stats = match window {
                Some(w) => now.since(w.before.get(&p.prog_id).copied().unwrap_or_default()),
                None => now,
            };
            Ok(ProgramRuntime {
                program: p.program,
                hook: p.hook,
                prog_id: p.prog_id,
                stats,
                avg_run_time_ns: stats.avg_run_time_ns(),
            })
        })
        .collect::<Result<_>>()?;
    Ok(Runtime {
        sampled_ns: window.map(|w| w.elapsed.as_nanos() as u64),
        programs,
    })
}

pub fn collect(
    root: &StateRoot,
    dir: &AttachmentDir,
    window: Option<&Window>,
) -> Result<AttachmentStats> {
    // The kernel's program, not the directory the link pin sits in: they
    // differ only mid-swap, and then `interrupted` says so.
    let attachment = state::inspect(dir)?;
    let running = dir.sibling(&attachment.program);
    let counted = if running.exists() { &running } else { dir };
    let (filter, confirmation) = if attachment.program == xdp_mesh_filter::PROGRAM {
        let pinned = PinnedMaps::open(counted)?;
        let maps = pinned.maps();
        (
            Some(xdp_mesh_filter::read_stats(&maps)?),
            confirm::read(&maps)?,
        )
    } else {
        (None, None)
    };
    Ok(AttachmentStats {
        runtime: runtime(root, &attachment, window)?,
        attachment,
        traffic: traffic::read_pinned_counters(counted)?,
        filter,
        confirmation,
        flows: flow_table(root, &dir.interface)?,
    })
}

/// One per interface: its XDP attachment, which the flow table goes with.
pub fn xdp_dirs(root: &StateRoot) -> Result<Vec<AttachmentDir>> {
    Ok(root
        .attachments()?
        .into_iter()
        .filter(|d| XDP_PROGRAMS.contains(&d.program.as_str()))
        .collect())
}

fn flow_table(root: &StateRoot, interface: &str) -> Result<Option<FlowTable>> {
    match hooked_tc(root, interface)? {
        Some(dir) => tc_classifier::inspect(&dir).map(Some),
        None => Ok(None),
    }
}

/// tc_classifier's directory on an interface, when the kernel runs it as
/// its pins say.
fn hooked_tc(root: &StateRoot, interface: &str) -> Result<Option<AttachmentDir>> {
    let dir = root.attachment(interface, tc_classifier::PROGRAM);
    Ok((dir.is_committed() && tc_hooked(&dir)?).then_some(dir))
}

/// Whether the kernel runs a committed tc_classifier attachment's programs
/// as its pins say (asked where the interface is in this namespace; from
/// elsewhere, the pins are taken at their word).
pub fn tc_hooked(dir: &AttachmentDir) -> Result<bool> {
    if let Ok(iface) = netdev::resolve(&dir.interface) {
        if let Some(why) = tc_classifier::missing_hooks(dir, &iface)? {
            log::warn!(
                "tc_classifier on {} is interrupted: {why}; meshbpf health --fix removes it",
                dir.interface
            );
            return Ok(false);
        }
    }
    Ok(true)
}

/// Every attachment: one element per interface, then the host-wide
/// syscall_latency and lsm_monitor, if attached.
#[derive(Debug)]
pub struct AllStats {
    pub attachments: Vec<AttachmentStats>,
    pub host: Vec<HostStats>,
    pub root: String,
}

/// A committed host-wide attachment, as its program reports it, and how
/// its programs ran.
#[derive(Debug, Serialize)]
pub struct HostStats {
    #[serde(skip)]
    pub program: &'static str,
    #[serde(flatten)]
    pub report: Box<dyn HostReport>,
    pub runtime: Runtime,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Entry<'a> {
    Interface(&'a AttachmentStats),
    Host(&'a HostStats),
}

impl Serialize for AllStats {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let host = self.host.iter().map(Entry::Host);
        serializer.collect_seq(self.attachments.iter().map(Entry::Interface).chain(host))
    }
}

/// Every attachment under `dirs`, and the host-wide ones; the caller holds
/// the shared lock.
pub fn gather(
    root: &StateRoot,
    dirs: &[AttachmentDir],
    window: Option<&Window>,
) -> Result<AllStats> {
    let attachments = dirs
        .iter()
        .map(|d| collect(root, d, window))
        .collect::<Result<Vec<_>>>()?;
    Ok(AllStats {
        attachments,
        host: host(root, window)?,
        root: root.path().display().to_string(),
    })
}

/// The host-wide attachments, where committed, in the order of
/// [`programs::ALL`].
pub fn host(root: &StateRoot, window: Option<&Window>) -> Result<Vec<HostStats>> {
    let mut found = Vec::new();
    for program in programs::ALL.iter().filter(|p| p.scope == Scope::Host) {
        let dir = root.host_attachment(program.name);
        if let (true, Some(stats)) = (dir.is_committed(), program.stats) {
            let report = stats(&dir)?;
            let running = report
                .prog_ids()
                .into_iter()
                .map(|prog_id| {
                    Ok(Running {
                        program: program.name.to_string(),
                        hook: bpfobj::prog_info_by_id(prog_id)?.name,
                        prog_id,
                    })
                })
                .collect::<Result<_>>()?;
            found.push(HostStats {
                program: program.name,
                runtime: runtime_of(running, window)?,
                report,
            });
        }
    }
    Ok(found)
}
