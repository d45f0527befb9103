//! A running capture: the selection in the kernel's form, switched on for
//! as long as the [`Capture`] lives (switched off on error too, by Drop),
//! and the packets read back from the capture ring buffer.

use std::fs::File;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags};
use nix::fcntl::Flock;

use super::{
    capture_event, capture_selection, capture_stats, lock_interface, CaptureMaps, Counts,
    Selection, Verdict, MAX_SNAPLEN, NO_RULE, RING,
};
use crate::error::Failure;
use crate::kernel::clock::BootAnchor;
use crate::kernel::pins::AttachmentDir;
use crate::kernel::ringbuf::TypedRing;
use crate::programs::maps::{self, bytes};
use crate::programs::xdp_counter::skel::types::capture_match;
use crate::programs::xdp_mesh_filter::{self, active_generation, read_rules, PinnedMaps};
use crate::rules::Prefix;

/// A captured packet.
#[derive(Debug, Clone)]
pub struct Packet {
    pub time: SystemTime,
    /// Of the whole frame.
    pub len: u32,
    /// Its first bytes.
    pub data: Vec<u8>,
    pub verdict: Verdict,
    pub decided_by: DecidedBy,
}

/// What gave a packet its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecidedBy {
    /// A rule: its index in its set, and its id.
    Rule(u32, String),
    /// The filter's default policy.
    Default,
    BanSet,
    /// xdp_counter, which passes every packet.
    Counter,
}

impl Packet {
    /// The pcapng comment: `rule ID (index N), verdict drop`.
    pub fn comment(&self) -> String {
        let verdict = self.verdict.as_str();
        match &self.decided_by {
            DecidedBy::Rule(index, id) => format!("rule {id} (index {index}), verdict {verdict}"),
            DecidedBy::Default => format!("no rule (default policy), verdict {verdict}"),
            DecidedBy::BanSet => format!("ban set, verdict {verdict}"),
            DecidedBy::Counter => format!("xdp_counter (no rules), verdict {verdict}"),
        }
    }
}

/// A running capture; dropping it switches the selection off.
pub struct Capture {
    ring: TypedRing<capture_event>,
    maps: CaptureMaps,
    /// The attachment whose program writes to the maps now.
    dir: AttachmentDir,
    /// Its rules, when it is xdp_mesh_filter.
    rules: Option<PinnedMaps>,
    /// The rule ids of the set last read as active, by index, with its
    /// generation: for the comments.
    ids: Option<(u8, Vec<String>)>,
    /// The kernel's counts when the capture started.
    base: Counts,
    _lock: Flock<File>,
}

impl Capture {
    /// Switches the selection on for the program pinned in `dir`.
    pub fn start(dir: &AttachmentDir, selection: &Selection) -> Result<Capture> {
        let lock = lock_interface(dir)?;
        let maps = CaptureMaps::open(dir)?;
        let rules = rules_of(dir)?;
        let control = kernel_selection(dir, rules.as_ref(), selection)?;
        let ring = TypedRing::open(&dir.map(RING))?;
        let mut capture = Capture {
            ring,
            maps,
            dir: dir.clone(),
            rules,
            ids: None,
            base: Counts::default(),
            _lock: lock,
        };
        // A killed capture's records would be read as this one's.
        capture.switch(&capture_selection::default())?;
        capture
            .ring
            .discard_all()
            .context("emptying the capture ring buffer")?;
        capture.base = capture.kernel_counts()?;
        capture.switch(&control)?;
        Ok(capture)
    }

    fn switch(&self, control: &capture_selection) -> Result<()> {
        self.maps
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
        let events = self
            .ring
            .take(max)
            .context("reading the capture ring buffer")?;
        if events.iter().any(|e| e.rule != NO_RULE) {
            self.refresh_ids()?;
        }
        let anchor = BootAnchor::now();
        Ok(events.iter().map(|e| self.packet(e, &anchor)).collect())
    }

    fn packet(&self, e: &capture_event, anchor: &BootAnchor) -> Packet {
        let caplen = (e.caplen as usize).min(e.data.len());
        let verdict = Verdict::from_raw(e.verdict).unwrap_or(Verdict::Drop);
        let decided_by = if e.rule != NO_RULE {
            DecidedBy::Rule(e.rule, self.rule_id(e.r#gen, e.rule))
        } else if self.rules.is_none() {
            DecidedBy::Counter
        } else if verdict == Verdict::Banned {
            DecidedBy::BanSet
        } else {
            DecidedBy::Default
        };
        Packet {
            time: anchor.wall(e.boottime_ns),
            len: e.len,
            data: e.data[..caplen].to_vec(),
            verdict,
            decided_by,
        }
    }

    /// Reads the active set's rule ids again when a new rule set was
    /// applied since they were read: once per batch, not per packet.
    fn refresh_ids(&mut self) -> Result<()> {
        let Some(filter) = &self.rules else {
            return Ok(());
        };
        let active = active_generation(&filter.maps())?;
        if self.ids.as_ref().map(|(r#gen, _)| *r#gen) != Some(active) {
            let set = read_rules(&filter.maps())?;
            let ids = set.rules.into_iter().map(|r| r.rule.id).collect();
            self.ids = Some((set.generation, ids));
        }
        Ok(())
    }

    /// The id of rule `index` of generation `gen`, when that is the set
    /// whose ids were read last.
    fn rule_id(&self, r#gen: u8, index: u32) -> String {
        match &self.ids {
            Some((read, ids)) if *read == r#gen => ids.get(index as usize).cloned(),
            _ => None,
        }
        .unwrap_or_else(|| format!("#{index} of a replaced rule set"))
    }

    /// Waits up to `timeout` for packets; a signal cuts the wait short.
    pub fn wait(&self, timeout: Duration) -> Result<()> {
        self.ring
            .wait(timeout)
            .context("waiting for captured packets")
    }

    fn kernel_counts(&self) -> Result<Counts> {
        let mut sum = Counts::default();
        for cpu in maps::read_per_cpu::<capture_stats>(&self.maps.stats, 0)? {
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

    /// Whether a program the kernel runs still writes to this capture's
    /// maps: the one it started on, or else the one `running` finds on
    /// the interface (`None`: none runs), which a swap put in its place
    /// and whose rules then name the packets.
    pub fn follow(
        &mut self,
        running: impl FnOnce() -> Result<Option<AttachmentDir>>,
    ) -> Result<bool> {
        if self.writes_here(&self.dir)? {
            return Ok(true);
        }
        let Some(current) = running()? else {
            return Ok(false);
        };
        if !self.writes_here(&current)? {
            return Ok(false);
        }
        self.rules = rules_of(&current)?;
        self.ids = None;
        self.dir = current;
        Ok(true)
    }

    /// Whether `dir` is committed and pins this capture's maps.
    fn writes_here(&self, dir: &AttachmentDir) -> Result<bool> {
        Ok(dir.is_committed() && self.ring.pinned_at(&dir.map(RING))?)
    }

    /// The program the capture reads from now.
    pub fn program(&self) -> &str {
        &self.dir.program
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            log::warn!("switching the capture off: {err:#}");
        }
    }
}

/// The rule set of `dir`'s program, when it has one.
fn rules_of(dir: &AttachmentDir) -> Result<Option<PinnedMaps>> {
    if dir.program != xdp_mesh_filter::PROGRAM {
        return Ok(None);
    }
    PinnedMaps::open(dir).map(Some)
}

/// The kernel's form of `selection`, its rule looked up in the active set.
/// Refuses what the program running can never select, rather than capture
/// nothing until Ctrl-C.
fn kernel_selection(
    dir: &AttachmentDir,
    rules: Option<&PinnedMaps>,
    selection: &Selection,
) -> Result<capture_selection> {
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
    if rules.is_none() && !verdicts.contains(&Verdict::Pass) {
        return Err(Failure::new(format!(
            "--verdict {}: {} runs on {} and passes every packet, so the capture would select nothing",
            verdicts.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(","),
            dir.program,
            dir.interface
        ))
        .hint("capture --verdict pass (or no --verdict) there, or attach the filter first: meshbpf attach IFACE --filter RULES.json")
        .into());
    }
    c.verdicts = verdicts.iter().fold(0, |mask, v| mask | 1 << v.raw());
    if let Some(wanted) = &selection.rule {
        let Some(filter) = rules else {
            return Err(Failure::new(format!(
                "--rule {wanted}: {} runs on {}, which has no rules",
                dir.program, dir.interface
            ))
            .hint("attach the filter first: meshbpf attach IFACE --filter RULES.json")
            .into());
        };
        let active = read_rules(&filter.maps())?;
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

/// Family (4 or 6, as include/capture.h has it), address and mask of a
/// CIDR in the kernel's layout.
fn side(prefix: &Prefix) -> (u8, [u8; 16], [u8; 16]) {
    let family = match prefix.family {
        crate::rules::Family::V4 => 4,
        crate::rules::Family::V6 => 6,
    };
    (family, prefix.addr, prefix.mask())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(verdict: Verdict, decided_by: DecidedBy) -> Packet {
        Packet {
            time: SystemTime::UNIX_EPOCH,
            len: 60,
            data: Vec::new(),
            verdict,
            decided_by,
        }
    }

    #[test]
    fn comments_name_what_decided() {
        assert_eq!(
            packet(Verdict::RateLimited, DecidedBy::Rule(3, "ssh".into())).comment(),
            "rule ssh (index 3), verdict rate_limited"
        );
        assert_eq!(
            packet(Verdict::Drop, DecidedBy::Default).comment(),
            "no rule (default policy), verdict drop"
        );
        assert_eq!(
            packet(Verdict::Banned, DecidedBy::BanSet).comment(),
            "ban set, verdict banned"
        );
        assert_eq!(
            packet(Verdict::Pass, DecidedBy::Counter).comment(),
            "xdp_counter (no rules), verdict pass"
        );
    }
}
