//! `meshbpf flows [IFACE] [filters] [--sort] [--top N] [--follow]`: the
//! conversations crossing an interface, read from tc_classifier's pinned
//! flow table (`<root>/net/<iface>/tc_classifier/flows`).
//!
//! Output:
//! - `-j`: an array of flow objects (see [`FlowRecord`]); times are RFC 3339
//!   UTC with milliseconds, converted from the kernel's CLOCK_MONOTONIC.
//! - `--follow -j`: JSON Lines. Each refresh is a marker line
//!   `{"refresh": TIME, "flows": SHOWN, "matched": M, "total": T}` followed
//!   by SHOWN flow lines of the same shape as without --follow; a refresh
//!   with no flows is the marker alone, so readers see every refresh.
//! - `--follow` alone: the table, redrawn in place (on a terminal, at most
//!   as many rows as fit unless --top says otherwise).
//!
//! Rates: without --follow (and on the first refresh), a flow's counts over
//! its age (now - first seen, at least one second, so a flow that just began
//! is not rated at its burst speed). With --follow, the growth of its counts
//! since the previous refresh over the time between the two reads; a flow
//! that began since then is rated over that time too.
//!
//! Ctrl-C ends --follow with exit status 130; a reader closing stdout ends
//! it with 0.

use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::{Serialize, Serializer};

use crate::cli::FlowsArgs;
use crate::error::{Failure, Interrupted};
use crate::interrupt;
use crate::kernel::clock::{self, Anchor};
use crate::kernel::pins::{AttachmentDir, StateRoot};
use crate::kernel::{caps, netdev, term};
use crate::output::{self, Delivery, Output, Report};
use crate::programs::tc_classifier;
use crate::programs::tc_classifier::flows::{Flow, FlowKey, FlowQuery, FlowSort, HasFlow};
use crate::proto::{self, L7};
use crate::snapshot;

/// Where flows come from: [`read`] (or, in tests, anything else). Hands
/// each flow to the sink as it is read; false when the table does not
/// count (the kernel does not run its programs).
pub type FlowSource<'a> = &'a dyn Fn(&AttachmentDir, &mut dyn FnMut(Flow)) -> Result<bool>;

/// Every flow in the pinned table of a tc_classifier attachment
/// (`<root>/net/<iface>/tc_classifier/flows`), unless the kernel does not
/// run its programs as the pins say: then its counts would pass for live
/// ones.
pub fn read(dir: &AttachmentDir, sink: &mut dyn FnMut(Flow)) -> Result<bool> {
    if !snapshot::tc_hooked(dir)? {
        return Ok(false);
    }
    tc_classifier::visit_pinned_flows(dir, &mut |key, value| {
        sink(tc_classifier::decode(key, value))
    })?;
    Ok(true)
}

pub fn run(root: &StateRoot, out: &Output, args: &FlowsArgs) -> Result<()> {
    if let Some(name) = &args.interface {
        netdev::validate_name(name)?;
    }
    let query = FlowQuery::from_args(&args.query)?;
    let interval = interval(args)?;
    caps::require("flows", &[caps::BPF])?;
    if !args.follow {
        let snapshot = take(
            root,
            args.interface.as_deref(),
            &query,
            &read,
            Refresh::Once,
        )?;
        out.emit(&snapshot.report(root, args.interface.as_deref(), query.sort))?;
        return Ok(());
    }
    interrupt::install()?;
    match follow(root, out, args, &query, interval, &read)? {
        Ended::Closed => Ok(()),
        Ended::Interrupted => Err(Interrupted.into()),
    }
}

fn interval(args: &FlowsArgs) -> Result<Duration, Failure> {
    let seconds = args.interval;
    if !(0.01..=86_400.0).contains(&seconds) {
        return Err(Failure::new(format!(
            "--interval: {seconds} is not a number of seconds between 0.01 and 86400"
        ))
        .hint("write seconds between refreshes, such as 1 or 0.5"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The attachments whose flow tables to read.
fn tables(root: &StateRoot, interface: Option<&str>) -> Result<Vec<AttachmentDir>> {
    match interface {
        Some(name) => {
            let dir = root.attachment(name, tc_classifier::PROGRAM);
            if !dir.is_committed() {
                return Err(Failure::new(format!(
                    "{name} has no flow table: tc_classifier is not attached to it"
                ))
                .hint(format!(
                    "attach with `meshbpf attach {name}` (without --no-flows); `meshbpf flows` shows every interface's flows"
                ))
                .into());
            }
            Ok(vec![dir])
        }
        None => Ok(root
            .attachments()?
            .into_iter()
            .filter(|dir| dir.program == tc_classifier::PROGRAM)
            .collect()),
    }
}

/// A flow and the interface whose table holds it.
#[derive(Debug, Clone)]
struct Row {
    interface: Rc<str>,
    flow: Flow,
}

impl HasFlow for Row {
    fn flow(&self) -> &Flow {
        &self.flow
    }

    fn source(&self) -> &str {
        &self.interface
    }
}

/// Bytes and packets per second.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rate {
    bytes: f64,
    packets: f64,
}

impl Rate {
    fn over(bytes: u64, packets: u64, seconds: f64) -> Rate {
        Rate {
            bytes: bytes as f64 / seconds,
            packets: packets as f64 / seconds,
        }
    }

    /// Over the time the flow was active, from its first packet to its
    /// last, at least one second: a flow that went quiet keeps the rate it
    /// moved at, instead of one that sinks the longer it is read after.
    fn active(flow: &Flow) -> Rate {
        let span = Duration::from_nanos(flow.last_seen_ns.saturating_sub(flow.first_seen_ns))
            .max(Duration::from_secs(1));
        Rate::over(flow.bytes, flow.packets, span.as_secs_f64())
    }
}

type Counts = HashMap<(Rc<str>, FlowKey), (u64, u64)>;

/// The counts of every matching flow at the previous refresh.
struct Previous {
    at: Anchor,
    counts: Counts,
}

impl Previous {
    fn rate(&self, row: &Row, now: &Anchor) -> Rate {
        let flow = &row.flow;
        let elapsed_ns = now.monotonic_ns.saturating_sub(self.at.monotonic_ns);
        if elapsed_ns == 0 {
            return Rate::active(flow);
        }
        let seconds = elapsed_ns as f64 / 1e9;
        let before = self.counts.get(&(row.interface.clone(), flow.key()));
        match before {
            Some(&(packets, bytes)) if flow.packets >= packets && flow.bytes >= bytes => {
                Rate::over(flow.bytes - bytes, flow.packets - packets, seconds)
            }
            // New since then, or evicted and made anew: all of it is recent.
            _ if flow.first_seen_ns >= self.at.monotonic_ns => {
                Rate::over(flow.bytes, flow.packets, seconds)
            }
            // Matched no filter before (--min-bytes/--min-packets crossed).
            _ => Rate::active(flow),
        }
    }
}

/// The flows of one read, selected, with their rates.
struct Snapshot {
    rows: Vec<(Row, Rate)>,
    interfaces: Vec<String>,
    total: usize,
    matched: usize,
    at: Anchor,
    /// Time since the previous refresh, when rates are over it.
    window: Option<Duration>,
    /// The counts of every matched flow, kept only for --follow.
    counts: Option<Counts>,
}

/// How a read is rated, and whether it is followed by another.
#[derive(Clone, Copy)]
enum Refresh<'a> {
    /// A single read: rates over each flow's active time.
    Once,
    /// The first read of --follow: rates over each flow's active time, counts kept.
    First,
    /// A later read of --follow: rates since the previous one, counts kept.
    After(&'a Previous),
}

/// Reads every table, filters, keeps the top N and rates them.
fn take(
    root: &StateRoot,
    interface: Option<&str>,
    query: &FlowQuery,
    source: FlowSource<'_>,
    refresh: Refresh<'_>,
) -> Result<Snapshot> {
    let mut gathered = Gathered::new(query, refresh);
    let mut interfaces = Vec::new();
    {
        let _lock = root.lock_shared()?;
        for dir in tables(root, interface)? {
            let name: Rc<str> = Rc::from(dir.interface.as_str());
            if source(&dir, &mut |flow| gathered.add(&name, flow))? {
                interfaces.push(dir.interface);
            } else if interface.is_some() {
                return Err(not_counting(&dir.interface).into());
            } else {
                log::warn!("{}", not_counting(&dir.interface));
            }
        }
    }
    let at = Anchor::now();
    Ok(select(gathered, interfaces, query, at, refresh))
}

fn not_counting(interface: &str) -> Failure {
    Failure::new(format!(
        "{interface}'s flow table is not counting: the kernel does not run tc_classifier there, an attach or detach was interrupted"
    ))
    .hint(format!(
        "meshbpf health names what is left; meshbpf health --fix or meshbpf attach {interface} settles it"
    ))
}

/// The matching flows of one read, as they stream in.
struct Gathered<'q> {
    query: &'q FlowQuery,
    rows: Vec<Row>,
    /// Flows read.
    total: usize,
    /// Flows that passed the filters.
    matched: usize,
    /// A single read keeps only what can still reach the top N: a million
    /// flows then never sit in memory at once. --follow keeps every match,
    /// for the next refresh's rates.
    keep: Option<usize>,
}

/// Matching rows a single read with --top gathers before cutting them back
/// to the top N: rarely enough that cutting costs little per flow.
const PRUNE_AT: usize = 8192;

impl<'q> Gathered<'q> {
    fn new(query: &'q FlowQuery, refresh: Refresh<'_>) -> Self {
        let keep = match (refresh, query.top) {
            (Refresh::Once, Some(top)) => Some(top.max(PRUNE_AT / 2)),
            _ => None,
        };
        Gathered {
            query,
            rows: Vec::new(),
            total: 0,
            matched: 0,
            keep,
        }
    }

    fn add(&mut self, interface: &Rc<str>, flow: Flow) {
        self.total += 1;
        if !self.query.matches(&flow) {
            return;
        }
        self.matched += 1;
        self.rows.push(Row {
            interface: interface.clone(),
            flow,
        });
        if self.keep.is_some_and(|keep| self.rows.len() >= 2 * keep) {
            self.query.order(&mut self.rows);
        }
    }
}

/// The pure part of [`take`]: orders and rates what a read gathered.
fn select(
    gathered: Gathered<'_>,
    interfaces: Vec<String>,
    query: &FlowQuery,
    at: Anchor,
    refresh: Refresh<'_>,
) -> Snapshot {
    let Gathered {
        mut rows,
        total,
        matched,
        ..
    } = gathered;
    let previous = match refresh {
        Refresh::After(previous) => Some(previous),
        Refresh::Once | Refresh::First => None,
    };
    // Every matched flow, not only the shown ones: any may rise into the top.
    let counts = (!matches!(refresh, Refresh::Once)).then(|| {
        rows.iter()
            .map(|r| {
                (
                    (r.interface.clone(), r.flow.key()),
                    (r.flow.packets, r.flow.bytes),
                )
            })
            .collect()
    });
    query.order(&mut rows);
    let rows = rows
        .into_iter()
        .map(|row| {
            let rate = match previous {
                Some(p) => p.rate(&row, &at),
                None => Rate::active(&row.flow),
            };
            (row, rate)
        })
        .collect();
    Snapshot {
        rows,
        interfaces,
        total,
        matched,
        at,
        window: previous
            .map(|p| Duration::from_nanos(at.monotonic_ns.saturating_sub(p.at.monotonic_ns))),
        counts,
    }
}

impl Snapshot {
    fn report(&self, root: &StateRoot, interface: Option<&str>, sort: FlowSort) -> FlowsReport<'_> {
        FlowsReport {
            snapshot: self,
            root: root.path().display().to_string(),
            show_interface: interface.is_none(),
            sort,
            follow: false,
        }
    }

    fn previous(&mut self) -> Previous {
        Previous {
            at: self.at,
            counts: self.counts.take().unwrap_or_default(),
        }
    }
}

/// One flow in JSON.
#[derive(Debug, Serialize)]
pub struct FlowRecord<'a> {
    pub interface: &'a str,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The port, or for ICMP/ICMPv6 the message type (as in the kernel).
    pub sport: u16,
    /// The port, or for ICMP/ICMPv6 the message code (as in the kernel).
    pub dport: u16,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, else the number as a string.
    pub protocol: String,
    pub protocol_number: u8,
    /// ICMP/ICMPv6 flows only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u16>,
    /// `ingress` or `egress`.
    pub direction: &'static str,
    pub packets: u64,
    pub bytes: u64,
    pub first_seen: String,
    pub last_seen: String,
    /// Lower-case names of every flag seen (`["syn", "ack", "fin"]`);
    /// empty for flows that are not TCP.
    pub tcp_flags: Vec<&'static str>,
    /// `http`, `tls`, `http2`, `dns`, `ssh` or `unknown`.
    pub l7: &'static str,
    pub bytes_per_second: f64,
    pub packets_per_second: f64,
}

fn rounded(rate: f64) -> f64 {
    (rate * 1000.0).round() / 1000.0
}

fn record<'a>(row: &'a Row, rate: &Rate, at: &Anchor) -> FlowRecord<'a> {
    let f = &row.flow;
    let icmp = f.is_icmp();
    FlowRecord {
        interface: &row.interface,
        src: f.src,
        dst: f.dst,
        sport: f.sport,
        dport: f.dport,
        protocol: proto::protocol_name(f.protocol),
        protocol_number: f.protocol,
        icmp_type: icmp.then_some(f.sport),
        icmp_code: icmp.then_some(f.dport),
        direction: f.direction.as_str(),
        packets: f.packets,
        bytes: f.bytes,
        first_seen: clock::rfc3339_millis(at.wall(f.first_seen_ns)),
        last_seen: clock::rfc3339_millis(at.wall(f.last_seen_ns)),
        tcp_flags: proto::tcp_flag_names(f.tcp_flags),
        l7: f.l7.as_str(),
        bytes_per_second: rounded(rate.bytes),
        packets_per_second: rounded(rate.packets),
    }
}

/// The marker line before each refresh's flows in `--follow -j`.
#[derive(Debug, Serialize)]
struct RefreshMarker {
    refresh: String,
    flows: usize,
    matched: usize,
    total: usize,
}

/// A line of `--follow -j`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Line<'a> {
    Refresh(RefreshMarker),
    Flow(FlowRecord<'a>),
}

struct FlowsReport<'a> {
    snapshot: &'a Snapshot,
    root: String,
    /// Whether rows come from more than the one interface asked for.
    show_interface: bool,
    sort: FlowSort,
    follow: bool,
}

/// An array of [`FlowRecord`].
impl Serialize for FlowsReport<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let s = self.snapshot;
        serializer.collect_seq(s.rows.iter().map(|(row, rate)| record(row, rate, &s.at)))
    }
}

impl FlowsReport<'_> {
    fn title(&self) -> String {
        let s = self.snapshot;
        let place = match s.interfaces.as_slice() {
            [one] => format!("on {one}"),
            many => format!("on {} interfaces", many.len()),
        };
        let shown = s.rows.len();
        let (total, matched) = (
            output::count(s.total as u64),
            output::count(s.matched as u64),
        );
        let mut title = if shown == s.total {
            format!("{total} flows {place}")
        } else if shown == s.matched {
            format!("{matched} of {total} flows {place} match")
        } else if s.matched == s.total {
            format!("top {shown} of {total} flows {place}")
        } else {
            format!("top {shown} of {matched} matching flows ({total} in all) {place}")
        };
        title.push_str(match self.sort {
            FlowSort::Bytes => ", by bytes",
            FlowSort::Packets => ", by packets",
            FlowSort::First => ", newest first",
            FlowSort::Last => ", most recently active first",
        });
        match s.window {
            Some(window) => title.push_str(&format!(
                " · rates over the last {:.1}s",
                window.as_secs_f64()
            )),
            None => title.push_str(" · rates over each flow's active time"),
        }
        if self.follow {
            title.push_str(&format!(" · {}", clock::rfc3339(s.at.wall)));
        }
        title
    }
}

impl Report for FlowsReport<'_> {
    fn render(&self) -> String {
        let s = self.snapshot;
        if s.interfaces.is_empty() {
            return format!(
                "no flow tables under {}: attach with `meshbpf attach IFACE` to record flows",
                self.root
            );
        }
        let title = self.title();
        if s.rows.is_empty() {
            return title;
        }
        let mut headers = Vec::new();
        if self.show_interface {
            headers.push("interface");
        }
        headers.extend([
            "dir",
            "proto",
            "source",
            "destination",
            "l7",
            "flags",
            "packets",
            "bytes",
            "rate",
            "age",
            "idle",
        ]);
        let mut table = output::table(&headers);
        for (row, rate) in &s.rows {
            let f = &row.flow;
            let mut cells = Vec::with_capacity(headers.len());
            if self.show_interface {
                cells.push(row.interface.to_string().into());
            }
            let flags = proto::tcp_flags_text(f.tcp_flags);
            cells.extend([
                match f.direction {
                    proto::Direction::Ingress => "in",
                    proto::Direction::Egress => "out",
                }
                .into(),
                f.protocol_text().into(),
                f.src_endpoint().into(),
                f.dst_endpoint().into(),
                match f.l7 {
                    L7::Unknown => "-".into(),
                    l7 => l7.as_str().into(),
                },
                if flags.is_empty() {
                    "-".into()
                } else {
                    flags.into()
                },
                output::right(output::count(f.packets)),
                output::right(output::bytes(f.bytes)),
                output::right(format!(
                    "{} {}",
                    output::bytes_per_second(rate.bytes),
                    output::per_second(rate.packets, "pkt")
                )),
                output::right(output::duration(s.at.since(f.first_seen_ns))),
                output::right(output::duration(s.at.since(f.last_seen_ns))),
            ]);
            table.add_row(cells);
        }
        format!("{title}\n{table}")
    }
}

enum Ended {
    /// Ctrl-C.
    Interrupted,
    /// Stdout was closed by its reader.
    Closed,
}

fn follow(
    root: &StateRoot,
    out: &Output,
    args: &FlowsArgs,
    query: &FlowQuery,
    interval: Duration,
    source: FlowSource<'_>,
) -> Result<Ended> {
    let mut query = query.clone();
    if query.top.is_none() && !out.is_json() {
        // A redrawn table longer than the screen shows only its end.
        query.top = term::rows().map(|rows| usize::from(rows).saturating_sub(6).max(5));
    }
    let mut previous: Option<Previous> = None;
    loop {
        let started = Instant::now();
        if interrupt::happened() {
            return Ok(Ended::Interrupted);
        }
        let mut snapshot = take(
            root,
            args.interface.as_deref(),
            &query,
            source,
            previous.as_ref().map_or(Refresh::First, Refresh::After),
        )?;
        let delivery = emit_refresh(out, &snapshot, root, args.interface.as_deref(), query.sort)?;
        if delivery == Delivery::Closed {
            return Ok(Ended::Closed);
        }
        previous = Some(snapshot.previous());
        if interrupt::sleep_until(started + interval) {
            return Ok(Ended::Interrupted);
        }
    }
}

fn emit_refresh(
    out: &Output,
    snapshot: &Snapshot,
    root: &StateRoot,
    interface: Option<&str>,
    sort: FlowSort,
) -> Result<Delivery> {
    if out.is_json() {
        let marker = Line::Refresh(RefreshMarker {
            refresh: clock::rfc3339_millis(snapshot.at.wall),
            flows: snapshot.rows.len(),
            matched: snapshot.matched,
            total: snapshot.total,
        });
        let records = snapshot
            .rows
            .iter()
            .map(|(row, rate)| Line::Flow(record(row, rate, &snapshot.at)));
        Ok(out.lines(std::iter::once(marker).chain(records))?)
    } else {
        let mut report = snapshot.report(root, interface, sort);
        report.follow = true;
        Ok(out.redraw(&report)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::programs::tc_classifier::flows::QueryArgs;
    use crate::proto::{Direction, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};
    use std::path::Path;
    use std::time::SystemTime;

    const SEC: u64 = 1_000_000_000;

    fn anchor(monotonic_s: u64) -> Anchor {
        Anchor {
            monotonic_ns: monotonic_s * SEC,
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + monotonic_s),
        }
    }

    fn flow(src: &str, sport: u16, dst: &str, dport: u16, protocol: u8) -> Flow {
        Flow {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport,
            dport,
            protocol,
            direction: Direction::Ingress,
            packets: 10,
            bytes: 10_000,
            first_seen_ns: 90 * SEC,
            last_seen_ns: 98 * SEC,
            tcp_flags: 0,
            l7: L7::Unknown,
        }
    }

    fn web() -> Flow {
        Flow {
            tcp_flags: 0x13,
            l7: L7::Tls,
            bytes: 1_536_000,
            packets: 1200,
            ..flow("2001:db8::5", 40000, "2001:db8::1", 443, IPPROTO_TCP)
        }
    }

    fn ping() -> Flow {
        Flow {
            direction: Direction::Egress,
            ..flow("10.0.0.1", 8, "10.0.0.2", 0, IPPROTO_ICMP)
        }
    }

    /// What a read of these interfaces' flows gathers.
    fn gather<'q>(
        query: &'q FlowQuery,
        refresh: Refresh<'_>,
        tables: &[(&str, Vec<Flow>)],
    ) -> Gathered<'q> {
        let mut gathered = Gathered::new(query, refresh);
        for (interface, flows) in tables {
            let name: Rc<str> = Rc::from(*interface);
            for flow in flows {
                gathered.add(&name, flow.clone());
            }
        }
        gathered
    }

    fn snapshot(flows: Vec<Flow>, query: &FlowQuery) -> Snapshot {
        select(
            gather(query, Refresh::Once, &[("eth0", flows)]),
            vec!["eth0".into()],
            query,
            anchor(100),
            Refresh::Once,
        )
    }

    fn report(s: &Snapshot, show_interface: bool) -> FlowsReport<'_> {
        FlowsReport {
            snapshot: s,
            root: "/sys/fs/bpf/meshbpf".into(),
            show_interface,
            sort: FlowSort::Bytes,
            follow: false,
        }
    }

    #[test]
    fn json_is_an_array_of_flow_objects() {
        let s = snapshot(vec![ping(), web()], &FlowQuery::default());
        let v = serde_json::to_value(report(&s, false)).unwrap();
        let flows = v.as_array().unwrap();
        assert_eq!(flows.len(), 2);
        let w = &flows[0];
        assert_eq!(w["interface"], "eth0");
        assert_eq!(w["src"], "2001:db8::5");
        assert_eq!(w["dst"], "2001:db8::1");
        assert_eq!(w["sport"], 40000);
        assert_eq!(w["dport"], 443);
        assert_eq!(w["protocol"], "tcp");
        assert_eq!(w["protocol_number"], 6);
        assert_eq!(w["direction"], "ingress");
        assert_eq!(w["packets"], 1200);
        assert_eq!(w["bytes"], 1_536_000);
        // Monotonic 90 s and 98 s, read at monotonic 100 s = wall 1800000100 s.
        assert_eq!(w["first_seen"], "2027-01-15T08:01:30.000Z");
        assert_eq!(w["last_seen"], "2027-01-15T08:01:38.000Z");
        assert_eq!(w["tcp_flags"], serde_json::json!(["syn", "ack", "fin"]));
        assert_eq!(w["l7"], "tls");
        // Over its 8 s from first to last packet (it is read 2 s later).
        assert_eq!(w["bytes_per_second"], 192_000.0);
        assert_eq!(w["packets_per_second"], 150.0);
        assert!(w.get("icmp_type").is_none());
        // Every key, in this order on the wire.
        let text = serde_json::to_string(&report(&s, false)).unwrap();
        let first = &text[..text.find('}').unwrap()];
        let keys: Vec<&str> = first
            .split('"')
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|pair| pair[1].starts_with(':'))
            .map(|pair| pair[0])
            .collect();
        assert_eq!(w.as_object().unwrap().len(), keys.len());
        assert_eq!(
            keys,
            vec![
                "interface",
                "src",
                "dst",
                "sport",
                "dport",
                "protocol",
                "protocol_number",
                "direction",
                "packets",
                "bytes",
                "first_seen",
                "last_seen",
                "tcp_flags",
                "l7",
                "bytes_per_second",
                "packets_per_second"
            ]
        );
        let p = &flows[1];
        assert_eq!(p["protocol"], "icmp");
        assert_eq!(p["direction"], "egress");
        assert_eq!(p["icmp_type"], 8);
        assert_eq!(p["icmp_code"], 0);
        assert_eq!(p["tcp_flags"], serde_json::json!([]));
        assert_eq!(p["l7"], "unknown");
    }

    #[test]
    fn the_json_of_nothing_is_an_empty_array() {
        let s = select(
            gather(&FlowQuery::default(), Refresh::Once, &[]),
            vec![],
            &FlowQuery::default(),
            anchor(1),
            Refresh::Once,
        );
        assert_eq!(serde_json::to_string(&report(&s, true)).unwrap(), "[]");
        assert_eq!(
            report(&s, true).render(),
            "no flow tables under /sys/fs/bpf/meshbpf: attach with `meshbpf attach IFACE` to record flows"
        );
    }

    #[test]
    fn the_table_shows_endpoints_protocols_rates_and_ages() {
        let s = snapshot(vec![ping(), web()], &FlowQuery::default());
        let text = report(&s, false).render();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "2 flows on eth0, by bytes · rates over each flow's active time"
        );
        assert!(!text.contains("interface"), "{text}");
        let row = |needle: &str| text.lines().find(|l| l.contains(needle)).unwrap();
        let w = row("[2001:db8::5]:40000");
        for cell in [
            " in ",
            "tcp",
            "[2001:db8::1]:443",
            "tls",
            "SYN,ACK,FIN",
            "1,200",
            "1.5 MiB",
            "187.5 KiB/s 150 pkt/s",
            "10s",
            "2s",
        ] {
            assert!(w.contains(cell), "{cell} missing in {w}\n{text}");
        }
        let p = row("10.0.0.1");
        for cell in [" out ", "icmp echo-request", "10.0.0.2 ", "1.2 pkt/s"] {
            assert!(p.contains(cell), "{cell} missing in {p}\n{text}");
        }
        assert!(!p.contains("10.0.0.1:"), "{p}");
    }

    #[test]
    fn a_single_read_with_top_holds_few_rows_and_finds_the_same_top() {
        let flows: Vec<Flow> = (0..20_000u64)
            .map(|i| Flow {
                sport: i as u16,
                // Scattered sizes, so the largest arrive late and early.
                bytes: i * 7919 % 20_000,
                ..web()
            })
            .collect();
        let query = FlowQuery {
            top: Some(3),
            min_bytes: 10,
            ..FlowQuery::default()
        };
        let mut gathered = Gathered::new(&query, Refresh::Once);
        let name: Rc<str> = Rc::from("eth0");
        let mut most = 0;
        for flow in &flows {
            gathered.add(&name, flow.clone());
            most = most.max(gathered.rows.len());
        }
        assert!(most <= PRUNE_AT, "held {most} rows");
        assert_eq!((gathered.total, gathered.matched), (20_000, 19_990));
        let s = select(
            gathered,
            vec!["eth0".into()],
            &query,
            anchor(100),
            Refresh::Once,
        );
        let bytes: Vec<u64> = s.rows.iter().map(|(row, _)| row.flow.bytes).collect();
        assert_eq!(bytes, [19_999, 19_998, 19_997]);
        assert_eq!((s.total, s.matched), (20_000, 19_990));

        // --follow keeps every match, for the next refresh's rates.
        let follow = gather(&query, Refresh::First, &[("eth0", flows)]);
        assert_eq!(follow.rows.len(), 19_990);
    }

    #[test]
    fn the_table_names_interfaces_when_it_shows_several() {
        let query = FlowQuery {
            top: Some(1),
            ..FlowQuery::default()
        };
        let s = select(
            gather(
                &query,
                Refresh::Once,
                &[("eth0", vec![web()]), ("eth1", vec![ping()])],
            ),
            vec!["eth0".into(), "eth1".into()],
            &query,
            anchor(100),
            Refresh::Once,
        );
        let text = report(&s, true).render();
        assert!(
            text.starts_with("top 1 of 2 flows on 2 interfaces, by bytes"),
            "{text}"
        );
        assert!(text.contains("interface"), "{text}");
        assert!(text.contains("eth0"), "{text}");
        assert!(!text.contains("eth1"), "{text}");
    }

    #[test]
    fn titles_say_what_was_kept_out_of_what() {
        let many: Vec<Flow> = (1..=5u16)
            .map(|n| Flow {
                bytes: u64::from(n),
                ..flow("10.0.0.1", n, "10.0.0.2", 53, IPPROTO_UDP)
            })
            .collect();
        let title = |query: FlowQuery| {
            let s = snapshot(many.clone(), &query);
            FlowsReport {
                sort: query.sort,
                ..report(&s, false)
            }
            .title()
        };
        assert!(title(FlowQuery {
            min_bytes: 3,
            ..FlowQuery::default()
        })
        .starts_with("3 of 5 flows on eth0 match, by bytes"));
        assert!(title(FlowQuery {
            min_bytes: 3,
            top: Some(1),
            ..FlowQuery::default()
        })
        .starts_with("top 1 of 3 matching flows (5 in all) on eth0"));
        assert!(title(FlowQuery {
            sort: FlowSort::Last,
            ..FlowQuery::default()
        })
        .starts_with("5 flows on eth0, most recently active first"));
        let none = snapshot(vec![], &FlowQuery::default());
        assert_eq!(
            report(&none, false).render(),
            "0 flows on eth0, by bytes · rates over each flow's active time"
        );
    }

    #[test]
    fn active_rates_use_at_least_a_second() {
        let young = Flow {
            first_seen_ns: 100 * SEC - 1000,
            last_seen_ns: 100 * SEC - 500,
            bytes: 500,
            packets: 1,
            ..ping()
        };
        let r = Rate::active(&young);
        assert_eq!((r.bytes, r.packets), (500.0, 1.0));
    }

    #[test]
    fn a_quiet_flow_keeps_the_rate_it_moved_at() {
        // 5,346,351 bytes in 2 s, read long after: the issue's example.
        let done = Flow {
            first_seen_ns: 10 * SEC,
            last_seen_ns: 12 * SEC,
            bytes: 5_346_351,
            packets: 4000,
            ..ping()
        };
        let r = Rate::active(&done);
        assert_eq!((r.bytes, r.packets), (2_673_175.5, 2000.0));
    }

    #[test]
    fn follow_rates_are_since_the_previous_refresh() {
        let query = FlowQuery::default();
        let first = vec![
            web(),
            Flow {
                bytes: 5000,
                ..ping()
            },
        ];
        let mut s1 = select(
            gather(&query, Refresh::First, &[("eth0", first)]),
            vec!["eth0".into()],
            &query,
            anchor(100),
            Refresh::First,
        );
        assert_eq!(s1.window, None);
        // First refresh: over each flow's active time.
        assert_eq!(s1.rows[0].1.bytes, 192_000.0);
        let previous = s1.previous();
        assert_eq!(previous.counts.len(), 2);

        let grown = Flow {
            bytes: web().bytes + 4000,
            packets: web().packets + 4,
            ..web()
        };
        // The ping was evicted and made anew at 101 s with fewer bytes.
        let remade = Flow {
            bytes: 600,
            packets: 6,
            first_seen_ns: 101 * SEC,
            ..ping()
        };
        let new = Flow {
            bytes: 200,
            packets: 2,
            first_seen_ns: 101 * SEC,
            ..flow("10.9.9.9", 1, "10.0.0.2", 53, IPPROTO_UDP)
        };
        let s2 = select(
            gather(
                &query,
                Refresh::After(&previous),
                &[("eth0", vec![grown, remade, new])],
            ),
            vec!["eth0".into()],
            &query,
            anchor(102),
            Refresh::After(&previous),
        );
        assert_eq!(s2.window, Some(Duration::from_secs(2)));
        let rates: Vec<(f64, f64)> = s2.rows.iter().map(|(_, r)| (r.bytes, r.packets)).collect();
        assert_eq!(rates, vec![(2000.0, 2.0), (300.0, 3.0), (100.0, 1.0)]);
        let text = report(&s2, false).render();
        assert!(text.contains("rates over the last 2.0s"), "{text}");
    }

    #[test]
    fn refresh_markers_and_records_serialize_as_one_line_each() {
        let s = snapshot(vec![web()], &FlowQuery::default());
        let marker = RefreshMarker {
            refresh: clock::rfc3339_millis(s.at.wall),
            flows: 1,
            matched: 1,
            total: 1,
        };
        assert_eq!(
            serde_json::to_string(&Line::Refresh(marker)).unwrap(),
            r#"{"refresh":"2027-01-15T08:01:40.000Z","flows":1,"matched":1,"total":1}"#
        );
        let (row, rate) = &s.rows[0];
        let line = serde_json::to_string(&Line::Flow(record(row, rate, &s.at))).unwrap();
        assert!(!line.contains('\n'));
        assert!(
            line.starts_with(r#"{"interface":"eth0","src":"2001:db8::5""#),
            "{line}"
        );
    }

    fn fake_root(interfaces: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (iface, program) in interfaces {
            let path = dir.path().join("net").join(iface).join(program);
            std::fs::create_dir_all(&path).unwrap();
            std::fs::write(path.join("link"), b"").unwrap();
        }
        dir
    }

    fn source(dir: &AttachmentDir, sink: &mut dyn FnMut(Flow)) -> Result<bool> {
        let flows = match dir.interface.as_str() {
            "eth0" => vec![web()],
            "eth1" => vec![ping(), ping()],
            other => anyhow::bail!("read {other}"),
        };
        flows.into_iter().for_each(sink);
        Ok(true)
    }

    #[test]
    fn every_interface_with_a_flow_table_is_read() {
        let root_dir = fake_root(&[
            ("eth0", "tc_classifier"),
            ("eth1", "tc_classifier"),
            ("eth2", "xdp_counter"),
        ]);
        let root = StateRoot::new(root_dir.path().to_path_buf());
        let s = take(&root, None, &FlowQuery::default(), &source, Refresh::Once).unwrap();
        assert_eq!(s.interfaces, vec!["eth0", "eth1"]);
        assert_eq!(s.total, 3);
        let s = take(
            &root,
            Some("eth1"),
            &FlowQuery::default(),
            &source,
            Refresh::Once,
        )
        .unwrap();
        assert_eq!(s.interfaces, vec!["eth1"]);
        assert_eq!(s.rows.len(), 2);
    }

    #[test]
    fn an_interface_without_a_flow_table_is_an_error_with_a_hint() {
        let root_dir = fake_root(&[("eth2", "xdp_counter")]);
        let root = StateRoot::new(root_dir.path().to_path_buf());
        let err = take(
            &root,
            Some("eth2"),
            &FlowQuery::default(),
            &source,
            Refresh::Once,
        )
        .err()
        .unwrap();
        let explained = crate::error::explain(&err);
        assert_eq!(
            explained.message,
            "eth2 has no flow table: tc_classifier is not attached to it"
        );
        assert!(explained.hint.unwrap().contains("meshbpf attach eth2"));
        let missing = StateRoot::new(Path::new("/nonexistent/meshbpf").to_path_buf());
        let s = take(
            &missing,
            None,
            &FlowQuery::default(),
            &source,
            Refresh::Once,
        )
        .unwrap();
        assert!(s.interfaces.is_empty() && s.rows.is_empty());
    }

    #[test]
    fn the_interval_must_be_a_sane_number_of_seconds() {
        let with = |seconds: f64| {
            let mut args = <FlowsArgsFixture>::default().0;
            args.interval = seconds;
            interval(&args)
        };
        assert_eq!(with(0.5).unwrap(), Duration::from_millis(500));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e9] {
            let err = with(bad).unwrap_err().to_string();
            assert!(err.starts_with("--interval: "), "{err}");
        }
    }

    struct FlowsArgsFixture(FlowsArgs);

    impl Default for FlowsArgsFixture {
        fn default() -> Self {
            FlowsArgsFixture(FlowsArgs {
                interface: None,
                query: QueryArgs {
                    src: None,
                    dst: None,
                    port: None,
                    sport: None,
                    dport: None,
                    proto: None,
                    l7: None,
                    min_packets: None,
                    min_bytes: None,
                    sort: FlowSort::Bytes,
                    top: None,
                },
                follow: false,
                interval: 1.0,
            })
        }
    }
}
