//! Waiting for a libbpf ring buffer to hold records without consuming them:
//! the ring buffer's own poll consumes everything that arrives while it runs.

use std::io;
use std::time::Duration;

use libbpf_rs::RingBuffer;

use crate::kernel::ffi;

/// Waits up to `timeout` for records in `ring`; a signal ends the wait
/// early, which is no error.
pub fn wait(ring: &RingBuffer<'_>, timeout: Duration) -> io::Result<()> {
    let mut fd = libc::pollfd {
        fd: ring.epoll_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one pollfd, on the epoll fd that `ring` owns and keeps open
    // while it is borrowed.
    match ffi::check_os(unsafe { libc::poll(&mut fd, 1, timeout_ms) }) {
        Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(()),
        ret => ret.map(drop),
    }
}
