//! `meshbpf capture` on xdp_mesh_filter: selects packets by verdict, rule,
//! addresses, port and protocol in the kernel (include/capture.h) and reads
//! their first bytes from the capture ring buffer.
//!
//! One capture at a time per interface: the capture holds an exclusive
//! flock on the attachment's directory while it runs, which the kernel
//! drops with the process however it ends. So whoever gets the lock knows
//! any selection still switched on is stale (a killed capture's) and
//! replaces it. The selection is switched off when the capture ends, on
//! error too ([`Capture`]'s Drop).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags, MapHandle, RingBuffer, RingBufferBuilder};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;

use super::skel::types::{
    capture_event, capture_limits, capture_match, capture_selection, capture_stats, capture_verdict,
};
use super::{active_generation, family, read_rules, PinnedMaps, XdpMeshFilterSkel};
use crate::error::Failure;
use crate::kernel::clock::BootAnchor;
use crate::kernel::pins::AttachmentDir;
use crate::kernel::pod::{plain_data, zeroed};
use crate::kernel::ringbuf;
use crate::programs::maps::{self, bytes, lookup};
use crate::rules::Prefix;

plain_data!(capture_event, capture_selection, capture_stats);

/// The most bytes of a packet a capture copies.
pub const MAX_SNAPLEN: u32 = capture_limits::CAPTURE_MAX_SNAPLEN.0;
/// An event's rule when none matched (CAPTURE_NO_RULE).
const NO_RULE: u32 = u32::MAX;

maps::map_set! {
    /// The capture's maps, pinned beside the filter's.
    CaptureMaps, PinnedCapture, XdpMeshFilterSkel {
        control = capture_control,
        ring = capture_ring,
        stats = capture_stats,
    }
    missing: predates_capture
}

fn predates_capture(dir: &AttachmentDir) -> String {
    format!(
        "{} has no capture maps: it was attached by a meshbpf without `capture`; \
         re-attach the filter (meshbpf filter remove, then attach --filter) to capture",
        dir.path.display()
    )
}

/// Why a packet got its fate, as the capture selects and reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Drop,
    RateLimited,
    SynDropped,
    Banned,
}

impl Verdict {
    pub const ALL: [Verdict; 5] = [
        Verdict::Pass,
        Verdict::Drop,
        Verdict::RateLimited,
        Verdict::SynDropped,
        Verdict::Banned,
    ];

    fn raw(self) -> u32 {
        match self {
            Verdict::Pass => capture_verdict::CAPTURE_PASS.0,
            Verdict::Drop => capture_verdict::CAPTURE_DROP.0,
            Verdict::RateLimited => capture_verdict::CAPTURE_RATE_LIMITED.0,
            Verdict::SynDropped => capture_verdict::CAPTURE_SYN_DROPPED.0,
            Verdict::Banned => capture_verdict::CAPTURE_BANNED.0,
        }
    }

    fn from_raw(raw: u8) -> Option<Verdict> {
        Verdict::ALL.into_iter().find(|v| v.raw() == u32::from(raw))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Drop => "drop",
            Verdict::RateLimited => "rate_limited",
            Verdict::SynDropped => "syn_dropped",
            Verdict::Banned => "banned",
        }
    }
}

/// `drop`, `pass,drop`, ...: the verdicts a capture keeps.
pub fn parse_verdicts(text: &str) -> Result<Vec<Verdict>, String> {
    text.split(',')
        .map(|name| {
            Verdict::ALL
                .into_iter()
                .find(|v| v.as_str() == name.trim())
                .ok_or_else(|| {
                    format!(
                        "\"{name}\" is not a verdict; the verdicts are {}",
                        Verdict::ALL.map(Verdict::as_str).join(", ")
                    )
                })
        })
        .collect()
}

/// What a capture keeps: every condition given must hold.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Empty: every verdict.
    pub verdicts: Vec<Verdict>,
    /// A rule of the active set, by id or name.
    pub rule: Option<String>,
    pub src: Option<Prefix>,
    pub dst: Option<Prefix>,
    /// The source or the destination port.
    pub port: Option<u16>,
    /// IP protocol number.
    pub protocol: Option<u8>,
    pub snaplen: u32,
}

/// A captured packet.
#[derive(Debug, Clone)]
pub struct Packet {
    pub time: SystemTime,
    /// Of the whole frame.
    pub len: u32,
    /// Its first bytes.
    pub data: Vec<u8>,
    pub verdict: Verdict,
    /// The rule that matched: its index in its set, and its id.
    pub rule: Option<(u32, String)>,
}

impl Packet {
    /// The pcapng comment: `rule ID (index N), verdict drop`.
    pub fn comment(&self) -> String {
        match &self.rule {
            Some((index, id)) => format!(
                "rule {id} (index {index}), verdict {}",
                self.verdict.as_str()
            ),
            None if self.verdict == Verdict::Banned => "ban set, verdict banned".into(),
            None => format!(
                "no rule (default policy), verdict {}",
                self.verdict.as_str()
            ),
        }
    }
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Counts {
    /// Selected and copied by the kernel.
    pub captured: u64,
    /// Selected, but the ring buffer was full.
    pub lost: u64,
}

type Pending = Rc<RefCell<Vec<capture_event>>>;

/// A running capture; dropping it switches the selection off.
pub struct Capture {
    ring: RingBuffer<'static>,
    pending: Pending,
    maps: PinnedCapture,
    filter: PinnedMaps,
    dir: AttachmentDir,
    /// Rule ids by generation and index, for the comments.
    ids: HashMap<u8, Vec<String>>,
    /// The kernel's counts when the capture started.
    base: Counts,
    _lock: Flock<File>,
}

impl Capture {
    /// Switches the selection on for the filter pinned in `dir`.
    pub fn start(dir: &AttachmentDir, selection: &Selection) -> Result<Capture> {
        let lock = lock(dir)?;
        let maps = PinnedCapture::open(dir)?;
        let filter = PinnedMaps::open(dir)?;
        let pending: Pending = Rc::default();
        let sink = Rc::clone(&pending);
        let mut builder = RingBufferBuilder::new();
        builder.add(maps.maps().ring, move |raw: &[u8]| {
            let mut event: capture_event = zeroed();
            match plain::copy_from_bytes(&mut event, raw) {
                Ok(()) => {
                    sink.borrow_mut().push(event);
                    0
                }
                Err(_) => -libc::EBADMSG,
            }
        })?;
        let ring = builder
            .build()
            .with_context(|| format!("mapping {}", dir.map("capture_ring").display()))?;
        let mut capture = Capture {
            ring,
            pending,
            maps,
            filter,
            dir: dir.clone(),
            ids: HashMap::new(),
            base: Counts::default(),
            _lock: lock,
        };
        let control = capture.selection(selection)?;
        // A killed capture's records would be read as this one's.
        capture.switch(&capture_selection::default())?;
        capture
            .ring
            .consume()
            .context("emptying the capture ring buffer")?;
        capture.base = capture.kernel_counts()?;
        capture.switch(&control)?;
        Ok(capture)
    }

    /// The kernel's form of `selection`, its rule looked up in the active set.
    fn selection(&mut self, selection: &Selection) -> Result<capture_selection> {
        let mut c = capture_selection {
            enabled: 1,
            snaplen: selection.snaplen.clamp(1, MAX_SNAPLEN),
            owner_pid: std::process::id(),
            rule: NO_RULE,
            ..Default::default()
        };
        let verdicts = if selection.verdicts.is_empty() {
            &Verdict::ALL[..]
        } else {
            &selection.verdicts[..]
        };
        c.verdicts = verdicts.iter().fold(0, |mask, v| mask | 1 << v.raw());
        if let Some(wanted) = &selection.rule {
            let active = read_rules(&self.filter.maps())?;
            let rule = active
                .rules
                .iter()
                .find(|r| r.rule.id == *wanted || r.rule.name.as_deref() == Some(wanted))
                .ok_or_else(|| {
                    Failure::new(format!(
                        "no rule of the active set has id or name {wanted:?}"
                    ))
                    .hint("meshbpf filter show IFACE lists the rules with their ids")
                })?;
            c.conditions |= capture_match::CAPTURE_MATCH_RULE.0;
            c.rule = rule.index;
            c.r#gen = active.generation;
        }
        if let Some(src) = &selection.src {
            c.conditions |= capture_match::CAPTURE_MATCH_SRC.0;
            (c.src_family, c.src, c.src_mask) = side(src);
        }
        if let Some(dst) = &selection.dst {
            c.conditions |= capture_match::CAPTURE_MATCH_DST.0;
            (c.dst_family, c.dst, c.dst_mask) = side(dst);
        }
        if let Some(port) = selection.port {
            c.conditions |= capture_match::CAPTURE_MATCH_PORT.0;
            c.port = port;
        }
        if let Some(protocol) = selection.protocol {
            c.conditions |= capture_match::CAPTURE_MATCH_PROTO.0;
            c.protocol = protocol;
        }
        Ok(c)
    }

    fn switch(&self, control: &capture_selection) -> Result<()> {
        self.maps
            .maps()
            .control
            .update(&0u32.to_ne_bytes(), bytes(control), MapFlags::ANY)
            .context("writing the capture selection")
    }

    /// Switches the selection off; what the ring buffer holds can still be
    /// taken.
    pub fn stop(&self) -> Result<()> {
        self.switch(&capture_selection::default())
    }

    /// Takes up to `max` packets that are in the buffer now, without waiting.
    pub fn take(&mut self, max: usize) -> Result<Vec<Packet>> {
        let consumed = self.ring.consume_raw_n(max);
        if consumed < 0 {
            let err = std::io::Error::from_raw_os_error(-consumed);
            return Err(anyhow::Error::from(err).context("reading the capture ring buffer"));
        }
        let events = std::mem::take(&mut *self.pending.borrow_mut());
        let anchor = BootAnchor::now();
        events.iter().map(|e| self.packet(e, &anchor)).collect()
    }

    fn packet(&mut self, e: &capture_event, anchor: &BootAnchor) -> Result<Packet> {
        let caplen = (e.caplen as usize).min(e.data.len());
        let rule = if e.rule == NO_RULE {
            None
        } else {
            let id = self.rule_id(e.r#gen, e.rule)?;
            Some((e.rule, id))
        };
        Ok(Packet {
            time: anchor.wall(e.boottime_ns),
            len: e.len,
            data: e.data[..caplen].to_vec(),
            verdict: Verdict::from_raw(e.verdict).unwrap_or(Verdict::Drop),
            rule,
        })
    }

    /// The id of rule `index` of generation `gen`; read again when a new
    /// rule set was applied during the capture.
    fn rule_id(&mut self, r#gen: u8, index: u32) -> Result<String> {
        let stale = self
            .ids
            .get(&r#gen)
            .is_none_or(|ids| ids.len() <= index as usize)
            || active_generation(&self.filter.maps())? != r#gen;
        if stale {
            let active = read_rules(&self.filter.maps())?;
            let ids = active.rules.into_iter().map(|r| r.rule.id).collect();
            self.ids.insert(active.generation, ids);
        }
        Ok(self
            .ids
            .get(&r#gen)
            .and_then(|ids| ids.get(index as usize).cloned())
            .unwrap_or_else(|| format!("#{index} of a replaced rule set")))
    }

    /// Waits up to `timeout` for packets; a signal cuts the wait short.
    pub fn wait(&self, timeout: Duration) -> Result<()> {
        ringbuf::wait(&self.ring, timeout).context("waiting for captured packets")
    }

    fn kernel_counts(&self) -> Result<Counts> {
        let mut sum = Counts::default();
        for cpu in maps::read_per_cpu::<capture_stats>(self.maps.maps().stats, 0)? {
            sum.captured += cpu.captured;
            sum.lost += cpu.lost;
        }
        Ok(sum)
    }

    /// What the kernel selected since this capture started.
    pub fn counts(&self) -> Result<Counts> {
        let now = self.kernel_counts()?;
        Ok(Counts {
            captured: now.captured - self.base.captured,
            lost: now.lost - self.base.lost,
        })
    }

    /// Whether the filter this captures from is still the one pinned.
    pub fn still_attached(&self) -> Result<bool> {
        if !self.dir.is_committed() {
            return Ok(false);
        }
        let id = |map: &dyn MapCore| map.info().map(|info| info.info.id);
        match MapHandle::from_pinned_path(self.dir.map("capture_control")) {
            Ok(pinned) => Ok(id(&pinned)? == id(self.maps.maps().control)?),
            Err(err) if err.kind() == libbpf_rs::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(err).context("checking that the filter is still attached"),
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            log::warn!("switching the capture off: {err:#}");
        }
    }
}

/// Whether a capture runs on the filter of `dir`, as `health` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Off,
    Running {
        pid: u32,
    },
    /// Switched on by a process that is gone (killed outright): packets
    /// are still selected and copied into a ring buffer nobody reads.
    Stale {
        pid: u32,
    },
    /// Attached by a meshbpf without `capture`.
    NoMaps,
}

/// The capture state, from the selection and whether its owner lives;
/// takes no lock, so a capture starting meanwhile is never refused.
pub fn state(dir: &AttachmentDir) -> Result<State> {
    let Ok(pinned) = PinnedCapture::open(dir) else {
        return Ok(State::NoMaps);
    };
    let control: Option<capture_selection> = lookup(pinned.maps().control, &0u32.to_ne_bytes())?;
    Ok(match control {
        Some(c) if c.enabled != 0 => {
            let pid = c.owner_pid;
            let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None)
                .is_ok_and(|()| pid != 0);
            if alive {
                State::Running { pid }
            } else {
                State::Stale { pid }
            }
        }
        _ => State::Off,
    })
}

/// Switches a stale selection off (`health --fix`): under the capture
/// lock, so a capture that runs is never touched. The owner's pid when
/// there was one to clear.
pub fn clear_stale(dir: &AttachmentDir) -> Result<Option<u32>> {
    let Ok(_lock) = lock(dir) else {
        return Ok(None);
    };
    let pinned = PinnedCapture::open(dir)?;
    let maps = pinned.maps();
    let control: Option<capture_selection> = lookup(maps.control, &0u32.to_ne_bytes())?;
    match control {
        Some(c) if c.enabled != 0 => {
            maps.control.update(
                &0u32.to_ne_bytes(),
                bytes(&capture_selection::default()),
                MapFlags::ANY,
            )?;
            Ok(Some(c.owner_pid))
        }
        _ => Ok(None),
    }
}

/// Family, address and mask of a CIDR in the kernel's layout.
fn side(prefix: &Prefix) -> (u8, [u8; 16], [u8; 16]) {
    (family(prefix.family), prefix.addr, prefix.mask())
}

/// bpffs refuses open() on a ring buffer's pin, so the capture lock is
/// taken on the attachment's directory.
fn lock(dir: &AttachmentDir) -> Result<Flock<File>> {
    let file = File::open(&dir.path).with_context(|| format!("opening {}", dir.path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((_, Errno::EWOULDBLOCK)) => Err(Failure::new(format!(
            "another `meshbpf capture` runs on this filter ({}): one capture at a time per interface",
            dir.path.display()
        ))
        .hint(format!(
            "stop the other capture first (fuser -v {} names it)",
            dir.path.display()
        ))
        .into()),
        Err((_, errno)) => {
            Err(anyhow::Error::from(errno).context(format!("locking {}", dir.path.display())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(verdict: Verdict, rule: Option<(u32, &str)>) -> Packet {
        Packet {
            time: SystemTime::UNIX_EPOCH,
            len: 60,
            data: Vec::new(),
            verdict,
            rule: rule.map(|(index, id)| (index, id.to_string())),
        }
    }

    #[test]
    fn comments_name_what_decided() {
        assert_eq!(
            packet(Verdict::RateLimited, Some((3, "ssh"))).comment(),
            "rule ssh (index 3), verdict rate_limited"
        );
        assert_eq!(
            packet(Verdict::Drop, None).comment(),
            "no rule (default policy), verdict drop"
        );
        assert_eq!(
            packet(Verdict::Banned, None).comment(),
            "ban set, verdict banned"
        );
    }

    #[test]
    fn verdict_lists_parse_and_unknown_names_are_refused() {
        assert_eq!(
            parse_verdicts("drop,syn_dropped").unwrap(),
            [Verdict::Drop, Verdict::SynDropped]
        );
        let err = parse_verdicts("drop,dropped").unwrap_err();
        assert!(err.contains("\"dropped\" is not a verdict"), "{err}");
    }
}
