//! Turns what `stats`, `filter show`, `latency` and `health` read into
//! metric families: the families of all attachments here, each program's
//! own from its facets ([`programs::ALL`]). Nothing is cached.

use super::model::{label, Family, Kind, Value};
use crate::health::{Check, Status};
use crate::kernel::runstats::RunStats;
use crate::programs::{self, syscall_latency::Histogram, xdp_mesh_filter::ActiveRules};
use crate::snapshot::{AllStats, AttachmentStats};

/// What one scrape read, under one shared lock.
pub struct Scrape<'a> {
    pub stats: &'a AllStats,
    /// Per interface running xdp_mesh_filter: its active rules with hits.
    pub rules: Vec<(String, ActiveRules)>,
    /// Per syscall number, when syscall_latency is attached.
    pub latency: Vec<(u32, Histogram)>,
    /// The host-wide attachments' programs (syscall_latency, lsm_monitor):
    /// attachment, kernel program name, run counters.
    pub host_programs: Vec<(&'static str, String, RunStats)>,
    pub checks: &'a [Check],
}

/// One table that fills up, for `meshbpf_map_entries` and `_capacity`.
pub struct TableUse {
    pub interface: String,
    pub map: &'static str,
    pub entries: u64,
    pub capacity: u32,
}

pub fn families(scrape: &Scrape<'_>) -> Vec<Family> {
    let mut families = presence(scrape.stats).to_vec();
    for program in programs::ALL {
        families.extend((program.metrics)(scrape));
    }
    families.extend(map_sizes(scrape));
    families.extend(runtime(&scrape.stats.attachments, &scrape.host_programs));
    families.push(health(scrape.checks));
    families
}

/// Always a series each, so a host with nothing attached says so.
fn presence(stats: &AllStats) -> [Family; 2] {
    let mut up = Family::new("meshbpf_up", Kind::Gauge, "1: meshbpf read its state");
    up.add(vec![], Value::Int(1));
    let mut attachments = Family::new(
        "meshbpf_attachments",
        Kind::Gauge,
        "Committed attachments: one per interface, plus syscall_latency and lsm_monitor",
    );
    let host = stats.latency.iter().count() + stats.lsm.iter().count();
    attachments.add(vec![], Value::Int((stats.attachments.len() + host) as u64));
    [up, attachments]
}

/// The tables that fill up, as each program reports them.
fn map_sizes(scrape: &Scrape<'_>) -> [Family; 2] {
    let mut entries = Family::new(
        "meshbpf_map_entries",
        Kind::Gauge,
        "Entries in a map meshbpf counts",
    );
    let mut capacity = Family::new(
        "meshbpf_map_capacity",
        Kind::Gauge,
        "Maximum entries of a map meshbpf counts",
    );
    let tables = programs::ALL
        .iter()
        .filter_map(|p| p.tables)
        .flat_map(|tables| tables(scrape));
    for t in tables {
        let labels = vec![label("interface", &t.interface), label("map", t.map)];
        entries.add(labels.clone(), Value::Int(t.entries));
        capacity.add(labels, Value::Int(u64::from(t.capacity)));
    }
    [entries, capacity]
}

/// Interface programs are labelled with their interface and hook; host-wide
/// ones with `interface=""` and their kernel program name as the hook.
fn runtime(
    attachments: &[AttachmentStats],
    host_programs: &[(&'static str, String, RunStats)],
) -> [Family; 2] {
    let mut runs = Family::new(
        "meshbpf_program_runs",
        Kind::Counter,
        "Runs of a program (counted while kernel.bpf_stats_enabled=1)",
    );
    let mut run_time = Family::new(
        "meshbpf_program_run_time",
        Kind::Counter,
        "Time a program ran (counted while kernel.bpf_stats_enabled=1)",
    )
    .unit("seconds");
    for a in attachments {
        for p in &a.runtime.programs {
            let labels = vec![
                label("interface", &a.attachment.interface),
                label("program", &p.program),
                label("hook", p.hook),
            ];
            runs.add(labels.clone(), Value::Int(p.stats.run_cnt));
            run_time.add(labels, Value::Float(p.stats.run_time_ns as f64 / 1e9));
        }
    }
    for (program, hook, stats) in host_programs {
        let labels = vec![
            label("interface", ""),
            label("program", *program),
            label("hook", hook.as_str()),
        ];
        runs.add(labels.clone(), Value::Int(stats.run_cnt));
        run_time.add(labels, Value::Float(stats.run_time_ns as f64 / 1e9));
    }
    [runs, run_time]
}

/// One series per check and status, 1 for the status it has: an alert is
/// `meshbpf_health_check{status="fail"} == 1`.
fn health(checks: &[Check]) -> Family {
    let mut family = Family::new(
        "meshbpf_health_check",
        Kind::Gauge,
        "1 for the status a health check has now (ok, warn or fail), 0 for the others",
    );
    for c in checks {
        for status in [Status::Ok, Status::Warn, Status::Fail] {
            family.add(
                vec![label("check", c.title()), label("status", status.as_str())],
                Value::Int(u64::from(c.status == status)),
            );
        }
    }
    family
}
