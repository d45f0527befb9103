//! The two return conventions of the C calls meshbpf makes, and libbpf's
//! option structs, once: libbpf's low-level calls return -errno, libc and
//! raw syscalls -1 with errno set, and an options struct is all zeroes but
//! for `sz`, which tells libbpf which fields this build knows.

use std::io;
use std::mem;
use std::os::fd::{FromRawFd, OwnedFd};

/// A libbpf return value: negative is -errno.
pub fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::from_raw_os_error(-ret))
    } else {
        Ok(ret)
    }
}

/// A libc or syscall return value: negative means errno says why.
pub fn check_os<T: PartialOrd + From<i8>>(ret: T) -> io::Result<T> {
    if ret < T::from(0) {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The fd a libbpf call created, or its -errno.
///
/// # Safety
/// `ret` is the return value of a libbpf call that creates an fd: when not
/// negative, a fresh fd that nothing else owns or closes.
pub unsafe fn fd(ret: libc::c_int) -> io::Result<OwnedFd> {
    let fd = check(ret)?;
    // SAFETY: a fresh fd that we own from here on (the caller's promise).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The fd a libc call or syscall created, or its errno.
///
/// # Safety
/// As for [`fd`], for a call that returns -1 and sets errno on failure.
pub unsafe fn os_fd(ret: libc::c_long) -> io::Result<OwnedFd> {
    let fd = check_os(ret)?;
    let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: a fresh fd that we own from here on (the caller's promise).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A libbpf `*_opts` struct: its `Default` is all zeroes, which libbpf
/// reads as "not set", and `sz` must say how large this build's struct is.
pub trait Opts: Default {
    fn set_size(&mut self);
}

macro_rules! sized_opts {
    ($($opts:ident),+ $(,)?) => {
        $(impl Opts for libbpf_sys::$opts {
            fn set_size(&mut self) {
                self.sz = mem::size_of::<Self>() as _;
            }
        })+
    };
}

sized_opts!(
    bpf_link_create_opts,
    bpf_link_update_opts,
    bpf_map_batch_opts,
    bpf_map_create_opts,
    bpf_object_open_opts,
    bpf_prog_load_opts,
    bpf_test_run_opts,
    bpf_xdp_query_opts,
);

/// Options with nothing set.
pub fn opts<T: Opts>() -> T {
    let mut opts = T::default();
    opts.set_size();
    opts
}
