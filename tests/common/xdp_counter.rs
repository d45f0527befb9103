//! xdp_counter under BPF_PROG_TEST_RUN: one loaded, unattached program with
//! its own per-CPU counters map, and checks that a frame moves exactly the
//! `l3` and `l4` slots it should.

use std::mem::MaybeUninit;

use super::frames::{hex, Frame};
use libbpf_rs::{OpenObject, ProgramInput};
use meshbpf::programs::xdp_counter::traffic::{self, Breakdown, Traffic};
use meshbpf::programs::xdp_counter::{self, XdpCounterSkel};

pub const XDP_PASS: u32 = 2;
pub const ETH_HLEN: usize = 14;

pub const L3: [&str; 4] = ["ipv4", "ipv6", "arp", "other"];
pub const L4: [&str; 5] = ["tcp", "udp", "icmp", "icmpv6", "other"];

pub struct Harness<'obj> {
    skel: XdpCounterSkel<'obj>,
}

impl<'obj> Harness<'obj> {
    pub fn load(object: &'obj mut MaybeUninit<OpenObject>) -> Self {
        let skel = xdp_counter::load(object, None).expect("loading xdp_counter");
        let harness = Harness { skel };
        assert_eq!(harness.traffic(), zero(), "a fresh map starts at zero");
        harness
    }

    pub fn run(&self, frame: &[u8], repeat: u32) -> libbpf_rs::Result<u32> {
        let input = ProgramInput {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        };
        self.skel
            .progs
            .xdp_counter
            .test_run(input)
            .map(|out| out.return_value)
    }

    pub fn traffic(&self) -> Traffic {
        traffic::read_counters(&self.skel.maps.counters).expect("reading counters")
    }

    pub fn assert_counted(&self, frame: &[u8], l3: &str, l4: &str) {
        self.assert_counted_times(frame, 1, l3, l4);
    }

    /// Runs `frame` `repeat` times and checks that exactly the `l3` and `l4`
    /// slots grew, by `repeat` packets of the frame's length each.
    pub fn assert_counted_times(&self, frame: &[u8], repeat: u32, l3: &str, l4: &str) {
        if let Err(e) = self.check_counted(frame, repeat, l3, l4) {
            panic!("{e}");
        }
    }

    /// As [`Self::assert_counted_times`], but says what went wrong instead
    /// of panicking, so a caller can collect every disagreement.
    pub fn check_counted(
        &self,
        frame: &[u8],
        repeat: u32,
        l3: &str,
        l4: &str,
    ) -> Result<(), String> {
        let before = self.traffic();
        let verdict = self
            .run(frame, repeat)
            .map_err(|e| format!("test run failed: {e}\nframe: {}", hex(frame)))?;
        if verdict != XDP_PASS {
            return Err(format!("verdict {verdict}\nframe: {}", hex(frame)));
        }
        let packets = u64::from(repeat);
        let bytes = packets * frame.len() as u64;
        let mut expected = before.clone();
        expected.packets += packets;
        expected.bytes += bytes;
        bump(&mut expected.l3, l3, packets, bytes);
        bump(&mut expected.l4, l4, packets, bytes);
        let after = self.traffic();
        if after == expected {
            return Ok(());
        }
        Err(format!(
            "expected {l3}/{l4}, got {} for {} bytes: {}",
            moved(&before, &after),
            frame.len(),
            hex(frame)
        ))
    }

    /// Runs every prefix of `frame` that the kernel accepts and checks that
    /// each layer is classified exactly from the length at which its header
    /// is complete. `stages` lists (length, l3, l4), in increasing length;
    /// shorter prefixes must count as other/other.
    pub fn sweep(&self, frame: &Frame, stages: &[(usize, &str, &str)]) {
        let bytes = frame.build();
        for cut in ETH_HLEN..=bytes.len() {
            let (l3, l4) = stages
                .iter()
                .rev()
                .find(|(from, _, _)| cut >= *from)
                .map_or(("other", "other"), |(_, l3, l4)| (*l3, *l4));
            self.assert_counted(&bytes[..cut], l3, l4);
        }
    }
}

pub fn zero() -> Traffic {
    let slots = |names: &[&'static str]| {
        Breakdown(names.iter().map(|n| (*n, Default::default())).collect())
    };
    Traffic {
        packets: 0,
        bytes: 0,
        l3: slots(&L3),
        l4: slots(&L4),
    }
}

fn bump(breakdown: &mut Breakdown, name: &str, packets: u64, bytes: u64) {
    let (_, slot) = breakdown
        .0
        .iter_mut()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no counter slot named {name}"));
    slot.packets += packets;
    slot.bytes += bytes;
}

/// The slots that grew from `before` to `after`, as "l3/l4" (a side that
/// moved in more than one slot, or in none, lists them all or says so).
fn moved(before: &Traffic, after: &Traffic) -> String {
    let side = |b: &Breakdown, a: &Breakdown| {
        let grew: Vec<_> =
            b.0.iter()
                .zip(&a.0)
                .filter(|((_, was), (_, is))| was != is)
                .map(|((name, _), _)| *name)
                .collect();
        match grew.as_slice() {
            [] => "nothing".to_string(),
            names => names.join("+"),
        }
    };
    format!(
        "{}/{}",
        side(&before.l3, &after.l3),
        side(&before.l4, &after.l4)
    )
}
