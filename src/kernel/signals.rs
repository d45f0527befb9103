//! Signals caught as a flag: the one handler meshbpf installs only stores
//! to an atomic, which is all a handler can do at any point of the program.

use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

static CAUGHT: AtomicBool = AtomicBool::new(false);

extern "C" fn set_caught(_: libc::c_int) {
    CAUGHT.store(true, Ordering::SeqCst);
}

/// From now on `signal` sets the flag that [`caught`] reads, instead of
/// doing what it did; interrupted system calls restart.
pub fn catch(signal: Signal) -> nix::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(set_caught),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler is async-signal-safe: it only stores to an atomic.
    unsafe { sigaction(signal, &action) }.map(drop)
}

/// Whether a caught signal has arrived.
pub fn caught() -> bool {
    CAUGHT.load(Ordering::SeqCst)
}
