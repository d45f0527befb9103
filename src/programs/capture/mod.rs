//! `meshbpf capture`, shared by meshbpf's XDP programs: both pin the same
//! three maps (include/capture.h) and call the same kernel code once their
//! verdict is known, so a capture selects, copies and reads packets the
//! same way whichever program runs.
//!
//! A capture follows its interface, not a program: a swap between
//! xdp_counter and xdp_mesh_filter hands the capture maps to the new
//! program (as it does the traffic counters), so a capture running across
//! `attach --filter` or `filter remove` loses no packet and needs no
//! restart. The maps' types come from xdp_counter's skeleton; xdp_mesh_filter's
//! are generated from the same header, so the bytes are the same.

use std::os::fd::AsFd;

use anyhow::Result;
use libbpf_rs::{Map, MapHandle, OpenMapMut};
use serde::Serialize;

use crate::kernel::bpfobj;
use crate::kernel::pins::AttachmentDir;
use crate::kernel::pod::plain_data;
use crate::programs::maps::open_pinned_map;
use crate::programs::xdp_counter::skel::types::{
    capture_event, capture_limits, capture_selection, capture_stats, capture_verdict,
};

mod session;
mod state;

pub use session::{Capture, DecidedBy, Packet};
pub use state::{check, fix_stale, lock_interface, State};

plain_data!(capture_event, capture_selection, capture_stats);

/// The most bytes of a packet a capture copies.
pub const MAX_SNAPLEN: u32 = capture_limits::CAPTURE_MAX_SNAPLEN.0;
/// An event's rule when none matched (CAPTURE_NO_RULE).
const NO_RULE: u32 = u32::MAX;

const CONTROL: &str = "capture_control";
const RING: &str = "capture_ring";
const STATS: &str = "capture_stats";
const MAP_NAMES: [&str; 3] = [CONTROL, RING, STATS];

/// The capture maps of an attachment, opened from its pins, but for the
/// ring buffer, which a capture reads through [`TypedRing`].
///
/// [`TypedRing`]: crate::kernel::ringbuf::TypedRing
struct CaptureMaps {
    control: MapHandle,
    stats: MapHandle,
}

impl CaptureMaps {
    fn open(dir: &AttachmentDir) -> Result<CaptureMaps> {
        let open = |name| {
            open_pinned_map(dir, name).map_err(|err| {
                err.context(format!(
                    "{} has no capture maps: it was attached by a meshbpf without `capture`; \
                     re-attach {} to capture",
                    dir.path.display(),
                    dir.program
                ))
            })
        };
        Ok(CaptureMaps {
            control: open(CONTROL)?,
            stats: open(STATS)?,
        })
    }
}

/// A skeleton's capture maps, in [`MAP_NAMES`] order: `capture_maps!(skel.maps)`
/// of a loaded one, `capture_maps!(mut open.maps)` of an opened one.
macro_rules! capture_maps {
    ($maps:expr) => {
        [
            &$maps.capture_control,
            &$maps.capture_ring,
            &$maps.capture_stats,
        ]
    };
    (mut $maps:expr) => {
        [
            &mut $maps.capture_control,
            &mut $maps.capture_ring,
            &mut $maps.capture_stats,
        ]
    };
}
pub(crate) use capture_maps;

/// Pins a loaded program's capture maps into `dir`.
pub fn pin(maps: [&Map<'_>; 3], dir: &AttachmentDir) -> Result<()> {
    for (map, name) in maps.into_iter().zip(MAP_NAMES) {
        bpfobj::pin(map.as_fd(), &dir.map(name))?;
    }
    Ok(())
}

/// Makes an opened program use the capture maps pinned in `from`, so a
/// capture running there goes on in the program that replaces it. An
/// attachment from before capture has none to hand over.
pub fn reuse(maps: [&mut OpenMapMut<'_>; 3], from: &AttachmentDir) -> libbpf_rs::Result<()> {
    for (map, name) in maps.into_iter().zip(MAP_NAMES) {
        let pinned = from.map(name);
        if pinned.exists() {
            map.reuse_pinned_map(&pinned)?;
        }
    }
    Ok(())
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
    pub src: Option<crate::rules::Prefix>,
    pub dst: Option<crate::rules::Prefix>,
    /// The source or the destination port.
    pub port: Option<u16>,
    /// IP protocol number.
    pub protocol: Option<u8>,
    pub snaplen: u32,
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Counts {
    /// Selected and copied by the kernel.
    pub captured: u64,
    /// Selected, but the ring buffer was full.
    pub lost: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

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
