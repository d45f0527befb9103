//! `meshbpf latency`: per-syscall latency from the host-wide syscall_latency
//! attachment (`attach --latency`, `detach --latency` live here too), or a
//! kernel function's latency over a while (`--function`), funclatency-style.
//!
//! - Without --interval: one report of everything counted since attach.
//! - `--interval S`: what happened in each interval, until Ctrl-C (exit 130);
//!   with -j one JSON object per interval (JSON Lines).
//! - `--function F --duration S`: attach, wait, print, detach; Ctrl-C prints
//!   what was counted so far, detaches and exits 130.

use std::cell::Cell;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use serde::Serialize;

use crate::cli::{LatencyArgs, LatencyOptions, LatencyTargetArgs};
use crate::error::{Failure, Interrupted};
use crate::interrupt;
use crate::kernel::pins::{AttachmentDir, StateRoot};
use crate::kernel::{bpffs, caps, clock, syscalls};
use crate::output::{self, Delivery, Output, Report};
use crate::programs::syscall_latency::{
    self, histogram, Filters, Histogram, LatencyAttachment, Method, MethodChoice, PROGRAM,
};
use crate::state::{host, host::LatencyOutcome, host::LatencyRequest};

const DEFAULT_DURATION_S: f64 = 5.0;
/// Width of the histogram's bars, as bcc draws them.
const BAR_WIDTH: u64 = 40;

/// One syscall's (or the function's) latency.
#[derive(Debug, Serialize)]
struct Row {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    nr: Option<u32>,
    count: u64,
    total_ns: u64,
    avg_ns: Option<u64>,
    p50_ns: Option<u64>,
    p90_ns: Option<u64>,
    p99_ns: Option<u64>,
    /// Upper bound of the highest bucket with a count.
    max_le_ns: Option<u64>,
    buckets: Vec<histogram::Bucket>,
}

impl Row {
    fn new(name: String, nr: Option<u32>, h: &Histogram) -> Row {
        Row {
            name,
            nr,
            count: h.count,
            total_ns: h.total_ns,
            avg_ns: h.avg_ns(),
            p50_ns: h.percentile(0.50),
            p90_ns: h.percentile(0.90),
            p99_ns: h.percentile(0.99),
            max_le_ns: h.max_le_ns(),
            buckets: h.span(),
        }
    }
}

#[derive(Debug, Serialize)]
struct LatencyReport {
    method: Method,
    /// Only with --interval: the end of the interval the counts are from.
    #[serde(skip_serializing_if = "Option::is_none")]
    interval_end: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function: Option<Row>,
    #[serde(skip_serializing_if = "Option::is_none")]
    syscalls: Option<Vec<Row>>,
    #[serde(skip)]
    hist: bool,
}

/// 1234 -> "1.2 µs": three significant digits at most.
fn latency(ns: Option<u64>) -> String {
    let Some(ns) = ns else {
        return "-".into();
    };
    if ns == u64::MAX {
        return "∞".into();
    }
    let (value, unit) = match ns {
        0..1_000 => return format!("{ns} ns"),
        1_000..1_000_000 => (ns as f64 / 1e3, "µs"),
        1_000_000..1_000_000_000 => (ns as f64 / 1e6, "ms"),
        _ => (ns as f64 / 1e9, "s"),
    };
    if value < 10.0 {
        format!("{value:.2} {unit}")
    } else if value < 100.0 {
        format!("{value:.1} {unit}")
    } else {
        format!("{value:.0} {unit}")
    }
}

/// A bcc-style log2 histogram: one line per bucket, with bars.
fn bars(row: &Row) -> String {
    let peak = row
        .buckets
        .iter()
        .map(|b| b.count)
        .max()
        .unwrap_or(0)
        .max(1);
    let mut lines = vec![format!("{:>24} : {:<10} distribution", "ns", "count")];
    for bucket in &row.buckets {
        let b = match bucket.le_ns {
            u64::MAX => histogram::BUCKETS - 1,
            le => (le + 1).trailing_zeros() as usize - 1,
        };
        let range = match bucket.le_ns {
            u64::MAX => format!("{} -> ...", histogram::lower_bound(b)),
            le => format!("{} -> {le}", histogram::lower_bound(b)),
        };
        let stars = (bucket.count * BAR_WIDTH).div_ceil(peak);
        lines.push(format!(
            "{range:>24} : {:<10} |{:<width$}|",
            bucket.count,
            "*".repeat(stars as usize),
            width = BAR_WIDTH as usize
        ));
    }
    lines.join("\n")
}

impl Report for LatencyReport {
    fn render(&self) -> String {
        let when = self
            .interval_end
            .as_ref()
            .map(|t| format!(" · interval ending {t}"))
            .unwrap_or_default();
        if let Some(row) = &self.function {
            return format!(
                "{} · {} · {} calls · avg {} · p50 {} · p90 {} · p99 {}\n{}",
                row.name,
                self.method.as_str(),
                output::count(row.count),
                latency(row.avg_ns),
                latency(row.p50_ns),
                latency(row.p90_ns),
                latency(row.p99_ns),
                bars(row)
            );
        }
        let rows = self.syscalls.as_deref().unwrap_or_default();
        let title = format!("syscall latency · {}{when}", self.method.as_str());
        if rows.is_empty() {
            return format!("{title}\nno syscalls counted");
        }
        let mut by_time: Vec<&Row> = rows.iter().collect();
        by_time.sort_by_key(|row| std::cmp::Reverse(row.total_ns));
        let mut table = output::table(&[
            "syscall", "count", "total", "avg", "p50", "p90", "p99", "max ≤",
        ]);
        for row in &by_time {
            table.add_row(vec![
                row.name.clone().into(),
                output::right(output::count(row.count)),
                output::right(latency(Some(row.total_ns))),
                output::right(latency(row.avg_ns)),
                output::right(latency(row.p50_ns)),
                output::right(latency(row.p90_ns)),
                output::right(latency(row.p99_ns)),
                output::right(latency(row.max_le_ns)),
            ]);
        }
        let mut text = format!("{title}\n{table}");
        if self.hist || rows.len() == 1 {
            for row in by_time {
                text.push_str(&format!("\n\n{}\n{}", row.name, bars(row)));
            }
        }
        text
    }
}

pub fn run(root: &StateRoot, out: &Output, args: &LatencyArgs) -> Result<()> {
    if let Some(function) = &args.function {
        return measure_function(out, args, function);
    }
    let only = selection(args)?;
    let interval = args.interval.map(interval).transpose()?;
    caps::require("latency", &[caps::BPF])?;
    let dir = root.host_attachment(PROGRAM);
    let method = {
        let _lock = root.lock_shared()?;
        if !dir.is_committed() {
            return Err(not_attached(root).into());
        }
        syscall_latency::inspect(&dir)?.method
    };
    let Some(interval) = interval else {
        let now = read_locked(root, &dir)?;
        out.emit(&report(method, &now, None, &only, args.hist))?;
        return Ok(());
    };
    interrupt::install()?;
    let mut previous = read_locked(root, &dir)?;
    let mut deadline = Instant::now();
    loop {
        deadline += interval;
        if interrupt::sleep_until(deadline) {
            return Err(Interrupted.into());
        }
        let now = read_locked(root, &dir)?;
        let mut report = report(method, &now, Some(&previous), &only, args.hist);
        report.interval_end = Some(clock::rfc3339_millis(SystemTime::now()));
        let delivery = if out.is_json() {
            out.lines([&report])?
        } else {
            out.redraw(&report)?
        };
        if delivery == Delivery::Closed {
            return Ok(());
        }
        previous = now;
    }
}

/// The histograms, read under the shared lock so a concurrent detach is
/// seen whole.
fn read_locked(root: &StateRoot, dir: &AttachmentDir) -> Result<Vec<(u32, Histogram)>> {
    let _lock = root.lock_shared()?;
    if !dir.is_committed() {
        return Err(not_attached(root).into());
    }
    syscall_latency::read(dir)
}

/// The syscalls to show: one (--syscall), some (--syscalls) or all (None).
fn selection(args: &LatencyArgs) -> Result<Option<Vec<u32>>, Failure> {
    match (&args.syscall, &args.options.syscalls) {
        (Some(name), _) => Ok(Some(vec![syscalls::resolve(name)?])),
        (None, Some(list)) => syscalls::resolve_list(list).map(Some),
        (None, None) => Ok(None),
    }
}

fn interval(seconds: f64) -> Result<Duration, Failure> {
    if !(0.01..=86_400.0).contains(&seconds) {
        return Err(Failure::new(format!(
            "--interval: {seconds} is not a number of seconds between 0.01 and 86400"
        ))
        .hint("write seconds between reports, such as 1 or 0.5"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn not_attached(root: &StateRoot) -> Failure {
    Failure::new(format!(
        "syscall latency is not being measured: no syscall_latency attachment under {}",
        root.path().display()
    ))
    .hint("start it with `meshbpf attach --latency` (filters: --pid, --comm, --cgroup, --syscalls)")
}

fn report(
    method: Method,
    now: &[(u32, Histogram)],
    earlier: Option<&[(u32, Histogram)]>,
    only: &Option<Vec<u32>>,
    hist: bool,
) -> LatencyReport {
    let rows = now
        .iter()
        .filter(|(nr, _)| only.as_ref().is_none_or(|o| o.contains(nr)))
        .filter_map(|(nr, h)| {
            let before = earlier.and_then(|e| e.iter().find(|(n, _)| n == nr));
            let h = before.map_or_else(|| h.clone(), |(_, b)| h.since(b));
            (h.count > 0).then(|| Row::new(syscalls::display_name(*nr), Some(*nr), &h))
        })
        .collect();
    LatencyReport {
        method,
        interval_end: None,
        function: None,
        syscalls: Some(rows),
        hist,
    }
}

/// The filters of `attach --latency` or `latency --function`.
fn filters(options: &LatencyOptions) -> Result<Filters, Failure> {
    Ok(Filters {
        pid: options.pid,
        comm: options.comm.clone(),
        cgroup: options.cgroup.clone(),
        syscalls: options
            .syscalls
            .as_deref()
            .map(syscalls::resolve_list)
            .transpose()?
            .unwrap_or_default(),
    })
}

fn measure_function(out: &Output, args: &LatencyArgs, function: &str) -> Result<()> {
    let methods = MethodChoice::for_function(args.options.method)?;
    let seconds = args.duration.unwrap_or(DEFAULT_DURATION_S);
    if !(0.01..=86_400.0).contains(&seconds) {
        return Err(Failure::new(format!(
            "--duration: {seconds} is not a number of seconds between 0.01 and 86400"
        ))
        .hint("write how long to measure, such as 5 or 0.5")
        .into());
    }
    let prepared = syscall_latency::prepare(&filters(&args.options)?)?;
    caps::require("latency --function", &[caps::BPF])?;
    interrupt::install()?;
    let interrupted = Cell::new(false);
    let measured = syscall_latency::measure_function(
        function,
        &methods,
        &prepared,
        args.btf.as_deref(),
        || {
            interrupted.set(interrupt::sleep_until(
                Instant::now() + Duration::from_secs_f64(seconds),
            ));
            Ok(())
        },
    )?;
    out.emit(&LatencyReport {
        method: measured.method,
        interval_end: None,
        function: Some(Row::new(function.to_string(), None, &measured.histogram)),
        syscalls: None,
        hist: true,
    })?;
    if interrupted.get() {
        return Err(Interrupted.into());
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct AttachReport {
    status: LatencyOutcome,
    #[serde(flatten)]
    attachment: LatencyAttachment,
}

impl Report for AttachReport {
    fn render(&self) -> String {
        let a = &self.attachment;
        let what = match self.status {
            LatencyOutcome::Attached => "attached",
            LatencyOutcome::AlreadyAttached => "already attached (nothing changed):",
        };
        format!(
            "{what} {} host-wide with {} (prog ids {}/{}, link ids {}/{}){}; pinned at {}\nread it with `meshbpf latency`",
            a.program,
            a.method.as_str(),
            a.prog_ids[0],
            a.prog_ids[1],
            a.link_ids[0],
            a.link_ids[1],
            syscall_latency::describe_filters(a),
            a.pin_path
        )
    }
}

/// `attach --latency`: load, hook and pin syscall_latency host-wide.
pub fn attach(root: &StateRoot, out: &Output, args: &LatencyTargetArgs) -> Result<()> {
    let options = &args.options;
    let methods = MethodChoice::for_syscalls(options.method)?;
    let prepared = syscall_latency::prepare(&filters(options)?)?;
    caps::require("attach --latency", &[caps::BPF, caps::SYS_ADMIN])?;
    if let Some(mount_point) = bpffs::ensure_mounted(root.path())? {
        out.note(&format!("mounted bpffs at {}", mount_point.display()));
    }
    let (status, attachment) = host::attach_latency(
        root,
        &LatencyRequest {
            methods: &methods,
            prepared: &prepared,
            explicit: has_options(options),
            btf: args.btf.as_deref(),
        },
    )?;
    out.emit(&AttachReport { status, attachment })?;
    Ok(())
}

fn has_options(o: &LatencyOptions) -> bool {
    o.pid.is_some()
        || o.comm.is_some()
        || o.cgroup.is_some()
        || o.syscalls.is_some()
        || o.method.is_some()
}

#[derive(Debug, Serialize)]
struct DetachReport {
    program: &'static str,
    /// False when nothing was attached.
    detached: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    prog_ids: Option<[u32; 2]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    link_ids: Option<[u32; 2]>,
}

impl Report for DetachReport {
    fn render(&self) -> String {
        match (self.detached, self.link_ids) {
            (false, _) => format!("{} is not attached; nothing to do", self.program),
            (true, Some(links)) => format!(
                "detached {} (link ids {}/{}) and removed its pins",
                self.program, links[0], links[1]
            ),
            (true, None) => format!("removed leftover pins of {}", self.program),
        }
    }
}

/// `detach --latency`: unhook syscall_latency and remove its pins.
pub fn detach(root: &StateRoot, out: &Output) -> Result<()> {
    caps::require("detach --latency", &[caps::BPF])?;
    let removed = host::detach(root, PROGRAM, syscall_latency::inspect)?;
    let before = removed.before.as_ref();
    out.emit(&DetachReport {
        program: PROGRAM,
        detached: removed.existed,
        prog_ids: before.map(|a| a.prog_ids),
        link_ids: before.map(|a| a.link_ids),
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(buckets: &[(usize, u64)]) -> Histogram {
        let mut h = Histogram::default();
        for &(b, n) in buckets {
            h.buckets[b] = n;
            h.count += n;
            h.total_ns += n * histogram::lower_bound(b);
        }
        h
    }

    #[test]
    fn json_has_the_documented_shape() {
        let now = vec![(0, hist(&[(10, 3)])), (230, hist(&[(20, 20)]))];
        let r = report(Method::TpBtf, &now, None, &None, false);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["method"], "tp_btf");
        let sleep = &v["syscalls"][1];
        assert_eq!(sleep["nr"], 230);
        assert_eq!(sleep["count"], 20);
        assert_eq!(sleep["total_ns"], 20 * 1_048_576);
        assert_eq!(sleep["buckets"][0]["le_ns"], 2_097_151);
        assert_eq!(sleep["buckets"][0]["count"], 20);
        assert_eq!(sleep["p50_ns"], 1_048_576 + 524_288);
        assert!(v.get("function").is_none() && v.get("interval_end").is_none());
    }

    #[test]
    fn intervals_show_deltas_and_selections_filter() {
        let earlier = vec![(0, hist(&[(10, 3)])), (1, hist(&[(4, 1)]))];
        let now = vec![(0, hist(&[(10, 5)])), (1, hist(&[(4, 1)]))];
        let r = report(Method::RawTp, &now, Some(&earlier), &None, false);
        let rows = r.syscalls.unwrap();
        assert_eq!(rows.len(), 1, "an unchanged syscall has no row");
        assert_eq!((rows[0].nr, rows[0].count), (Some(0), 2));
        let r = report(Method::RawTp, &now, None, &Some(vec![1]), false);
        assert_eq!(r.syscalls.unwrap()[0].nr, Some(1));
    }

    #[test]
    fn one_syscall_gets_bars() {
        let now = vec![(35, hist(&[(20, 20), (22, 5)]))];
        let text = report(Method::TpBtf, &now, None, &None, false).render();
        assert!(
            text.contains(
                "1048576 -> 2097151 : 20         |****************************************|"
            ),
            "{text}"
        );
        assert!(text.contains("2097152 -> 4194303 : 0          |"), "{text}");
        assert!(
            text.contains("4194304 -> 8388607 : 5          |**********"),
            "{text}"
        );
    }

    #[test]
    fn latencies_read_short() {
        assert_eq!(latency(None), "-");
        assert_eq!(latency(Some(999)), "999 ns");
        assert_eq!(latency(Some(1_500)), "1.50 µs");
        assert_eq!(latency(Some(2_097_151)), "2.10 ms");
        assert_eq!(latency(Some(12_345_678_901)), "12.3 s");
        assert_eq!(latency(Some(u64::MAX)), "∞");
    }
}
