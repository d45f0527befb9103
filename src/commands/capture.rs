//! `meshbpf capture IFACE -w FILE|-`: the packets xdp_mesh_filter or
//! xdp_counter decided, selected in the kernel, as pcapng. Ends after
//! --count packets, after --duration, on Ctrl-C or SIGTERM (exit 130), when
//! the reader of `-w -` goes away, or when the program is detached (a swap
//! to the other program goes on capturing); the selection is switched off
//! first, then what the ring buffer still holds is written. A summary goes
//! to stderr; with -j it is JSON, on stdout when the packets go to a file.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cli::CaptureArgs;
use crate::error::{Failure, Interrupted};
use crate::interrupt;
use crate::kernel::pins::{AttachmentDir, StateRoot};
use crate::kernel::{caps, netdev};
use crate::output::{self, Output, Report};
use crate::pcapng;
use crate::programs::capture::{Capture, Packet, Selection};
use crate::state::filter;

/// Packets taken from the ring buffer at a time, each batch flushed.
const BATCH: usize = 1024;
/// How long a wait for packets lasts before the end conditions are looked
/// at again.
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Ended {
    Count,
    Duration,
    Interrupted,
    /// The reader of stdout closed it.
    Closed,
    Detached,
}

#[derive(Debug, Serialize)]
struct Summary {
    interface: String,
    file: String,
    /// Written to the file.
    packets: u64,
    /// Selected by the kernel while the capture ran, beyond --count too.
    selected: u64,
    /// Selected, but the ring buffer was full.
    lost: u64,
    ended: Ended,
}

impl Report for Summary {
    fn render(&self) -> String {
        format!(
            "{}: {} packets written to {}; {} lost (ring buffer full); {} selected in the kernel",
            self.interface,
            output::count(self.packets),
            self.file,
            output::count(self.lost),
            output::count(self.selected),
        )
    }
}

pub fn run(root: &StateRoot, out: &Output, args: &CaptureArgs) -> Result<()> {
    netdev::validate_name(&args.interface)?;
    caps::require("capture", &[caps::BPF])?;
    let to_stdout = args.write.as_os_str() == "-";
    if to_stdout && io::stdout().is_terminal() {
        return Err(Failure::new(
            "-w -: stdout is a terminal, and pcapng is binary: it would garble the terminal",
        )
        .hint(format!(
            "pipe it to a reader (meshbpf capture {} -w - | tcpdump -nn -r -) or write a file (-w FILE.pcapng)",
            args.interface
        ))
        .into());
    }
    let dir = running_xdp(root, &args.interface)?.ok_or_else(|| {
        Failure::new(format!(
            "no meshbpf XDP program runs on {}: capture reads xdp_mesh_filter or xdp_counter",
            args.interface
        ))
        .hint(format!(
            "attach one first: meshbpf attach {} [--filter RULES.json]",
            args.interface
        ))
    })?;
    let selection = Selection {
        verdicts: args.verdict.clone().map(|v| v.0).unwrap_or_default(),
        rule: args.rule.clone(),
        src: args.src,
        dst: args.dst,
        port: args.port,
        protocol: args.proto,
        snaplen: args.snaplen,
    };
    interrupt::install_with_sigterm()?;
    let mut capture = Capture::start(&dir, &selection)?;
    // Created once the capture is this one's: a refused second capture
    // must not truncate the first one's file.
    let sink: Box<dyn Write> = if to_stdout {
        Box::new(io::stdout())
    } else {
        Box::new(
            File::create(&args.write)
                .with_context(|| format!("creating {}", args.write.display()))?,
        )
    };
    let mut file = pcapng::Writer::new(BufWriter::new(sink), &args.interface, args.snaplen)?;
    let mut written = 0;
    let ended = match file.flush() {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ended::Closed,
        Err(e) => return Err(e.into()),
        Ok(()) => capture_until_end(root, &mut capture, &mut file, args, &mut written)?,
    };
    let counts = capture.counts()?;
    let summary = Summary {
        interface: args.interface.clone(),
        file: if to_stdout {
            "stdout".into()
        } else {
            args.write.display().to_string()
        },
        packets: written,
        selected: counts.captured,
        lost: counts.lost,
        ended,
    };
    if out.is_json() && !to_stdout {
        out.emit(&summary)?;
    } else if out.is_json() {
        eprintln!("{}", serde_json::to_string(&summary)?);
    } else {
        eprintln!("{}", summary.render());
    }
    if ended == Ended::Interrupted {
        return Err(Interrupted.into());
    }
    Ok(())
}

/// The meshbpf XDP program running on `interface`, resolved under the
/// shared state lock so that a swap in progress is never seen halfway.
fn running_xdp(root: &StateRoot, interface: &str) -> Result<Option<AttachmentDir>> {
    let _lock = root.lock_shared()?;
    filter::running_xdp(root, interface)
}

/// Writes packets until an end condition; the selection is off on return.
fn capture_until_end(
    root: &StateRoot,
    capture: &mut Capture,
    file: &mut pcapng::Writer<impl Write>,
    args: &CaptureArgs,
    written: &mut u64,
) -> Result<Ended> {
    let deadline = args.duration.map(|d| Instant::now() + d);
    let wanted = args.count.unwrap_or(u64::MAX);
    let ended = loop {
        // Checked before taking: what came before a detach is still written.
        let attached = capture.follow(|| running_xdp(root, &args.interface))?;
        if !write_ready(capture, file, wanted, written)? {
            break Ended::Closed;
        }
        if *written >= wanted {
            break Ended::Count;
        }
        if interrupt::happened() {
            break Ended::Interrupted;
        }
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|left| left.is_zero()) {
            break Ended::Duration;
        }
        if !attached {
            log::warn!("{} was detached from {}", capture.program(), args.interface);
            break Ended::Detached;
        }
        capture.wait(left.map_or(POLL, |left| left.min(POLL)))?;
    };
    capture.stop()?;
    if matches!(
        ended,
        Ended::Duration | Ended::Interrupted | Ended::Detached
    ) {
        // Selected before the switch-off: theirs to have.
        write_ready(capture, file, wanted, written)?;
    }
    Ok(ended)
}

/// Writes what the ring buffer holds now, up to `wanted` in all; false
/// once the reader of stdout is gone.
fn write_ready(
    capture: &mut Capture,
    file: &mut pcapng::Writer<impl Write>,
    wanted: u64,
    written: &mut u64,
) -> Result<bool> {
    loop {
        let batch = capture.take(BATCH)?;
        if batch.is_empty() {
            return Ok(true);
        }
        let room = (wanted - *written).min(batch.len() as u64) as usize;
        match write_batch(file, &batch[..room]) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(false),
            other => other.context("writing the capture")?,
        }
        *written += room as u64;
        if *written >= wanted {
            return Ok(true);
        }
    }
}

fn write_batch(file: &mut pcapng::Writer<impl Write>, batch: &[Packet]) -> io::Result<()> {
    for p in batch {
        file.packet(p.time, p.len, &p.data, &p.comment())?;
    }
    file.flush()
}
