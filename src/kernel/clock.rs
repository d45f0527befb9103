//! Turning the kernel's boot-time stamps into wall-clock times.

use std::time::{Duration, SystemTime};

use nix::time::{clock_gettime, ClockId};

/// The wall-clock time of a CLOCK_BOOTTIME instant (what bpf_prog_info's
/// load_time holds), so output can say when something was attached.
pub fn boottime_to_wall(boottime_ns: u64) -> SystemTime {
    let now_boot = clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(|ts| Duration::from(ts).as_nanos() as u64)
        .unwrap_or(boottime_ns);
    SystemTime::now() - Duration::from_nanos(now_boot.saturating_sub(boottime_ns))
}

pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}
