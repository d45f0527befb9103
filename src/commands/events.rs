//! `meshbpf events`: lsm_monitor's security events from its pinned ring
//! buffer.
//!
//! - Without --follow: what the buffer holds now, then a summary; the
//!   records read are consumed (the next run starts after them).
//! - `--follow`: keeps reading until Ctrl-C (exit 130, after the summary),
//!   or until the monitor is detached (exit 0, after the summary); a `lost`
//!   line whenever the kernel counted new losses.
//!
//! A table, or with -j JSON Lines: one object per event, `lost` lines, and
//! the `summary` line last.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::cli::EventsArgs;
use crate::error::{Failure, Interrupted};
use crate::interrupt;
use crate::kernel::caps;
use crate::kernel::clock::BootAnchor;
use crate::kernel::pins::StateRoot;
use crate::output::{self, Delivery, Output};
use crate::programs::lsm_monitor::counters::EventCounts;
use crate::programs::lsm_monitor::events::{self, Detail, Event, EventTypes, Reader};
use crate::programs::lsm_monitor::PROGRAM;

/// Records taken from the ring buffer at a time: output starts early and
/// memory stays bounded while a flood goes on.
const BATCH: usize = 4096;
/// How long --follow waits for records before it looks at the lost
/// counters and Ctrl-C again.
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Serialize)]
struct Summary {
    #[serde(rename = "type")]
    kind: &'static str,
    /// Records this run read, before --type and --pid.
    delivered: u64,
    /// The kernel's count since attach.
    lost: u64,
    lost_by_type: LostByType,
}

/// Lost events since attach, per type.
#[derive(Debug, Serialize)]
struct LostByType {
    exec: u64,
    open: u64,
    ptrace: u64,
    capable: u64,
    module: u64,
}

impl Summary {
    fn new(delivered: u64, counts: &EventCounts) -> Summary {
        Summary {
            kind: "summary",
            delivered,
            lost: counts.lost_total(),
            lost_by_type: LostByType {
                exec: counts.exec.lost,
                open: counts.open.lost,
                ptrace: counts.ptrace.lost,
                capable: counts.capable.lost,
                module: counts.module.lost,
            },
        }
    }

    fn render(&self, counts: &EventCounts) -> String {
        let by_type: Vec<String> = counts
            .by_type()
            .iter()
            .filter(|(_, c)| c.lost > 0)
            .map(|(name, c)| format!("{name} {}", output::count(c.lost)))
            .collect();
        let detail = if by_type.is_empty() {
            String::new()
        } else {
            format!(" ({})", by_type.join(", "))
        };
        format!(
            "{} events read; {} lost since attach (ring buffer full){detail}",
            output::count(self.delivered),
            output::count(self.lost)
        )
    }
}

#[derive(Debug, Serialize)]
struct Lost {
    #[serde(rename = "type")]
    kind: &'static str,
    lost: u64,
    lost_total: u64,
}

/// Which events to print; every record read counts as delivered anyway.
struct Filter {
    types: Option<EventTypes>,
    pid: Option<u32>,
}

impl Filter {
    fn keeps(&self, event: &Event) -> bool {
        self.types.as_ref().is_none_or(|t| t.contains(event.kind))
            && self.pid.is_none_or(|pid| event.pid == pid)
    }
}

const COLUMNS: [&str; 7] = ["time", "type", "verdict", "pid", "uid", "comm", "what"];

/// What an event is about, in a few words.
fn what(event: &Event) -> String {
    match &event.detail {
        Detail::Exec { path } => path.clone(),
        Detail::Open {
            path,
            flags,
            access,
            result,
        } => {
            let failed = result
                .as_ref()
                .filter(|r| *r != "ok")
                .map(|errno| format!(" = {errno}"))
                .unwrap_or_default();
            format!("{path} ({access}: {}){failed}", flags.join("|"))
        }
        Detail::Ptrace {
            target_pid,
            target_comm,
            mode,
            request,
            other_user,
            ..
        } => {
            let how = match (mode, request) {
                (Some(mode), _) => mode.join(","),
                (_, Some(request)) => request.to_string(),
                _ => String::new(),
            };
            let comm = target_comm
                .as_ref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            let other = if *other_user { ", another user's" } else { "" };
            format!("pid {target_pid}{comm} {how}{other}")
        }
        Detail::Capable {
            capability,
            capability_name,
        } => format!("{capability_name} ({capability})"),
        Detail::Module { module_kind, path } => match path {
            Some(path) => format!("{module_kind} {path}"),
            None => module_kind.to_string(),
        },
    }
}

fn cells(event: &Event) -> [String; 7] {
    let truncated = if event.truncated { " [cut]" } else { "" };
    [
        // HH:MM:SS.mmm of the RFC 3339 time.
        event.time.get(11..23).unwrap_or(&event.time).to_string(),
        event.kind.to_string(),
        event.verdict.to_string(),
        event.pid.to_string(),
        event.uid.to_string(),
        event.comm.clone(),
        format!("{}{truncated}", what(event)),
    ]
}

fn table(events: &[Event]) -> String {
    let mut table = output::table(&COLUMNS);
    for event in events {
        table.add_row(cells(event).to_vec());
    }
    table.to_string()
}

/// A --follow line; the widths fit the usual values, longer ones push on.
fn line(cells: &[String; 7]) -> String {
    format!(
        "{:<12}  {:<7}  {:<7}  {:>7}  {:>5}  {:<15}  {}",
        cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6]
    )
}

/// Where the events go: JSON Lines as they come, a table at the end, or
/// (--follow without -j) aligned lines as they come.
struct Sink<'a> {
    out: &'a Output,
    follow: bool,
    held: Vec<Event>,
}

impl Sink<'_> {
    fn start(&self) -> Result<Delivery> {
        if self.follow && !self.out.is_json() {
            return Ok(self.out.stream_text(&line(&COLUMNS.map(str::to_string)))?);
        }
        Ok(Delivery::Delivered)
    }

    fn events(&mut self, events: Vec<Event>) -> Result<Delivery> {
        if events.is_empty() {
            return Ok(Delivery::Delivered);
        }
        if self.out.is_json() {
            return Ok(self.out.lines(&events)?);
        }
        if !self.follow {
            self.held.extend(events);
            return Ok(Delivery::Delivered);
        }
        let text: Vec<String> = events.iter().map(|e| line(&cells(e))).collect();
        Ok(self.out.stream_text(&text.join("\n"))?)
    }

    fn lost(&self, lost: u64, lost_total: u64) -> Result<Delivery> {
        if self.out.is_json() {
            return Ok(self.out.lines([Lost {
                kind: "lost",
                lost,
                lost_total,
            }])?);
        }
        Ok(self.out.stream_text(&format!(
            "-- {} events lost (ring buffer full), {} since attach",
            output::count(lost),
            output::count(lost_total)
        ))?)
    }

    fn finish(&self, delivered: u64, counts: &EventCounts) -> Result<()> {
        let summary = Summary::new(delivered, counts);
        if self.out.is_json() {
            self.out.lines([&summary])?;
            return Ok(());
        }
        let mut text = String::new();
        if !self.follow {
            text = if self.held.is_empty() {
                "no events".into()
            } else {
                table(&self.held)
            };
            text.push('\n');
        }
        text.push_str(&summary.render(counts));
        self.out.stream_text(&text)?;
        Ok(())
    }
}

pub fn run(root: &StateRoot, out: &Output, args: &EventsArgs) -> Result<()> {
    caps::require("events", &[caps::BPF])?;
    let dir = root.host_attachment(PROGRAM);
    let mut reader = {
        let _lock = root.lock_shared()?;
        if !dir.is_committed() {
            return Err(not_attached(root).into());
        }
        Reader::open(&dir)?
    };
    if args.follow {
        interrupt::install()?;
    }
    let filter = Filter {
        types: args.types.clone(),
        pid: args.pid,
    };
    let mut sink = Sink {
        out,
        follow: args.follow,
        held: Vec::new(),
    };
    if sink.start()? == Delivery::Closed {
        return Ok(());
    }
    let mut delivered = 0;
    let mut lost_total = reader.counters()?.lost_total();
    loop {
        // Checked before draining: what came before a detach is still read.
        let attached = !args.follow || reader.still_attached()?;
        match drain(&mut reader, &filter, &mut sink)? {
            Some(read) => delivered += read,
            None => return Ok(()),
        }
        let counters = reader.counters()?;
        if !args.follow {
            return sink.finish(delivered, &counters);
        }
        if counters.lost_total() > lost_total
            && sink.lost(counters.lost_total() - lost_total, counters.lost_total())?
                == Delivery::Closed
        {
            return Ok(());
        }
        lost_total = counters.lost_total();
        if interrupt::happened() {
            sink.finish(delivered, &counters)?;
            return Err(Interrupted.into());
        }
        if !attached {
            out.note("lsm_monitor was detached: no more events can come");
            return sink.finish(delivered, &counters);
        }
        reader.wait(POLL)?;
    }
}

/// Reads every record the buffer holds now into `sink`, in batches; how
/// many, or None once stdout is closed.
fn drain(reader: &mut Reader, filter: &Filter, sink: &mut Sink) -> Result<Option<u64>> {
    let mut read = 0;
    loop {
        let batch = reader.take(BATCH)?;
        if batch.is_empty() {
            return Ok(Some(read));
        }
        read += batch.len() as u64;
        let anchor = BootAnchor::now();
        let mut kept = Vec::with_capacity(batch.len());
        for raw in &batch {
            let event = events::decode(raw, &anchor)?;
            if filter.keeps(&event) {
                kept.push(event);
            }
        }
        if sink.events(kept)? == Delivery::Closed {
            return Ok(None);
        }
    }
}

fn not_attached(root: &StateRoot) -> Failure {
    Failure::new(format!(
        "lsm_monitor is not attached: no lsm_monitor attachment under {}, so there are no events to read",
        root.path().display()
    ))
    .hint("start it with `meshbpf attach --lsm` (--policy FILE to watch paths)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_event() -> Event {
        Event {
            time: "2027-01-15T08:00:00.000000123Z".into(),
            ts_ns: 1,
            kind: "open",
            verdict: "audit",
            method: crate::programs::lsm_monitor::Method::Tracepoint,
            hook: "sys_enter",
            pid: 100,
            ppid: 1,
            uid: 0,
            comm: "cat".into(),
            cgroup_id: 1,
            detail: Detail::Open {
                path: "/etc/shadow".into(),
                flags: vec!["O_WRONLY".into(), "O_TRUNC".into()],
                access: "write",
                result: None,
            },
            truncated: false,
        }
    }

    #[test]
    fn rows_say_what_happened() {
        let event = open_event();
        assert_eq!(
            cells(&event),
            [
                "08:00:00.000",
                "open",
                "audit",
                "100",
                "0",
                "cat",
                "/etc/shadow (write: O_WRONLY|O_TRUNC)"
            ]
        );
        let ptrace = Event {
            kind: "ptrace",
            detail: Detail::Ptrace {
                target_pid: 7,
                target_uid: None,
                target_comm: None,
                mode: None,
                request: Some("PTRACE_ATTACH"),
                other_user: false,
            },
            ..open_event()
        };
        assert_eq!(what(&ptrace), "pid 7 PTRACE_ATTACH");
    }

    #[test]
    fn filters_select_by_type_and_pid() {
        let event = open_event();
        let filter = |types: Option<&str>, pid| Filter {
            types: types.map(|t| events::parse_types(t).unwrap()),
            pid,
        };
        assert!(filter(None, None).keeps(&event));
        assert!(filter(Some("exec,open"), Some(100)).keeps(&event));
        assert!(!filter(Some("exec"), None).keeps(&event));
        assert!(!filter(None, Some(101)).keeps(&event));
    }

    #[test]
    fn the_summary_names_the_types_that_lost() {
        let mut counts = EventCounts::default();
        counts.open.events = 100_000;
        counts.open.lost = 88_000;
        counts.capable.lost = 2;
        let summary = Summary::new(12_000, &counts);
        assert_eq!(
            summary.render(&counts),
            "12,000 events read; 88,002 lost since attach (ring buffer full) (open 88,000, capable 2)"
        );
        assert_eq!(
            serde_json::to_string(&summary).unwrap(),
            r#"{"type":"summary","delivered":12000,"lost":88002,"lost_by_type":{"exec":0,"open":88000,"ptrace":0,"capable":2,"module":0}}"#
        );
    }
}
