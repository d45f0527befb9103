//! Turns what `stats`, `filter show`, `latency` and `health` read into
//! metric families. Every reader is the command's own; nothing is cached.

use super::model::{Family, Kind, Labels, Value};
use crate::health::{Check, Status};
use crate::kernel::runstats::RunStats;
use crate::kernel::syscalls;
use crate::programs::syscall_latency::histogram::{self, Histogram, BUCKETS};
use crate::programs::xdp_counter::traffic::Counter;
use crate::programs::xdp_mesh_filter::{ActiveRules, MAX_RULES};
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

fn label(name: &'static str, value: impl Into<String>) -> (&'static str, String) {
    (name, value.into())
}

/// A packets family and its bytes twin, filled together.
struct Pair {
    packets: Family,
    bytes: Family,
}

impl Pair {
    /// `what` completes "Packets ..." and "Bytes of the packets ...".
    fn new(name: &'static str, bytes: &'static str, what: [&'static str; 2]) -> Self {
        Pair {
            packets: Family::new(name, Kind::Counter, what[0]),
            bytes: Family::new(bytes, Kind::Counter, what[1]).unit("bytes"),
        }
    }

    fn add(&mut self, labels: Labels, c: Counter) {
        self.packets.add(labels.clone(), Value::Int(c.packets));
        self.bytes.add(labels, Value::Int(c.bytes));
    }

    fn into_families(self) -> [Family; 2] {
        [self.packets, self.bytes]
    }
}

pub fn families(scrape: &Scrape<'_>) -> Vec<Family> {
    let stats = scrape.stats;
    let mut families = presence(stats).to_vec();
    families.extend(traffic(&stats.attachments));
    families.extend(filter(&stats.attachments, &scrape.rules));
    families.extend(flows(&stats.attachments));
    families.extend(map_sizes(&stats.attachments, &scrape.rules));
    families.extend(runtime(&stats.attachments, &scrape.host_programs));
    families.push(latency(&scrape.latency));
    families.extend(lsm(stats));
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

fn traffic(attachments: &[AttachmentStats]) -> [Family; 2] {
    let mut traffic = Pair::new(
        "meshbpf_packets",
        "meshbpf",
        [
            "Packets the XDP program saw, by layer (l3 or l4) and protocol",
            "Bytes of the packets the XDP program saw, by layer (l3 or l4) and protocol",
        ],
    );
    for a in attachments {
        for (layer, breakdown) in [("l3", &a.traffic.l3), ("l4", &a.traffic.l4)] {
            for (protocol, c) in &breakdown.0 {
                let labels = vec![
                    label("interface", &a.attachment.interface),
                    label("layer", layer),
                    label("protocol", *protocol),
                ];
                traffic.add(labels, *c);
            }
        }
    }
    traffic.into_families()
}

fn filter(attachments: &[AttachmentStats], rules: &[(String, ActiveRules)]) -> Vec<Family> {
    let mut verdicts = Pair::new(
        "meshbpf_filter_verdict_packets",
        "meshbpf_filter_verdict",
        [
            "Packets xdp_mesh_filter passed or dropped",
            "Bytes of the packets xdp_mesh_filter passed or dropped",
        ],
    );
    let mut rate_limited = Pair::new(
        "meshbpf_filter_rate_limited_packets",
        "meshbpf_filter_rate_limited",
        [
            "Packets dropped by the per-source rate limit",
            "Bytes of the packets dropped by the per-source rate limit",
        ],
    );
    let mut syn_dropped = Pair::new(
        "meshbpf_filter_syn_dropped_packets",
        "meshbpf_filter_syn_dropped",
        [
            "TCP SYNs dropped by SYN-flood protection",
            "Bytes of the TCP SYNs dropped by SYN-flood protection",
        ],
    );
    for a in attachments {
        let Some(f) = &a.filter else { continue };
        let interface = &a.attachment.interface;
        for (verdict, c) in [("pass", f.verdicts.pass), ("drop", f.verdicts.drop)] {
            verdicts.add(
                vec![label("interface", interface), label("verdict", verdict)],
                c,
            );
        }
        rate_limited.add(vec![label("interface", interface)], f.rate_limited);
        syn_dropped.add(vec![label("interface", interface)], f.syn_dropped);
    }
    let mut hits = Pair::new(
        "meshbpf_filter_rule_packets",
        "meshbpf_filter_rule",
        [
            "Packets that matched a filter rule, by its index in the rule set",
            "Bytes of the packets that matched a filter rule, by its index in the rule set",
        ],
    );
    for (interface, active) in rules {
        for r in &active.rules {
            let labels = vec![
                label("interface", interface),
                label("rule", r.index.to_string()),
            ];
            hits.add(
                labels,
                Counter {
                    packets: r.packets,
                    bytes: r.bytes,
                },
            );
        }
    }
    [verdicts, hits, rate_limited, syn_dropped]
        .into_iter()
        .flat_map(Pair::into_families)
        .collect()
}

fn flows(attachments: &[AttachmentStats]) -> Vec<Family> {
    let mut flows = Family::new(
        "meshbpf_flows",
        Kind::Gauge,
        "Flows in tc_classifier's table now",
    );
    let mut created = Family::new(
        "meshbpf_flows_created",
        Kind::Counter,
        "Flows tc_classifier created",
    );
    let mut evicted = Family::new(
        "meshbpf_flow_evictions",
        Kind::Counter,
        "Flows the LRU table pushed out to make room",
    );
    let mut classes = Pair::new(
        "meshbpf_class_packets",
        "meshbpf_class",
        [
            "Packets per QoS class (attach --classes) and direction",
            "Bytes per QoS class (attach --classes) and direction",
        ],
    );
    for a in attachments {
        let Some(t) = &a.flows else { continue };
        let interface = &a.attachment.interface;
        let on = || vec![label("interface", interface)];
        flows.add(on(), Value::Int(t.flows as u64));
        created.add(on(), Value::Int(t.flows_created));
        evicted.add(on(), Value::Int(t.evictions));
        for c in &t.classes {
            for (direction, counter) in [("ingress", c.ingress), ("egress", c.egress)] {
                let labels = vec![
                    label("interface", interface),
                    label("class", &c.class),
                    label("direction", direction),
                ];
                classes.add(labels, counter);
            }
        }
    }
    let mut families = vec![flows, created, evicted];
    families.extend(classes.into_families());
    families
}

/// The tables that fill up: each flow table, and each filter's rule table.
fn map_sizes(attachments: &[AttachmentStats], rules: &[(String, ActiveRules)]) -> [Family; 2] {
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
    let flow_tables = attachments.iter().filter_map(|a| {
        let t = a.flows.as_ref()?;
        Some((
            &a.attachment.interface,
            "flows",
            t.flows as u64,
            t.max_flows,
        ))
    });
    let rule_tables = rules
        .iter()
        .map(|(interface, r)| (interface, "rules", r.rules.len() as u64, MAX_RULES));
    for (interface, map, used, max) in flow_tables.chain(rule_tables) {
        let labels = vec![label("interface", interface), label("map", map)];
        entries.add(labels.clone(), Value::Int(used));
        capacity.add(labels, Value::Int(u64::from(max)));
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

/// Bucket b counts [2^b, 2^(b+1)) ns: its Prometheus upper bound is
/// 2^(b+1) ns in seconds; the open last bucket is +Inf.
fn latency(histograms: &[(u32, Histogram)]) -> Family {
    let mut family = Family::new(
        "meshbpf_syscall_latency",
        Kind::Histogram,
        "Syscall latency from syscall_latency's log2 buckets",
    )
    .unit("seconds");
    for (nr, h) in histograms.iter().filter(|(_, h)| h.count > 0) {
        let buckets = (0..BUCKETS)
            .map(|b| {
                let le = match histogram::upper_bound(b) {
                    u64::MAX => f64::MAX,
                    max => (max + 1) as f64 / 1e9,
                };
                (le, h.buckets[b])
            })
            .collect();
        family.add(
            vec![label("syscall", syscalls::display_name(*nr))],
            Value::Histogram {
                sum: h.total_ns as f64 / 1e9,
                count: h.count,
                buckets,
            },
        );
    }
    family
}

fn lsm(stats: &AllStats) -> [Family; 3] {
    let mut events = Family::new(
        "meshbpf_lsm_events",
        Kind::Counter,
        "Security events lsm_monitor counted, by type",
    );
    let mut verdicts = Family::new(
        "meshbpf_lsm_verdicts",
        Kind::Counter,
        "Events lsm_monitor denied (enforce) or would have denied (audit)",
    );
    let mut lost = Family::new(
        "meshbpf_lsm_lost_events",
        Kind::Counter,
        "Events lost because the ring buffer was full",
    );
    if let Some(s) = &stats.lsm {
        for (kind, c) in s.events.by_type() {
            events.add(vec![label("type", kind)], Value::Int(c.events));
            for (verdict, n) in [("denied", c.denied), ("audited", c.audited)] {
                verdicts.add(
                    vec![label("type", kind), label("verdict", verdict)],
                    Value::Int(n),
                );
            }
            lost.add(vec![label("type", kind)], Value::Int(c.lost));
        }
    }
    [events, verdicts, lost]
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
