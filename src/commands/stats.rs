//! `meshbpf stats [IFACE] [--sample SECONDS]`: counters of attachments,
//! read from their pins, and how often and how long their programs ran.

use std::time::Duration;

use anyhow::Result;
use comfy_table::Table;

use crate::cli::StatsArgs;
use crate::error::Failure;
use crate::kernel::pins::StateRoot;
use crate::kernel::{caps, netdev, xdp::XdpMode};
use crate::metrics;
use crate::output::{self, Output, Report};
use crate::programs::tc_classifier::classes::ClassUse;
use crate::snapshot::{self, AllStats, AttachmentStats, Runtime};
use crate::state::LinkState;

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
        let mut title = format!(
            "{} · {} · {state} · since {} · prog {} · link {}",
            a.interface, a.program, a.attached_at, a.prog_id, a.link_id
        );
        if let Some(interrupted) = &a.interrupted {
            title.push_str(&format!(
                "\nINTERRUPTED: {interrupted}; meshbpf health --fix finishes it"
            ));
        }
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
                "{title}\n{table}\npassed {} · dropped {} · rate-limited {} · SYN-dropped {} · banned {} by a ban set of {} entries (meshbpf filter show {} for rules)",
                output::count(f.verdicts.pass.packets),
                output::count(f.verdicts.drop.packets),
                output::count(f.rate_limited.packets),
                output::count(f.syn_dropped.packets),
                output::count(f.bans.banned.packets),
                output::count(f.bans.entries),
                a.interface
            ),
        };
        let confirmation = match self.confirmation.as_ref().filter(|c| c.pending()) {
            Some(c) => format!(
                "\nconfirmation pending: the previous rule set comes back at {} ({} s left) unless meshbpf filter confirm {}",
                c.deadline,
                c.remaining_ms / 1000,
                a.interface
            ),
            None => String::new(),
        };
        text + &confirmation + &flows + &classes + &self.runtime.render()
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

impl Report for AllStats {
    fn render(&self) -> String {
        if self.attachments.is_empty() && self.host.is_empty() {
            return format!("no meshbpf attachments under {}", self.root);
        }
        self.attachments
            .iter()
            .map(Report::render)
            .chain(
                self.host
                    .iter()
                    .map(|h| h.report.render() + &h.runtime.render()),
            )
            .collect::<Vec<_>>()
            .join("\n\n")
    }
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
    let window = args
        .sample
        .map(|length| snapshot::sample(root, length))
        .transpose()?;
    let window = window.as_ref();
    // Read whole under the shared lock, written after it is released: a
    // reader stalled on a pipe must not hold up a change.
    let read = {
        let _lock = root.lock_shared()?;
        let dirs = snapshot::xdp_dirs(root)?;
        match &args.interface {
            None => Read::All(snapshot::gather(root, &dirs, window)?),
            Some(name) => {
                let dir = dirs.iter().find(|d| &d.interface == name).ok_or_else(|| {
                    Failure::new(format!("nothing of meshbpf's is attached to {name}")).hint(
                        format!(
                            "attach with `meshbpf attach {name}`; `meshbpf stats` lists every attachment"
                        ),
                    )
                })?;
                Read::One(Box::new(snapshot::collect(root, dir, window)?))
            }
        }
    };
    match read {
        Read::All(all) => out.emit(&all)?,
        Read::One(one) => out.emit(&*one)?,
    }
    Ok(())
}

/// What one `stats` read: every attachment, or the one asked for.
enum Read {
    All(AllStats),
    One(Box<AttachmentStats>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::runstats::RunStats;
    use crate::programs::xdp_counter::traffic::{Breakdown, Counter, Traffic};
    use crate::snapshot::ProgramRuntime;
    use crate::state::Attachment;

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
                interrupted: None,
            },
            traffic: Traffic {
                packets: 1500,
                bytes: 2048,
                l3: Breakdown(vec![("ipv4", c(1500, 2048))]),
                l4: Breakdown(vec![("udp", c(1500, 2048))]),
            },
            filter: None,
            confirmation: None,
            flows: None,
            runtime: Runtime {
                sampled_ns: Some(2_000_000_000),
                programs: vec![ProgramRuntime {
                    program: "xdp_counter".into(),
                    hook: "xdp".into(),
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
            host: vec![],
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
        use crate::programs::syscall_latency::{ActiveFilters, LatencyAttachment, Method};
        use crate::snapshot::HostStats;
        let latency = LatencyAttachment {
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
        };
        let all = AllStats {
            attachments: vec![sample()],
            host: vec![HostStats {
                program: "syscall_latency",
                report: Box::new(latency),
                runtime: Runtime {
                    sampled_ns: None,
                    programs: vec![ProgramRuntime {
                        program: "syscall_latency".into(),
                        hook: "lat_enter".into(),
                        prog_id: 10,
                        stats: RunStats {
                            run_cnt: 4,
                            run_time_ns: 400,
                        },
                        avg_run_time_ns: Some(100),
                    }],
                },
            }],
            root: "/sys/fs/bpf/meshbpf".into(),
        };
        let v = serde_json::to_value(&all).unwrap();
        assert_eq!(v[0]["interface"], "eth0");
        assert_eq!(v[1]["program"], "syscall_latency");
        assert_eq!(v[1]["method"], "raw_tp");
        assert_eq!(v[1]["filters"]["pid"], 42);
        assert_eq!(v[1]["runtime"]["programs"][0]["hook"], "lat_enter");
        assert_eq!(v[1]["runtime"]["programs"][0]["run_cnt"], 4);
        let text = all.render();
        assert!(
            text.contains("host · syscall_latency · raw_tp · since 2026-11-22T22:55:25Z · progs 10/11 · links 4/5, only pid 42"),
            "{text}"
        );
        assert!(
            text.contains("syscall_latency (lat_enter, prog 10): 4 runs, 400 ns, 100 ns/run"),
            "{text}"
        );
    }
}
