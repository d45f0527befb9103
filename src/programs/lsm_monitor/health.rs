//! lsm_monitor's health check: its mode and method, and whether its ring
//! buffer lost events.

use anyhow::Result;

use super::PROGRAM;
use crate::health::Check;
use crate::kernel::pins::AttachmentDir;

/// The host-wide lsm_monitor: its mode and method, and whether the ring
/// buffer lost events.
pub fn checks(dir: &AttachmentDir, _max_drop_percent: u8) -> Result<Vec<Check>> {
    // What an interrupted attach left is health::host's to name.
    if !dir.is_committed() {
        return Ok(Vec::new());
    }
    Ok(vec![check(dir)])
}

fn check(dir: &AttachmentDir) -> Check {
    let hint = "meshbpf detach --lsm removes it; meshbpf attach --lsm attaches again";
    let stats = match super::stats(dir) {
        Ok(stats) => stats,
        Err(err) => {
            return Check::fail(
                PROGRAM,
                format!("cannot inspect {}: {err:#}", dir.path.display()),
                hint,
            )
        }
    };
    let a = &stats.attachment;
    let detail = format!(
        "{} mode with {} (links {}), since {}",
        a.mode.as_str(),
        a.method.as_str(),
        a.link_ids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
        a.attached_at
    );
    if stats.lost_total > 0 {
        return Check::warn(
            PROGRAM,
            format!(
                "{detail}; {} events were lost: the ring buffer was full",
                stats.lost_total
            ),
            "read events more often (meshbpf events --follow keeps up), or watch fewer paths",
        );
    }
    Check::ok(PROGRAM, detail)
}
