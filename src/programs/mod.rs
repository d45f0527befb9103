//! meshbpf's own eBPF programs, one module each: skeleton, attach logic,
//! map readers, and the facets the rest of meshbpf asks of every program
//! (the stats it reports, its health checks, its metric families).
//!
//! [`ALL`] lists the programs once: `health`, `serve` and
//! `stats --prometheus` iterate it instead of naming programs, so a new
//! program adds its module and one entry here.

use anyhow::Result;

use crate::health::Check;
use crate::kernel::pins::AttachmentDir;
use crate::metrics::model::Family;

pub mod capture;
pub mod loaded;
pub mod lsm_monitor;
pub mod maps;
pub mod syscall_latency;
pub mod tc_classifier;
pub mod xdp_counter;
pub mod xdp_mesh_filter;

/// Where a program's pins live: one directory per interface
/// (`net/<iface>/<program>/`), or one for the host (`host/<program>/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Interface,
    Host,
}

/// What meshbpf asks of one of its programs beyond loading it. Facets take
/// pin directories, never the read model of all attachments, so that a
/// program depends on nothing above it.
pub struct Facets {
    pub name: &'static str,
    pub scope: Scope,
    /// Its metric families, read from the pins of every committed
    /// attachment of it (none when it is not attached: the families are
    /// there all the same, empty).
    pub metrics: fn(&[AttachmentDir]) -> Result<Vec<Family>>,
    pub health: Option<HealthChecks>,
    /// A host-wide program's element of `stats`, read from its directory.
    pub stats: Option<HostStats>,
}

pub type HostStats = fn(&AttachmentDir) -> Result<Box<dyn HostReport>>;

/// What a host-wide program reports in `stats`: its element of
/// `stats -j` (its own serialization), its block of the table, and the
/// programs it runs, for their run-time series.
pub trait HostReport: erased_serde::Serialize + std::fmt::Debug {
    fn render(&self) -> String;
    fn prog_ids(&self) -> Vec<u32>;
}

erased_serde::serialize_trait_object!(HostReport);

/// Checks of one of a program's pin directories: for an interface program
/// only once the directory is known to be live; a host program's checks
/// say themselves whether its pins are orphaned. The argument is health's
/// drop-share threshold in percent.
pub type HealthChecks = fn(&AttachmentDir, u8) -> Result<Vec<Check>>;

/// Every program meshbpf ships, in the order reports list them.
pub const ALL: [&Facets; 5] = [
    &xdp_counter::FACETS,
    &xdp_mesh_filter::FACETS,
    &tc_classifier::FACETS,
    &syscall_latency::FACETS,
    &lsm_monitor::FACETS,
];

/// The facets of the program a pin directory is named after.
pub fn find(name: &str) -> Option<&'static Facets> {
    ALL.into_iter().find(|p| p.name == name)
}

/// meshbpf's XDP programs; an interface runs at most one of them.
pub const XDP_PROGRAMS: [&str; 2] = [xdp_counter::PROGRAM, xdp_mesh_filter::PROGRAM];
