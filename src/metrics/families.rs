//! The families of one scrape: presence, how programs ran and the health
//! checks, around the families each program reports of itself (its
//! facets, [`crate::programs::ALL`]). Nothing is cached.

use super::model::{self, label, Family, Kind, Value};
use crate::health::{Check, Status};
use crate::kernel::runstats::RunStats;
use crate::snapshot::Runtime;

/// What one scrape read, under one shared lock.
pub struct Scrape<'a> {
    /// Committed attachments: interfaces and host-wide ones.
    pub attachments: usize,
    /// Per interface: how its programs ran.
    pub runtimes: Vec<(String, Runtime)>,
    /// The host-wide attachments' programs (syscall_latency, lsm_monitor):
    /// attachment, kernel program name, run counters.
    pub host_programs: Vec<(&'static str, String, RunStats)>,
    /// Every program's own families, from its facets.
    pub programs: Vec<Family>,
    pub checks: &'a [Check],
}

pub fn families(scrape: Scrape<'_>) -> Vec<Family> {
    let mut families = presence(scrape.attachments).to_vec();
    families.extend(scrape.programs);
    families.extend(runtime(&scrape.runtimes, &scrape.host_programs));
    families.push(health(scrape.checks));
    model::merge(families)
}

/// Always a series each, so a host with nothing attached says so.
fn presence(committed: usize) -> [Family; 2] {
    let mut up = Family::new("meshbpf_up", Kind::Gauge, "1: meshbpf read its state");
    up.add(vec![], Value::Int(1));
    let mut attachments = Family::new(
        "meshbpf_attachments",
        Kind::Gauge,
        "Committed attachments: one per interface, plus syscall_latency and lsm_monitor",
    );
    attachments.add(vec![], Value::Int(committed as u64));
    [up, attachments]
}

/// Interface programs are labelled with their interface and hook; host-wide
/// ones with `interface=""` and their kernel program name as the hook.
fn runtime(
    runtimes: &[(String, Runtime)],
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
    for (interface, runtime) in runtimes {
        for p in &runtime.programs {
            let labels = vec![
                label("interface", interface),
                label("program", &p.program),
                label("hook", p.hook.clone()),
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
