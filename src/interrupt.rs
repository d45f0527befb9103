//! Ctrl-C as a flag that long-running commands (flows --follow, stats
//! --sample) check, so they end at a point of their choosing and exit 130.

use std::time::{Duration, Instant};

use anyhow::Result;
use nix::sys::signal::Signal;

use crate::kernel::signals;

pub fn install() -> Result<()> {
    catch(Signal::SIGINT)
}

/// Ctrl-C and SIGTERM alike, for a service that a supervisor stops.
pub fn install_with_sigterm() -> Result<()> {
    catch(Signal::SIGINT)?;
    catch(Signal::SIGTERM)
}

fn catch(signal: Signal) -> Result<()> {
    signals::catch(signal)
        .map_err(|errno| anyhow::anyhow!("installing the {signal} handler: {errno}"))
}

pub fn happened() -> bool {
    signals::caught()
}

/// Sleeps until `deadline` or Ctrl-C, whichever comes first; true on Ctrl-C.
pub fn sleep_until(deadline: Instant) -> bool {
    const SLICE: Duration = Duration::from_millis(50);
    loop {
        if happened() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep((deadline - now).min(SLICE));
    }
}
