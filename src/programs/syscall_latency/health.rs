//! syscall_latency's health check: attached, and with which method (what
//! an interrupted attach or detach left is health::host's).

use anyhow::Result;

use super::PROGRAM;
use crate::health::Check;
use crate::kernel::pins::AttachmentDir;

/// The host-wide syscall_latency attachment, and the method it runs with.
pub fn checks(dir: &AttachmentDir, _max_drop_percent: u8) -> Result<Vec<Check>> {
    // What an interrupted attach left is health::host's to name.
    if !dir.is_committed() {
        return Ok(Vec::new());
    }
    Ok(vec![check(dir)])
}

fn check(dir: &AttachmentDir) -> Check {
    let hint = "meshbpf detach --latency removes it; meshbpf attach --latency attaches again";
    match super::inspect(dir) {
        Ok(a) => Check::ok(
            PROGRAM,
            format!(
                "attached with {} (links {} and {}), since {}",
                a.method.as_str(),
                a.link_ids[0],
                a.link_ids[1],
                a.attached_at
            ),
        ),
        Err(err) => Check::fail(
            PROGRAM,
            format!("cannot inspect {}: {err:#}", dir.path.display()),
            hint,
        ),
    }
}
