//! The Prometheus exposition of everything meshbpf counts, read from the
//! pins at the moment it is asked for (`serve`, `stats --prometheus`).

mod budget;
mod encode;
mod families;
pub mod http;
pub mod model;
mod readiness;

use anyhow::Result;

pub use budget::DEFAULT_MAX_SERIES;
pub use encode::Format;
pub use readiness::PROBE_TTL;

use crate::health::{attachments, system, Check};
use crate::kernel::bpfobj;
use crate::kernel::pins::AttachmentDir;
use crate::kernel::pins::StateRoot;
use crate::kernel::runstats::RunStats;
use crate::programs::{self, Scope};
use crate::{snapshot, state};
use budget::Budget;
use families::Scrape;
use readiness::Readiness;

/// health's default threshold for a filter's drop share.
const MAX_DROP_PERCENT: u8 = 50;

/// The checks `health` runs, without its hook probes: those load programs,
/// too heavy for every scrape.
pub fn health_checks(root: &StateRoot) -> Vec<Check> {
    let mut checks = system::checks(root);
    checks.extend(attachments::checks(root, MAX_DROP_PERCENT));
    checks
}

/// What scrapes remember: which rules have series of their own (the series
/// budget) and the hook probes' results.
#[derive(Debug)]
pub struct Exporter {
    budget: Budget,
    readiness: Readiness,
}

impl Exporter {
    pub fn new(max_series: usize) -> Self {
        Exporter {
            budget: Budget::new(max_series),
            readiness: Readiness::default(),
        }
    }

    pub fn scrape(&mut self, root: &StateRoot, format: Format) -> Result<String> {
        let checks = health_checks(root);
        let ready = self.readiness.family(&checks);
        let mut families = read(root, &checks)?;
        families.push(ready);
        encode::encode(self.budget.apply(families), format)
    }
}

/// The exposition once, with the default series budget (`stats
/// --prometheus`).
pub fn exposition(root: &StateRoot, format: Format) -> Result<String> {
    Exporter::new(DEFAULT_MAX_SERIES).scrape(root, format)
}

/// One scrape's families: the state read under the shared lock, so an
/// attach or detach running at the same time is seen before or after,
/// never half done.
fn read(root: &StateRoot, checks: &[Check]) -> Result<Vec<model::Family>> {
    let _lock = root.lock_shared()?;
    let attachments = root.attachments()?;
    let mut programs = Vec::new();
    for program in programs::ALL {
        let dirs: Vec<AttachmentDir> = match program.scope {
            Scope::Interface => attachments
                .iter()
                .filter(|d| d.program == program.name)
                .cloned()
                .collect(),
            Scope::Host => Some(root.host_attachment(program.name))
                .filter(AttachmentDir::is_committed)
                .into_iter()
                .collect(),
        };
        programs.extend((program.metrics)(&dirs)?);
    }
    let xdp = snapshot::xdp_dirs(root)?;
    let runtimes = xdp
        .iter()
        .map(|dir| {
            let attachment = state::inspect(dir)?;
            let runtime = snapshot::runtime(root, &attachment, None)?;
            Ok((attachment.interface, runtime))
        })
        .collect::<Result<_>>()?;
    let host = snapshot::host(root, None)?;
    let host_programs = host
        .iter()
        .flat_map(|h| h.report.prog_ids().into_iter().map(|id| (h.program, id)))
        .map(|(program, id)| {
            let info = bpfobj::prog_info_by_id(id)?;
            let stats = RunStats::from_info(&info);
            Ok((program, info.name, stats))
        })
        .collect::<Result<_>>()?;
    let scrape = Scrape {
        attachments: xdp.len() + host.len(),
        runtimes,
        host_programs,
        programs,
        checks,
    };
    Ok(families::families(scrape))
}
