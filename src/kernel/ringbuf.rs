//! Reading a pinned ring buffer in bounded batches of typed records, and
//! waiting for it to hold records without consuming them: the ring
//! buffer's own poll consumes everything that arrives while it runs.

use std::cell::RefCell;
use std::io;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapHandle, RingBuffer, RingBufferBuilder};

use crate::kernel::ffi;
use crate::kernel::pod::zeroed;

/// A ring buffer whose records are `T`s. Fields drop in order: libbpf's
/// ring buffer uses the map's fd until it is freed.
pub struct TypedRing<T> {
    ring: RingBuffer<'static>,
    pending: Rc<RefCell<Vec<T>>>,
    map: MapHandle,
}

impl<T: plain::Plain + 'static> TypedRing<T> {
    /// Reads the ring buffer pinned at `pin`.
    pub fn open(pin: &Path) -> Result<TypedRing<T>> {
        let map = MapHandle::from_pinned_path(pin)
            .with_context(|| format!("opening {}", pin.display()))?;
        let pending: Rc<RefCell<Vec<T>>> = Rc::default();
        let sink = Rc::clone(&pending);
        let mut builder = RingBufferBuilder::new();
        builder
            .add(&map, move |bytes: &[u8]| {
                let mut record: T = zeroed();
                match plain::copy_from_bytes(&mut record, bytes) {
                    Ok(()) => {
                        sink.borrow_mut().push(record);
                        0
                    }
                    Err(_) => -libc::EBADMSG,
                }
            })
            .with_context(|| format!("reading {}", pin.display()))?;
        let ring = builder
            .build()
            .with_context(|| format!("mapping {}", pin.display()))?;
        Ok(TypedRing { ring, pending, map })
    }

    /// Takes up to `max` records that are in the buffer now, without
    /// waiting; an empty batch means the buffer is drained.
    pub fn take(&mut self, max: usize) -> io::Result<Vec<T>> {
        let consumed = self.ring.consume_raw_n(max);
        if consumed == -libc::EBADMSG {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a record of an unexpected size",
            ));
        }
        if consumed < 0 {
            return Err(io::Error::from_raw_os_error(-consumed));
        }
        Ok(std::mem::take(&mut *self.pending.borrow_mut()))
    }

    /// Drops every record the buffer holds.
    pub fn discard_all(&mut self) -> io::Result<()> {
        while !self.take(usize::MAX)?.is_empty() {}
        Ok(())
    }

    /// Waits up to `timeout` for records; a signal ends the wait early,
    /// which is no error.
    pub fn wait(&self, timeout: Duration) -> io::Result<()> {
        wait(&self.ring, timeout)
    }

    /// Whether `pin` is this ring buffer's pin still: false once it is
    /// gone or pins another map (a detach, maybe a new attach).
    pub fn pinned_at(&self, pin: &Path) -> Result<bool> {
        let id = |map: &MapHandle| map.info().map(|info| info.info.id);
        match MapHandle::from_pinned_path(pin) {
            Ok(pinned) => Ok(id(&pinned)? == id(&self.map)?),
            Err(err) if err.kind() == libbpf_rs::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(err).with_context(|| format!("opening {}", pin.display())),
        }
    }
}

/// Waits up to `timeout` for records in `ring`; a signal ends the wait
/// early, which is no error.
fn wait(ring: &RingBuffer<'_>, timeout: Duration) -> io::Result<()> {
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
