//! meshbpf's own eBPF programs, one module each: skeleton, attach logic and
//! map readers.

use std::ffi::CString;
use std::mem;
use std::path::Path;

use anyhow::Result;

use crate::kernel::btf;

pub mod loaded;
pub mod lsm_monitor;
pub mod maps;
pub mod syscall_latency;
pub mod tc_classifier;
pub mod xdp_counter;
pub mod xdp_mesh_filter;

/// meshbpf's XDP programs; an interface runs at most one of them.
pub const XDP_PROGRAMS: [&str; 2] = [xdp_counter::PROGRAM, xdp_mesh_filter::PROGRAM];

/// Open options shared by every skeleton. The returned CString backs the
/// options' BTF path and must outlive the open call.
pub fn open_opts(
    btf_file: Option<&Path>,
) -> Result<(libbpf_sys::bpf_object_open_opts, Option<CString>)> {
    let custom = btf::custom_path(btf_file)?;
    // SAFETY: plain data; sz tells libbpf which fields we know.
    let mut opts: libbpf_sys::bpf_object_open_opts = unsafe { mem::zeroed() };
    opts.sz = mem::size_of_val(&opts) as _;
    if let Some(path) = &custom {
        opts.btf_custom_path = path.as_ptr();
    }
    Ok((opts, custom))
}
