//! Turning the kernel's boot-time and monotonic stamps into wall-clock times.

use std::time::{Duration, SystemTime};

use nix::time::{clock_gettime, ClockId};

/// The wall-clock time of a CLOCK_BOOTTIME instant (what bpf_prog_info's
/// load_time holds), so output can say when something was attached.
pub fn boottime_to_wall(boottime_ns: u64) -> SystemTime {
    BootAnchor::now().wall(boottime_ns)
}

/// A reading of CLOCK_BOOTTIME and the wall clock taken together, to turn
/// many boot-time stamps (bpf_ktime_get_boot_ns: lsm_monitor's events) into
/// wall-clock times against one reading, so their order survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootAnchor {
    pub boottime_ns: u64,
    pub wall: SystemTime,
}

impl BootAnchor {
    pub fn now() -> BootAnchor {
        BootAnchor {
            boottime_ns: clock_gettime(ClockId::CLOCK_BOOTTIME)
                .map(|ts| Duration::from(ts).as_nanos() as u64)
                .expect("CLOCK_BOOTTIME is always readable"),
            wall: SystemTime::now(),
        }
    }

    pub fn wall(&self, boottime_ns: u64) -> SystemTime {
        shifted(self.wall, self.boottime_ns, boottime_ns)
    }
}

/// `wall`, the time of clock reading `at_ns`, moved to clock reading `ns`.
fn shifted(wall: SystemTime, at_ns: u64, ns: u64) -> SystemTime {
    if ns <= at_ns {
        wall - Duration::from_nanos(at_ns - ns)
    } else {
        wall + Duration::from_nanos(ns - at_ns)
    }
}

pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// A reading of CLOCK_MONOTONIC and the wall clock taken together, to turn
/// the kernel's monotonic stamps (bpf_ktime_get_ns: flows' first and last
/// seen) into wall-clock times and ages. Monotonic time does not advance
/// while the machine is suspended, so a stamp from before a suspend comes
/// out later than it was by the time spent suspended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    pub monotonic_ns: u64,
    pub wall: SystemTime,
}

impl Anchor {
    pub fn now() -> Anchor {
        Anchor {
            monotonic_ns: monotonic_now_ns(),
            wall: SystemTime::now(),
        }
    }

    /// The wall-clock time of a CLOCK_MONOTONIC instant.
    pub fn wall(&self, monotonic_ns: u64) -> SystemTime {
        shifted(self.wall, self.monotonic_ns, monotonic_ns)
    }

    /// How long before this reading a CLOCK_MONOTONIC instant was; zero for
    /// instants after it (a packet counted while the table was read).
    pub fn since(&self, monotonic_ns: u64) -> Duration {
        Duration::from_nanos(self.monotonic_ns.saturating_sub(monotonic_ns))
    }
}

pub fn monotonic_now_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|ts| Duration::from(ts).as_nanos() as u64)
        .expect("CLOCK_MONOTONIC is always readable")
}

/// The wall-clock time of a CLOCK_MONOTONIC instant (bpf_ktime_get_ns).
pub fn monotonic_to_wall(monotonic_ns: u64) -> SystemTime {
    Anchor::now().wall(monotonic_ns)
}

/// RFC 3339 with milliseconds, UTC: `2026-11-22T22:55:25.123Z`.
pub fn rfc3339_millis(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// RFC 3339 with nanoseconds, UTC: `2026-11-22T22:55:25.123456789Z`.
pub fn rfc3339_nanos(time: SystemTime) -> String {
    humantime::format_rfc3339_nanos(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_instants_map_around_the_anchor() {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let anchor = Anchor {
            monotonic_ns: 10_000_000_000,
            wall,
        };
        assert_eq!(anchor.wall(10_000_000_000), wall);
        assert_eq!(
            anchor.wall(7_500_000_000),
            wall - Duration::from_millis(2500)
        );
        assert_eq!(anchor.wall(10_000_000_001), wall + Duration::from_nanos(1));
        assert_eq!(anchor.since(9_000_000_000), Duration::from_secs(1));
        assert_eq!(anchor.since(11_000_000_000), Duration::ZERO);
        assert_eq!(
            rfc3339_millis(anchor.wall(7_500_000_000)),
            "2027-01-15T07:59:57.500Z"
        );
    }

    #[test]
    fn boot_stamps_map_around_the_anchor_to_the_nanosecond() {
        let anchor = BootAnchor {
            boottime_ns: 5_000_000_000,
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        };
        assert_eq!(
            rfc3339_nanos(anchor.wall(4_000_000_001)),
            "2027-01-15T07:59:59.000000001Z"
        );
        assert_eq!(
            rfc3339_nanos(anchor.wall(5_000_000_123)),
            "2027-01-15T08:00:00.000000123Z"
        );
    }

    #[test]
    fn the_live_clocks_agree() {
        let now = monotonic_now_ns();
        let wall = monotonic_to_wall(now);
        let diff = SystemTime::now()
            .duration_since(wall)
            .unwrap_or_else(|e| e.duration());
        assert!(diff < Duration::from_secs(1), "{diff:?}");
    }
}
