//! The Prometheus exposition of everything meshbpf counts, read from the
//! pins at the moment it is asked for (`serve`, `stats --prometheus`).

mod encode;
mod families;
mod model;

use anyhow::Result;

pub use encode::Format;
pub use families::{Scrape, TableUse};
pub use model::{label, Family, Kind, Pair, Value};

use crate::health::{attachments, system, Check};
use crate::kernel::bpfobj;
use crate::kernel::pins::StateRoot;
use crate::kernel::runstats::RunStats;
use crate::programs::{lsm_monitor, syscall_latency, xdp_mesh_filter};
use crate::snapshot;

/// health's default threshold for a filter's drop share.
const MAX_DROP_PERCENT: u8 = 50;

/// The checks `health` runs, without its hook probes: those load programs,
/// too heavy for every scrape.
pub fn health_checks(root: &StateRoot) -> Vec<Check> {
    let mut checks = system::checks(root);
    checks.extend(attachments::checks(root, MAX_DROP_PERCENT));
    checks
}

/// One scrape: the state read under the shared lock, so an attach or detach
/// running at the same time is seen before or after, never half done.
pub fn exposition(root: &StateRoot, format: Format) -> Result<String> {
    let checks = health_checks(root);
    let _lock = root.lock_shared()?;
    let dirs = snapshot::xdp_dirs(root)?;
    let all = snapshot::gather(root, &dirs, None)?;
    let rules = dirs
        .iter()
        .filter(|d| d.program == xdp_mesh_filter::PROGRAM)
        .map(|d| {
            let pinned = xdp_mesh_filter::PinnedMaps::open(d)?;
            Ok((
                d.interface.clone(),
                xdp_mesh_filter::read_rules(&pinned.maps())?,
            ))
        })
        .collect::<Result<_>>()?;
    let latency_dir = root.host_attachment(syscall_latency::PROGRAM);
    let latency = if all.latency.is_some() {
        syscall_latency::read(&latency_dir)?
    } else {
        Vec::new()
    };
    let latency_ids = all.latency.iter().flat_map(|a| a.prog_ids);
    let lsm_ids = all
        .lsm
        .iter()
        .flat_map(|a| a.attachment.prog_ids.iter().copied());
    let host_programs = latency_ids
        .map(|id| (syscall_latency::PROGRAM, id))
        .chain(lsm_ids.map(|id| (lsm_monitor::PROGRAM, id)))
        .map(|(program, id)| {
            let info = bpfobj::prog_info_by_id(id)?;
            let stats = RunStats::from_info(&info);
            Ok((program, info.name, stats))
        })
        .collect::<Result<_>>()?;
    let scrape = Scrape {
        stats: &all,
        rules,
        latency,
        host_programs,
        checks: &checks,
    };
    encode::encode(families::families(&scrape), format)
}
