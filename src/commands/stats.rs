//! `meshbpf stats [IFACE] [--sample SECONDS]`: counters of attachments,
//! read from their pins, and how often and how long their programs ran.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::Result;
use comfy_table::Table;
use serde::{Serialize, Serializer};

use crate::cli::StatsArgs;
use crate::error::{Failure, Interrupted};
use crate::interrupt;
use crate::kernel::pins::{AttachmentDir, StateRoot};
use crate::kernel::runstats::{RunStats, StatsEnabled};
use crate::kernel::{bpfobj, caps, netdev, xdp::XdpMode};
use crate::metrics;
use crate::output::{self, Output, Report};
use crate::programs::lsm_monitor::{self as lsm_program, LsmStats};
use crate::programs::syscall_latency::{self, LatencyAttachment};
use crate::programs::tc_classifier::classes::ClassUse;
use crate::programs::tc_classifier::{self, FlowTable};
use crate::programs::traffic::{self, Traffic};
use crate::programs::xdp_mesh_filter::{self, FilterCounters, PinnedMaps};
use crate::programs::XDP_PROGRAMS;
use crate::state::{self, Attachment, LinkState};

#[derive(Debug, Serialize)]
pub struct AttachmentStats {
    #[serde(flatten)]
    pub attachment: Attachment,
    #[serde(flatten)]
    pub traffic: Traffic,
    /// Verdicts, rate-limited and SYN-dropped counters when the filter runs.
    #[serde(flatten)]
    pub filter: Option<FilterCounters>,
    /// tc_classifier's flow table on the same interface, if attached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flows: Option<FlowTable>,
    pub runtime: Runtime,
}

/// How often and how long the interface's programs ran.
#[derive(Debug, Serialize)]
pub struct Runtime {
    /// The --sample window; null for the kernel's totals since each load.
    sampled_ns: Option<u64>,
    pub programs: Vec<ProgramRuntime>,
}

#[derive(Debug, Serialize)]
pub struct ProgramRuntime {
    pub program: String,
    pub hook: &'static str,
    prog_id: u32,
    #[serde(flatten)]
    pub stats: RunStats,
    /// Null when it did not run.
    avg_run_time_ns: Option<u64>,
}

/// A program of an attachment, by the hook it runs on.
struct Running {
    program: String,
    hook: &'static str,
    prog_id: u32,
}

/// The XDP program the link runs, and tc_classifier's two if attached.
fn running(root: &StateRoot, xdp: &Attachment) -> Result<Vec<Running>> {
    let mut programs = vec![Running {
        program: xdp.program.clone(),
        hook: "xdp",
        prog_id: xdp.prog_id,
    }];
    let tc = root.attachment(&xdp.interface, tc_classifier::PROGRAM);
    if tc.is_committed() {
        for (pin, hook) in [
            (tc_classifier::PROG_INGRESS_PIN, "tc_ingress"),
            (tc_classifier::PROG_EGRESS_PIN, "tc_egress"),
        ] {
            let prog = bpfobj::open_pinned(&tc.pin(pin))?;
            programs.push(Running {
                program: tc_classifier::PROGRAM.to_string(),
                hook,
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
fn sample(root: &StateRoot, length: Duration) -> Result<Window> {
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

fn runtime(root: &StateRoot, xdp: &Attachment, window: Option<&Window>) -> Result<Runtime> {
    let programs = running(root, xdp)?
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

fn collect(
    root: &StateRoot,
    dir: &AttachmentDir,
    window: Option<&Window>,
) -> Result<AttachmentStats> {
    let filter = if dir.program == xdp_mesh_filter::PROGRAM {
        let pinned = PinnedMaps::open(dir)?;
        Some(xdp_mesh_filter::read_stats(&pinned.maps())?)
    } else {
        None
    };
    let attachment = state::inspect(dir)?;
    Ok(AttachmentStats {
        runtime: runtime(root, &attachment, window)?,
        attachment,
        traffic: traffic::read_pinned_counters(dir)?,
        filter,
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
    let dir = root.attachment(interface, tc_classifier::PROGRAM);
    if !dir.is_committed() {
        return Ok(None);
    }
    tc_classifier::inspect(&dir).map(Some)
}

impl Report for AttachmentStats {
    fn render(&self) -> String {
        let a = &self.attachment;
        let state = match a.state {
            LinkState::Attached => a
                .mode
                .map(XdpMode::as_str)
                .unwrap_or("attached")
                .to_string(),
            LinkState::Defunct => "DEFUNCT: interface deleted or detach interrupted".to_string(),
            LinkState::Elsewhere => "attached in another network namespace".to_string(),
        };
        let title = format!(
            "{} · {} · {state} · since {} · prog {} · link {}",
            a.interface, a.program, a.attached_at, a.prog_id, a.link_id
        );
        let mut table = output::table(&["layer", "protocol", "packets", "bytes"]);
        for (layer, breakdown) in [("l3", &self.traffic.l3), ("l4", &self.traffic.l4)] {
            for (name, c) in &breakdown.0 {
                table.add_row(vec![
                    layer.into(),
                    (*name).into(),
                    output::right(output::count(c.packets)),
                    output::right(output::bytes(c.bytes)),
                ]);
            }
        }
        table.add_row(vec![
            "total".into(),
            "".into(),
            output::right(output::count(self.traffic.packets)),
            output::right(output::bytes(self.traffic.bytes)),
        ]);
        let flows = match &self.flows {
            Some(t) => format!(
                "\nflows: {} of {} in the table ({}), {} created, {} evicted, {} packets not IP",
                output::count(t.flows as u64),
                output::count(t.max_flows as u64),
                t.method.as_str(),
                output::count(t.flows_created),
                output::count(t.evictions),
                output::count(t.not_ip)
            ),
            None => String::new(),
        };
        let classes = match &self.flows {
            Some(t) if !t.classes.is_empty() => format!("\n{}", classes_table(&t.classes)),
            _ => String::new(),
        };
        let text = match &self.filter {
            None => format!("{title}\n{table}"),
            Some(f) => format!(
                "{title}\n{table}\npassed {} · dropped {} · rate-limited {} · SYN-dropped {} (meshbpf filter show {} for rules)",
                output::count(f.verdicts.pass.packets),
                output::count(f.verdicts.drop.packets),
                output::count(f.rate_limited.packets),
                output::count(f.syn_dropped.packets),
                a.interface
            ),
        };
        text + &flows + &classes + &self.runtime.render()
    }
}

impl Runtime {
    fn render(&self) -> String {
        let heading = match self.sampled_ns {
            Some(ns) => format!(
                "\nrun time over a {:.1} s sample:",
                Duration::from_nanos(ns).as_secs_f64()
            ),
            None => "\nrun time since load (counted only while run-time statistics are on: kernel.bpf_stats_enabled=1 or stats --sample):".to_string(),
        };
        let lines: String = self
            .programs
            .iter()
            .map(|p| {
                let average = p.avg_run_time_ns.map_or(String::new(), |avg| {
                    format!(", {} ns/run", output::count(avg))
                });
                format!(
                    "\n  {} ({}, prog {}): {} runs, {} ns{average}",
                    p.program,
                    p.hook,
                    p.prog_id,
                    output::count(p.stats.run_cnt),
                    output::count(p.stats.run_time_ns)
                )
            })
            .collect();
        heading + &lines
    }
}

/// Priorities as tc writes class ids (HTB picks the class by it), marks in
/// hex as iptables and tc write them.
fn classes_table(classes: &[ClassUse]) -> Table {
    let mut table = output::table(&[
        "class",
        "priority",
        "mark",
        "ingress packets",
        "ingress bytes",
        "egress packets",
        "egress bytes",
    ]);
    for c in classes {
        table.add_row(vec![
            c.class.clone().into(),
            c.priority
                .map(|p| format!("{:x}:{:x}", p >> 16, p & 0xffff))
                .unwrap_or_default()
                .into(),
            c.mark.map(|m| format!("{m:#x}")).unwrap_or_default().into(),
            output::right(output::count(c.ingress.packets)),
            output::right(output::bytes(c.ingress.bytes)),
            output::right(output::count(c.egress.packets)),
            output::right(output::bytes(c.egress.bytes)),
        ]);
    }
    table
}

/// Every attachment: one element per interface, then the host-wide
/// syscall_latency and lsm_monitor, if attached.
#[derive(Debug)]
pub struct AllStats {
    pub attachments: Vec<AttachmentStats>,
    pub latency: Option<LatencyAttachment>,
    pub lsm: Option<LsmStats>,
    root: String,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Entry<'a> {
    Interface(&'a AttachmentStats),
    Host(&'a LatencyAttachment),
    Lsm(&'a LsmStats),
}

impl Serialize for AllStats {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let host = self.latency.iter().map(Entry::Host);
        let lsm = self.lsm.iter().map(Entry::Lsm);
        serializer.collect_seq(
            self.attachments
                .iter()
                .map(Entry::Interface)
                .chain(host)
                .chain(lsm),
        )
    }
}

fn render_latency(a: &LatencyAttachment) -> String {
    format!(
        "host · {} · {} · since {} · progs {}/{} · links {}/{}{}\nper-syscall histograms: meshbpf latency",
        a.program,
        a.method.as_str(),
        a.attached_at,
        a.prog_ids[0],
        a.prog_ids[1],
        a.link_ids[0],
        a.link_ids[1],
        syscall_latency::describe_filters(a)
    )
}

fn render_lsm(s: &LsmStats) -> String {
    let a = &s.attachment;
    let mut table = output::table(&[
        "type",
        "events",
        "delivered",
        "lost",
        "denied",
        "audited",
        "suppressed",
    ]);
    for (name, c) in s.events.by_type() {
        table.add_row(vec![
            name.into(),
            output::right(output::count(c.events)),
            output::right(output::count(c.delivered)),
            output::right(output::count(c.lost)),
            output::right(output::count(c.denied)),
            output::right(output::count(c.audited)),
            output::right(output::count(c.suppressed)),
        ]);
    }
    format!(
        "host · {} · {} · {} mode · since {} · progs {} · links {}\n{}\n{table}\nlost in all: {}; events themselves: meshbpf events",
        a.program,
        a.method.as_str(),
        a.mode.as_str(),
        a.attached_at,
        join_ids(&a.prog_ids),
        join_ids(&a.link_ids),
        lsm_program::describe_policy(&a.policy),
        output::count(s.lost_total)
    )
}

fn join_ids(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join("/")
}

impl Report for AllStats {
    fn render(&self) -> String {
        if self.attachments.is_empty() && self.latency.is_none() && self.lsm.is_none() {
            return format!("no meshbpf attachments under {}", self.root);
        }
        self.attachments
            .iter()
            .map(Report::render)
            .chain(self.latency.iter().map(render_latency))
            .chain(self.lsm.iter().map(render_lsm))
            .collect::<Vec<_>>()
            .join("\n\n")
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
    let dir = root.host_attachment(syscall_latency::PROGRAM);
    let latency = if dir.is_committed() {
        Some(syscall_latency::inspect(&dir)?)
    } else {
        None
    };
    let dir = root.host_attachment(lsm_program::PROGRAM);
    let lsm = if dir.is_committed() {
        Some(lsm_program::stats(&dir)?)
    } else {
        None
    };
    Ok(AllStats {
        attachments,
        latency,
        lsm,
        root: root.path().display().to_string(),
    })
}

pub fn run(root: &StateRoot, out: &Output, args: &StatsArgs) -> Result<()> {
    if let Some(name) = &args.interface {
        netdev::validate_name(name)?;
    }
    caps::require("stats", &[caps::BPF, caps::SYS_ADMIN])?;
    if args.prometheus {
        out.text(&metrics::exposition(root, metrics::Format::Text)?)?;
        return Ok(());
    }
    let window = args.sample.map(|length| sample(root, length)).transpose()?;
    let window = window.as_ref();
    let _lock = root.lock_shared()?;
    let dirs = xdp_dirs(root)?;
    match &args.interface {
        None => out.emit(&gather(root, &dirs, window)?)?,
        Some(name) => {
            let dir = dirs.iter().find(|d| &d.interface == name).ok_or_else(|| {
                Failure::new(format!("nothing of meshbpf's is attached to {name}")).hint(format!(
                    "attach with `meshbpf attach {name}`; `meshbpf stats` lists every attachment"
                ))
            })?;
            out.emit(&collect(root, dir, window)?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::programs::traffic::{Breakdown, Counter};

    fn sample() -> AttachmentStats {
        let c = |packets, bytes| Counter { packets, bytes };
        AttachmentStats {
            attachment: Attachment {
                interface: "eth0".into(),
                program: "xdp_counter".into(),
                mode: Some(XdpMode::Skb),
                attached_at: "2026-11-22T22:55:25Z".into(),
                state: LinkState::Attached,
                prog_id: 7,
                link_id: 3,
                pin_path: "/sys/fs/bpf/meshbpf/net/eth0/xdp_counter".into(),
            },
            traffic: Traffic {
                packets: 1500,
                bytes: 2048,
                l3: Breakdown(vec![("ipv4", c(1500, 2048))]),
                l4: Breakdown(vec![("udp", c(1500, 2048))]),
            },
            filter: None,
            flows: None,
            runtime: Runtime {
                sampled_ns: Some(2_000_000_000),
                programs: vec![ProgramRuntime {
                    program: "xdp_counter".into(),
                    hook: "xdp",
                    prog_id: 7,
                    stats: RunStats {
                        run_cnt: 1500,
                        run_time_ns: 45_000,
                    },
                    avg_run_time_ns: Some(30),
                }],
            },
        }
    }

    #[test]
    fn json_flattens_the_attachment_and_its_counters() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["interface"], "eth0");
        assert_eq!(v["mode"], "skb");
        assert_eq!(v["state"], "attached");
        assert_eq!(v["packets"], 1500);
        assert_eq!(v["l4"]["udp"]["bytes"], 2048);
        assert_eq!(
            v["runtime"],
            serde_json::json!({
                "sampled_ns": 2_000_000_000u64,
                "programs": [{"program": "xdp_counter", "hook": "xdp", "prog_id": 7,
                    "run_cnt": 1500, "run_time_ns": 45000, "avg_run_time_ns": 30}]
            })
        );
    }

    #[test]
    fn the_table_has_a_title_a_row_per_slot_and_a_total() {
        let text = sample().render();
        let title = text.lines().next().unwrap();
        assert_eq!(
            title,
            "eth0 · xdp_counter · skb · since 2026-11-22T22:55:25Z · prog 7 · link 3"
        );
        let row = |prefix: &str| {
            text.lines()
                .find(|l| l.contains(prefix))
                .unwrap()
                .to_string()
        };
        assert!(
            row("ipv4").contains("1,500") && row("ipv4").contains("2.0 KiB"),
            "{text}"
        );
        assert!(row("total").contains("1,500"), "{text}");
        assert!(text.contains("run time over a 2.0 s sample:"), "{text}");
        assert!(
            text.contains("xdp_counter (xdp, prog 7): 1,500 runs, 45,000 ns, 30 ns/run"),
            "{text}"
        );
    }

    #[test]
    fn no_attachments_is_said_in_words_and_is_an_empty_array_in_json() {
        let all = AllStats {
            attachments: vec![],
            latency: None,
            lsm: None,
            root: "/sys/fs/bpf/meshbpf".into(),
        };
        assert_eq!(
            all.render(),
            "no meshbpf attachments under /sys/fs/bpf/meshbpf"
        );
        assert_eq!(serde_json::to_string(&all).unwrap(), "[]");
    }

    #[test]
    fn the_host_wide_latency_attachment_follows_the_interfaces() {
        use crate::programs::syscall_latency::{ActiveFilters, Method};
        let all = AllStats {
            attachments: vec![sample()],
            latency: Some(LatencyAttachment {
                program: "syscall_latency",
                method: Method::RawTp,
                attached_at: "2026-11-22T22:55:25Z".into(),
                prog_ids: [10, 11],
                link_ids: [4, 5],
                filters: ActiveFilters {
                    pid: Some(42),
                    ..ActiveFilters::default()
                },
                pin_path: "/sys/fs/bpf/meshbpf/host/syscall_latency".into(),
            }),
            lsm: None,
            root: "/sys/fs/bpf/meshbpf".into(),
        };
        let v = serde_json::to_value(&all).unwrap();
        assert_eq!(v[0]["interface"], "eth0");
        assert_eq!(v[1]["program"], "syscall_latency");
        assert_eq!(v[1]["method"], "raw_tp");
        assert_eq!(v[1]["filters"]["pid"], 42);
        let text = all.render();
        assert!(
            text.contains("host · syscall_latency · raw_tp · since 2026-11-22T22:55:25Z · progs 10/11 · links 4/5, only pid 42"),
            "{text}"
        );
    }
}
