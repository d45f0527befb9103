//! meshbpf's own eBPF programs, one module each: skeleton, attach logic and
//! map readers.

pub mod loaded;
pub mod lsm_monitor;
pub mod maps;
pub mod syscall_latency;
pub mod tc_classifier;
pub mod xdp_counter;
pub mod xdp_mesh_filter;

/// meshbpf's XDP programs; an interface runs at most one of them.
pub const XDP_PROGRAMS: [&str; 2] = [xdp_counter::PROGRAM, xdp_mesh_filter::PROGRAM];
